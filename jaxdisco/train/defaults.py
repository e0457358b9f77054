"""Default wav2vec 2.0 pretraining config (BASE, LibriSpeech 960 h); files in configs/ start
from it and override what differs. Every field is documented here, once."""

from __future__ import annotations

import dataclasses

import ml_collections

from jaxdisco.models.config import ModelConfig
from jaxdisco.parallel.rules import DEFAULT_RULES


def wav2vec2_defaults() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.method = "wav2vec2"
  c.model = ml_collections.ConfigDict(dataclasses.asdict(ModelConfig()))

  c.objective = ml_collections.ConfigDict()
  c.objective.mask_prob = 0.65  # Fraction of frames that start a span (spans overlap: ~49% masked).
  c.objective.mask_length = 10  # Span length in frames.
  c.objective.min_masks = 2
  c.objective.require_same_masks = True  # Trim masks to the batch's smallest count.
  c.objective.num_negatives = 100  # Distractors per masked frame, from the same utterance.
  c.objective.cross_sample_negatives = 0  # Extra distractors from the whole batch.
  c.objective.logit_temperature = 0.1
  c.objective.diversity_weight = 0.1
  c.objective.feature_penalty_weight = 10.0
  c.objective.gumbel_temperature = (2.0, 0.5, 0.999995)  # (start, end, decay per update).

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


def demo_backbone(m: ml_collections.ConfigDict) -> None:
  """The CPU-demo backbone shared by configs/demo.py and configs/hubert_demo.py: a 64-channel
  layer-norm conv encoder with bias and a pre-LN Transformer 128 wide (LARGE-style norms: BASE's
  group-norm encoder trains too slowly at this size). The configs set depth and heads."""
  m.conv_layers = "[(64, 10, 5)] + [(64, 3, 2)] * 4 + [(64, 2, 2)] * 2"
  m.extractor_mode = "layer_norm"
  m.conv_bias = True
  m.layer_norm_first = True
  m.embed_dim, m.num_heads, m.ffn_dim = 128, 4, 512
  m.pos_conv_kernel, m.pos_conv_groups = 32, 8
  m.dropout = m.attention_dropout = 0.05
  m.dropout_input = m.dropout_features = 0.05


def demo_data(data: ml_collections.ConfigDict) -> None:
  """The CPU demos' data block (configs/demo.py, hubert_demo.py, the vq-wav2vec demos): the
  shipped corpus, 1 s crops of normalized audio, batch 8, every file's header read at start."""
  from jaxdisco.assets import demo_corpus_dir  # pylint: disable=g-import-not-at-top

  corpus = demo_corpus_dir()
  data.train_manifest = str(corpus / "train.tsv")
  data.valid_manifest = str(corpus / "valid.tsv")
  data.crop_samples = data.min_samples = 16_000  # 1 s.
  data.normalize = True
  data.batch_size = 8
  data.verify_files = True
