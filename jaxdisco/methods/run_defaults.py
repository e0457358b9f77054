"""The blocks of a run config every method shares: data, optim, train, parallel (wav2vec 2.0
BASE values, LibriSpeech 960 h). A method's `defaults()` starts from `run_defaults()` and adds
its `model` and `objective` blocks (and changes what its recipe changes). Every shared field is
documented here, once; method fields in the method's module."""

from __future__ import annotations

import ml_collections

from jaxdisco.parallel.rules import DEFAULT_RULES


def run_defaults(method: str) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.method = method  # A `jaxdisco.methods` name: selects model, loss, checks and exports.
  c.data = ml_collections.ConfigDict()
  c.data.train_manifest = ""  # fairseq-style .tsv (first line: root dir) or a prepare-data dir.
  c.data.valid_manifest = ""  # Optional; evaluated every train.eval_every steps.
  c.data.sample_rate = 16000
  c.data.crop_samples = 250_000  # Fixed crop: shorter utterances are padded, longer cropped.
  c.data.min_samples = 32_000  # Shorter utterances are skipped.
  c.data.normalize = False  # Per-utterance zero mean / unit variance (LARGE models: True).
  c.data.batch_size = 352  # Global batch: ~1.4M samples x 64 GPUs of the reference / 250k crop.
  c.data.seed = 0
  c.data.verify_files = False  # Read every file's header at start (fine for small corpora).
  c.data.buckets = 0  # >0: that many crop lengths up to crop_samples (one jit program each).
  c.data.masks_in_pipeline = False  # Draw masks/negatives on the host (the reference's TPU way).

  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 5e-4
  c.optim.end_lr = 0.0
  c.optim.warmup_steps = 32_000
  c.optim.decay_power = 1.0
  c.optim.b1 = 0.9
  c.optim.b2 = 0.98
  c.optim.eps = 1e-6
  c.optim.weight_decay = 0.01
  c.optim.clip_norm = 0.0  # 0 disables clipping (the reference's wav2vec 2.0 default).

  c.train = ml_collections.ConfigDict()
  c.train.num_steps = 400_000
  c.train.seed = 0
  c.train.log_every = 100
  c.train.eval_every = 10_000
  c.train.checkpoint_every = 5_000
  c.train.keep_checkpoints = 3
  c.train.max_consecutive_nonfinite = 20  # Stop after this many skipped updates in a row.
  # Also save when this many seconds passed since the last save (0: off). Checked at log steps,
  # where every process already waits for the metrics, so all of them decide alike.
  c.train.checkpoint_every_seconds = 0.0
  c.train.grad_accum_steps = 1  # Micro-batches per update (data.batch_size is the whole update).
  # Rematerialisation of each Transformer layer in the backward pass: "none", "full" (save
  # nothing, recompute everything) or "dots_saveable" (keep matmul outputs).
  c.train.remat = "none"
  # Continued pretraining: start from these weights (a jaxdisco workdir or checkpoint, a Hugging
  # Face directory, a fairseq .pt) with a fresh optimizer at step 0; "" starts from scratch. The
  # source must match the run's method and model.*; HuBERT label embeddings of another K are
  # re-initialised. A workdir with a checkpoint resumes from it instead (train/init_from.py).
  c.train.init_from = ""
  # On TPU/GPU, compile each step program before it first runs and stop with `jaxdisco plan`'s
  # advice (batch, remat, fsdp) if it needs more device memory than the chip gives.
  c.train.check_hbm = True

  # Device mesh (see jaxdisco/parallel/mesh.py): sizes of the (data, fsdp, tensor) axes within a
  # slice, one of them -1 = fill; dcn_* split the same axes across slices of a multi-slice job.
  c.parallel = ml_collections.ConfigDict()
  c.parallel.data = -1
  c.parallel.fsdp = 1
  c.parallel.tensor = 1
  c.parallel.dcn_data = -1
  c.parallel.dcn_fsdp = 1
  c.parallel.dcn_tensor = 1
  # Logical axis name -> mesh axis (or axes, or None): the one table models are mapped by.
  c.parallel.rules = DEFAULT_RULES
  # With fsdp > 1, stop at start-up if more than this share of parameter bytes is replicated.
  c.parallel.max_replicated_fraction = 0.1
  # Data shards the input stream is cut into (0: one per process). A multiple of the process
  # count; fixing it keeps the data order the same for any number of hosts.
  c.data.input_shards = 0
  return c


