r"""Tiny wav2vec 2.0 on the shipped demo corpus: the README's first command, ~5 min on 2 CPUs.

  jaxdisco pretrain --config configs/demo.py --workdir demo-run

The full method (conv encoder, Transformer, gumbel product quantizer, contrastive + diversity
loss with the reference's masking and negatives) at a size two CPU cores train in minutes.
What differs from the published recipes, and why:
  * LARGE-style normalisation (layer norm in every conv layer, pre-LN Transformer, normalised
    input). With BASE's group-norm encoder a model this small sits on the contrastive
    plateau (loss = ln(1 + negatives)) for thousands of steps, as the reference does at the
    start of every run; large batches make that cheap, a 5-minute demo cannot wait.
  * A 2 x 16 codebook and 20 negatives for 6 minutes of audio (2 x 320 and 100 in BASE).
  * lr 1e-3 with 100 warm-up steps, 1 s crops, batch 8, 2000 steps.
For a 30-second smoke run add `--config.train.num_steps=50`.
"""

from jaxdisco.methods.demo_settings import demo_backbone, demo_data
from jaxdisco.methods.wav2vec2 import wav2vec2_defaults


def get_config():
  c = wav2vec2_defaults()
  m = c.model
  demo_backbone(m)
  m.num_layers = 2
  m.final_dim = 128
  m.latent_vars, m.latent_groups = 16, 2
  m.layerdrop = 0.0
  c.objective.num_negatives = 20
  c.objective.gumbel_temperature = (2.0, 0.5, 0.999)  # Reaches 0.5 within the run.

  demo_data(c.data)

  c.optim.lr = 1e-3
  c.optim.warmup_steps = 100

  c.train.num_steps = 2000
  c.train.log_every = 50
  c.train.eval_every = 500
  c.train.checkpoint_every = 500
  c.train.keep_checkpoints = 2
  return c
