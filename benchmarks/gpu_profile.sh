#!/usr/bin/env bash
# Where the BASE train step's GPU time goes, in one go (see benchmarks/step_profile.py):
#   bash benchmarks/gpu_profile.sh [OUT_DIR] [STEP_PROFILE_ARGS...]
# 1. wav2vec 2.0 BASE in bf16 at batch 8: step time, device busy time, time by model part
#    (forward / backward), the top ops and kernels; the trace and HLO kept for --reread;
# 2. the grouped conv's tests on the GPU (its FFT path is the GPU's).
set -u
out=${1:-benchmarks/gpu-profile}
shift || true
mkdir -p "$out"
export PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader 2>&1 | tee -a "$out/profile.txt"
timeout "${PROFILE_TIMEOUT:-200}" $py -m benchmarks step_profile --size base --out "$out" --raw "$@" \
  2>&1 | tee -a "$out/profile.txt"
timeout 60 $py -m pytest -p no:cacheprovider -n 0 -q tests/test_grouped_conv.py 2>&1 | tail -3 \
  | tee -a "$out/profile.txt"
