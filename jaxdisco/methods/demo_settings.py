"""Settings the CPU demo configs share (configs/demo.py, hubert_demo.py, the vq-wav2vec and
WavLM demos): the demo backbone and the shipped corpus."""

from __future__ import annotations

import ml_collections


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


def pseudo_label_loop_demo(c: ml_collections.ConfigDict) -> None:
  """The demo-size HuBERT loop shared by configs/hubert_demo.py and configs/wavlm_demo.py (their
  docstrings say what differs from the recipes and why): the demo backbone at depth 3, the
  corpus's extended splits, both loss weights, K = 50 everywhere, 3000 + 4500 steps."""
  from jaxdisco.assets import demo_corpus_dir  # pylint: disable=g-import-not-at-top

  m = c.model
  demo_backbone(m)
  m.num_layers = 3
  m.final_dim = 64
  m.feature_grad_mult = 1.0
  m.layerdrop = 0.0

  corpus = demo_corpus_dir()
  demo_data(c.data)
  # The corpus's extended splits (512 + 64 utterances, 25 min): on the 6.4 min of `train` the
  # second iteration fits its training utterances and ties the first.
  c.data.train_manifest = str(corpus / "train_ext.tsv")
  c.data.valid_manifest = str(corpus / "valid_ext.tsv")

  c.objective.unmasked_weight = 1.0
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 50

  c.train.log_every = 50
  c.train.eval_every = 500
  c.train.checkpoint_every = 250
  c.train.keep_checkpoints = 1

  loop = c.loop
  loop.mfcc_k = loop.layer_k = 50
  loop.layer = 2
  loop.steps = (3000, 4500)
  loop.kmeans_fraction = 1.0
  loop.kmeans_n_init = 2
  loop.kmeans_max_iter = 20
  loop.train_alignments = str(corpus / "train_ext.align.jsonl")
  loop.valid_alignments = str(corpus / "valid_ext.align.jsonl")
  c.train.num_steps = loop.steps[0]
  c.labels.num_classes = loop.mfcc_k
