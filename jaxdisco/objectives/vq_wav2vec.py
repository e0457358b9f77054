"""The vq-wav2vec pretraining task: (params, batch, key, step) -> (loss, metrics).

loss = (summed future-prediction BCE + quantizer_weight * quantizer term * n) / n, n = scored
(frame, step) pairs (the reference's criterion adds extra losses as weight * term * sample size).
The quantizer term is the k-means loss (codebook + 0.25 * commitment; the recipe's
`--loss-weights [1]`) or, for gumbel, the unnormalised diversity penalty G*V - perplexity,
which the published gumbel recipe does not use (no `--loss-weights`: weight 0).
`objective.infonce` switches the per-pair binary loss to the reference's InfoNCE option.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from jaxdisco.models.wav2vec1 import VqWav2Vec
from jaxdisco.objectives.future_prediction import (
    binary_contrastive_loss,
    future_logits,
    target_weights,
)
from jaxdisco.objectives.negatives import sample_negatives_in_prefix
from jaxdisco.quantizers.gumbel import gumbel_temperature

Array = jax.Array


def pretraining_loss(
    params: Any,
    batch: Mapping[str, Array],
    key: Array,
    step: Array,
    *,
    model_config,
    objective,
    train: bool,
):
  """`batch`: waveform [batch, samples], padding_mask [batch, samples] (True = pad). In eval
  (train=False) gumbel codes are the argmax. Metrics are scalars; `masked_frames` (the trainer's
  weight for averaging micro-batches and eval batches) counts the scored (frame, step) pairs."""
  cfg = model_config
  model = VqWav2Vec(cfg, objective.kmeans_gamma)
  neg_key, gumbel_key = jax.random.split(key)
  start, end, decay = objective.gumbel_temperature
  temperature = gumbel_temperature(step, start, end, decay)
  out = model.apply(
      params,
      batch["waveform"],
      batch["padding_mask"],
      temperature=temperature,
      gumbel_key=gumbel_key if train else None,
  )
  # Distractors: any other valid frame of the utterance (the reference: any other frame).
  frames = out.frame_valid.shape[1]
  lengths = out.frame_valid.sum(-1).astype(jnp.int32)
  negatives = sample_negatives_in_prefix(neg_key, lengths, frames, objective.num_negatives)
  offset = cfg.prediction_offset
  logits, _ = future_logits(out.predictions, out.targets, negatives, offset)
  weights = target_weights(out.frame_valid, cfg.prediction_steps, offset)
  terms = binary_contrastive_loss(logits, weights, objective.infonce)
  n = jnp.maximum(terms.num_pairs, 1.0)
  loss = (terms.bce_sum + objective.quantizer_weight * out.quantizer_loss * n) / n
  metrics = {
      "loss": loss,
      "prediction_loss": terms.loss,
      "quantizer_loss": out.quantizer_loss,
      "accuracy": terms.accuracy,
      "distinct_accuracy": terms.distinct_accuracy,
      "code_perplexity": out.code_perplexity,
      "prob_perplexity": out.prob_perplexity,
      "dead_code_fraction": out.dead_code_fraction,
      "masked_frames": terms.num_pairs,
  }
  if cfg.vq_type == "gumbel":
    metrics["gumbel_temperature"] = temperature
  return loss, metrics
