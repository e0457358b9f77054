r"""Tiny wav2vec 2.0 on the shipped demo corpus: the README's first command, ~5 min on 2 CPUs.

  jaxdisco pretrain --config configs/demo.py --workdir demo-run

Same architecture and objective as BASE (group-norm conv encoder, post-LN Transformer, gumbel
product quantizer, contrastive + diversity + feature penalty) at a size a laptop trains in
minutes. For a 30-second smoke run add `--config.train.num_steps=20`.
"""

from jaxdisco.assets import demo_corpus_dir
from jaxdisco.train.defaults import wav2vec2_defaults


def get_config():
  c = wav2vec2_defaults()
  m = c.model
  m.conv_layers = "[(128, 10, 5)] + [(128, 3, 2)] * 4 + [(128, 2, 2)] * 2"
  m.embed_dim, m.num_layers, m.num_heads, m.ffn_dim = 256, 4, 4, 1024
  m.pos_conv_kernel, m.pos_conv_groups = 32, 16
  m.final_dim = 128
  m.latent_vars, m.latent_groups = 64, 2
  m.dropout = m.attention_dropout = 0.05
  m.dropout_input = m.dropout_features = 0.05
  m.layerdrop = 0.0
  c.objective.num_negatives = 50
  c.objective.gumbel_temperature = (2.0, 0.5, 0.995)  # Anneals over the short run.

  corpus = demo_corpus_dir()
  c.data.train_manifest = str(corpus / "train.tsv")
  c.data.valid_manifest = str(corpus / "valid.tsv")
  c.data.crop_samples = 32_000  # 2 s.
  c.data.min_samples = 16_000
  c.data.batch_size = 8
  c.data.verify_files = True

  c.optim.lr = 1e-3
  c.optim.warmup_steps = 60
  c.optim.clip_norm = 5.0

  c.train.num_steps = 600
  c.train.log_every = 20
  c.train.eval_every = 150
  c.train.checkpoint_every = 150
  c.train.keep_checkpoints = 2
  return c
