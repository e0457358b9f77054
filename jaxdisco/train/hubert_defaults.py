"""Default HuBERT pretraining config (BASE, iteration 1 on MFCC k-means labels)."""

from __future__ import annotations

import ml_collections

from jaxdisco.train.defaults import wav2vec2_defaults


def hubert_defaults() -> ml_collections.ConfigDict:
  c = wav2vec2_defaults()
  c.method = "hubert"
  # HuBERT has no quantizer: drop wav2vec 2.0's heads and loss terms from the config.
  for field in ("latent_vars", "latent_groups", "latent_dim", "quantizer_init_std"):
    if field in c.model:
      del c.model[field]
  for field in (
      "num_negatives",
      "cross_sample_negatives",
      "diversity_weight",
      "gumbel_temperature",
  ):
    del c.objective[field]
  c.objective.mask_prob = 0.8
  c.objective.label_rate = 100.0  # Labels per second: 100 for MFCC targets, 50 for model units.
  c.objective.masked_weight = 1.0  # Loss weight of masked frames...
  c.objective.unmasked_weight = 0.0  # ...and of unmasked ones (the reference: 0).
  c.objective.untie_final_proj = True

  c.labels = ml_collections.ConfigDict()
  c.labels.train = ""  # .km file, one line per train manifest entry (or labels in prepared shards).
  c.labels.valid = ""
  c.labels.num_classes = 100  # K of the k-means that wrote the labels.

  c.data.crop_samples = 250_000
  c.data.batch_size = 176  # ~1.4M samples x 32 GPUs of the reference / 250k crop.
  c.optim.clip_norm = 10.0
  c.train.num_steps = 250_000  # Iteration 1; iteration 2 runs 400k.
  return c
