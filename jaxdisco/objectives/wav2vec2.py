"""The wav2vec 2.0 pretraining task: one function from (params, batch, key) to loss terms."""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from jaxdisco.models.config import ModelConfig, conv_output_length, valid_frame_lengths
from jaxdisco.models.wav2vec2 import Wav2Vec2ForPretraining
from jaxdisco.objectives.contrastive import contrastive_logits, wav2vec2_loss
from jaxdisco.objectives.masking import mask_spans
from jaxdisco.objectives.negatives import sample_cross_negatives, sample_negatives
from jaxdisco.quantizers.gumbel import gumbel_temperature

Array = jax.Array


def draw_masks_and_negatives(
    key: Array, padding_mask: Array, conv_spec, objective
) -> dict[str, Array]:
  """Span mask [batch, frames] and negative indices [batch, frames, K], fixed shapes.

  padding_mask: [batch, samples] bool, True = padding; conv_spec: the conv encoder's
  ((channels, kernel, stride), ...); objective: the config's objective block or a
  `data.span_masks.MaskingSpec` (mask_prob, mask_length, min_masks, require_same_masks,
  num_negatives (0: masks only), cross_sample_negatives). The one implementation of the draw:
  the loss calls it inside the jitted step (default), the input pipeline on the host (the
  reference's TPU recipe); the loss accepts the result as inputs either way.
  """
  mask_key, neg_key, cross_key = jax.random.split(key, 3)
  mask = mask_spans(
      mask_key,
      valid_frame_lengths(padding_mask, conv_spec),
      int(conv_output_length(padding_mask.shape[-1], conv_spec)),
      mask_prob=objective.mask_prob,
      mask_length=objective.mask_length,
      min_masks=objective.min_masks,
      require_same_masks=objective.require_same_masks,
  )
  out = {"mask": mask}
  if objective.num_negatives:
    out["negatives"] = sample_negatives(neg_key, mask, objective.num_negatives)
  if objective.cross_sample_negatives:
    out["cross_negatives"] = sample_cross_negatives(
        cross_key, mask, objective.cross_sample_negatives
    )
  return out


def pretraining_loss(
    params: Any,
    batch: Mapping[str, Array],
    key: Array,
    step: Array,
    *,
    model_config: ModelConfig,
    objective,
    train: bool,
):
  """Returns (loss, metrics). `batch` holds waveform, padding_mask and optionally mask /
  negatives (else drawn from `key`). In eval (train=False) codes are argmax and no dropout."""
  model = Wav2Vec2ForPretraining(model_config)
  draw_key, gumbel_key, dropout_key = jax.random.split(key, 3)
  if "mask" not in batch:
    batch = {
        **batch,
        **draw_masks_and_negatives(
            draw_key, batch["padding_mask"], model_config.geometry_spec, objective
        ),
    }
  start, end, decay = objective.gumbel_temperature
  temperature = gumbel_temperature(step, start, end, decay)
  out = model.apply(
      params,
      batch["waveform"],
      batch["padding_mask"],
      batch["mask"],
      temperature=temperature,
      deterministic=not train,
      gumbel_key=gumbel_key if train else None,
      rngs={"dropout": dropout_key},
  )
  logits = contrastive_logits(
      out.context,
      out.targets,
      out.codes,
      batch["negatives"],
      objective.logit_temperature,
      batch.get("cross_negatives"),
  )
  weights = batch["mask"] & out.frame_valid
  terms = wav2vec2_loss(
      logits,
      weights,
      out.prob_perplexity,
      model_config.latent_groups * model_config.latent_vars,
      out.feature_penalty,
      diversity_weight=objective.diversity_weight,
      feature_penalty_weight=objective.feature_penalty_weight,
  )
  metrics = {
      "loss": terms.loss,
      "contrastive_loss": terms.contrastive_loss / jnp.maximum(terms.num_masked, 1.0),
      "diversity_loss": terms.diversity_loss,
      "feature_penalty": terms.feature_penalty,
      "accuracy": terms.accuracy,
      "code_perplexity": out.code_perplexity,
      "prob_perplexity": out.prob_perplexity,
      "gumbel_temperature": temperature,
      "masked_frames": terms.num_masked,
  }
  return terms.loss, metrics
