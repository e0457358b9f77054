"""Default vq-wav2vec pretraining config (gumbel, LibriSpeech 960 h, the reference's recipe).

Data, parallelism and train-loop fields are wav2vec 2.0's (documented in `defaults.py`); the
model block is `VqWav2VecConfig` and the objective block is the one below.
"""

from __future__ import annotations

import ml_collections

from jaxdisco.models.vq_wav2vec_config import VqWav2VecConfig
from jaxdisco.train.defaults import wav2vec2_defaults


def vq_wav2vec_defaults() -> ml_collections.ConfigDict:
  c = wav2vec2_defaults()
  c.method = "vq_wav2vec"
  c.model = ml_collections.ConfigDict(VqWav2VecConfig().to_dict())

  c.objective = ml_collections.ConfigDict()
  c.objective.num_negatives = 10  # Distractors per target frame, from the same utterance.
  c.objective.gumbel_temperature = (2.0, 0.5, 0.999995)  # (start, end, decay per update).
  c.objective.kmeans_gamma = 0.25  # Commitment weight inside the k-means loss.
  # Weight of the quantizer term: k-means loss (recipe: 1) or gumbel diversity penalty
  # G*V - perplexity (recipe: none, 0).
  c.objective.quantizer_weight = 0.0

  c.data.crop_samples = 150_000  # --max-sample-size 150000.
  c.data.min_samples = 32_000
  c.data.batch_size = 32  # --max-tokens 300000 (two crops) x 16 GPUs.

  # fairseq's Adam defaults (the command sets no betas, eps or weight decay); lr 1e-5 after 1k
  # warm-up updates. The reference anneals it with a cosine schedule to 1e-6; jaxdisco's
  # schedule is polynomial, so it decays linearly to the same end value.
  c.optim.lr = 1e-5
  c.optim.end_lr = 1e-6
  c.optim.warmup_steps = 1_000
  c.optim.b1, c.optim.b2, c.optim.eps = 0.9, 0.999, 1e-8
  c.optim.weight_decay = 0.0
  c.optim.clip_norm = 0.0
  c.train.num_steps = 400_000
  return c
