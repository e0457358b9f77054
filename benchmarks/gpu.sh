#!/usr/bin/env bash
# The GPU checks and tables in one go, on a machine with a CUDA jax and PyTorch:
#   bash benchmarks/gpu.sh [OUT_DIR]
# 1. BASE train step: jaxdisco wav2vec 2.0 / HuBERT in bf16 vs transformers PyTorch under bf16
#    autocast, with the conv and attention ablations, against the measured bf16 matmul rate;
# 2. cuDNN attention == XLA attention (outputs and gradients, bf16) and tokenizer programs
#    free of cuDNN calls (tests/test_attention.py, whose GPU tests are skipped on CPU);
# 3. LARGE train step: jaxdisco wav2vec 2.0 vs transformers PyTorch (bf16 autocast).
# Each part has a time limit so that the ones before it always report.
set -u
out=${1:-benchmarks/gpu-out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
# jax and torch share the GPU in one process: jax takes half, not its default 75%.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.5}
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv 2>&1 | tee "$out/device.txt"
$py -c "import jax, flax, optax, torch, transformers; print('jax', jax.__version__, 'flax', \
flax.__version__, 'optax', optax.__version__, 'torch', torch.__version__, 'transformers', \
transformers.__version__, jax.devices())" 2>&1 | tee -a "$out/device.txt"
timeout 300 $py -m benchmarks train_step --size base --peers torch --ablations --rounds 3 \
  --steps 5 2>&1 | tee "$out/train_step_base.txt"
timeout 100 $py -m pytest -p no:cacheprovider -n 0 -q --tb=short tests/test_attention.py \
  > "$out/attention_tests.txt" 2>&1
tail -5 "$out/attention_tests.txt"
timeout "${LARGE_TIMEOUT:-120}" $py -m benchmarks train_step --size large --peers torch \
  --no-hubert --rounds 2 --steps 3 2>&1 | tee "$out/train_step_large.txt"
