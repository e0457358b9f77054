"""HuBERT objective: masked prediction of frame labels with cosine logits.

The reference scores each frame against [its label's embedding; every label embedding with the
true one set to -inf] and takes cross-entropy with target 0. That is exactly cross-entropy of
cos(proj, embedding_c) / temperature over the C classes with the true class as target, which is
what is computed here (no [frames, 1 + C, dim] tensor of repeated embeddings).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def frame_labels(
    labels: Array, num_frames: int, label_rate: float, frame_rate: float = 50.0
) -> Array:
  """Labels at `label_rate` Hz [batch, label_frames] -> one label per model frame [batch, frames].

  Frame t takes label index floor(t * label_rate / frame_rate) (100 Hz MFCC labels: every
  second one; 50 Hz labels: one to one), the reference's alignment. Frames past the last label
  repeat it; callers check lengths beforehand (`check_label_length`).
  """
  ratio = label_rate / frame_rate
  index = np.minimum((np.arange(num_frames) * ratio).astype(np.int64), labels.shape[1] - 1)
  return labels[:, index]


def check_label_length(
    num_labels: int,
    num_frames: int,
    label_rate: float,
    frame_rate: float = 50.0,
    where: str = "labels",
) -> None:
  """Raises ValueError when labels and audio durations differ by more than one model frame."""
  expected = num_frames * label_rate / frame_rate
  slack = label_rate / frame_rate
  if abs(num_labels - expected) > slack + 1e-6:
    raise ValueError(
        f"{where}: {num_labels} labels at {label_rate:g} Hz but the audio gives {num_frames} "
        f"frames at {frame_rate:g} Hz (expected ~{expected:.0f} labels): audio and label "
        "duration differ; check label_rate and that the labels belong to this audio"
    )


def cosine_logits(projection: Array, embeddings: Array, temperature: float) -> Array:
  """cos(projection [..., dim], embeddings [classes, dim]) / temperature -> [..., classes]."""

  def unit(x):
    x = x.astype(jnp.float32)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-8)

  return jnp.einsum("...d,cd->...c", unit(projection), unit(embeddings)) / temperature


class HubertLossTerms(NamedTuple):
  loss: Array  # total / sample_size
  masked_loss: Array  # summed cross-entropy over masked frames (all label sets)
  unmasked_loss: Array
  feature_penalty: Array
  num_masked: Array
  masked_accuracy: Array
  unmasked_accuracy: Array
  sample_size: Array  # frames the loss is normalised by (see `hubert_loss`)


def hubert_loss(
    logits: Array,
    labels: Array,
    mask: Array,
    frame_valid: Array,
    feature_penalty: Array,
    *,
    masked_weight: float = 1.0,
    unmasked_weight: float = 0.0,
    feature_penalty_weight: float = 10.0,
) -> HubertLossTerms:
  """logits: [sets, batch, frames, classes]; labels: [sets, batch, frames] int.

  Sample size as the reference's criterion counts it: the masked (valid) frames if the masked
  weight is positive, plus the unmasked valid frames if the unmasked weight is positive (both
  for a config that weighs both); the feature penalty is added as weight * penalty * sample
  size, and the loss is the total divided by the sample size.
  """
  logits = logits.astype(jnp.float32)
  nll = jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, labels[..., None], -1)[..., 0]
  correct = jnp.argmax(logits, -1) == labels
  masked = (mask & frame_valid).astype(jnp.float32)
  unmasked = (~mask & frame_valid).astype(jnp.float32)
  masked_sum, unmasked_sum = jnp.sum(nll * masked), jnp.sum(nll * unmasked)
  n_masked = masked.sum()
  counted = (n_masked if masked_weight > 0 else 0.0) + (
      unmasked.sum() if unmasked_weight > 0 else 0.0
  )
  sample_size = jnp.maximum(counted, 1.0)
  total = (
      masked_weight * masked_sum
      + unmasked_weight * unmasked_sum
      + feature_penalty_weight * feature_penalty * sample_size
  )
  sets = logits.shape[0]
  return HubertLossTerms(
      total / sample_size,
      masked_sum,
      unmasked_sum,
      feature_penalty,
      n_masked,
      jnp.sum(correct * masked) / jnp.maximum(n_masked * sets, 1.0),
      jnp.sum(correct * unmasked) / jnp.maximum(unmasked.sum() * sets, 1.0),
      sample_size,
  )


def pretraining_loss(
    params, batch, key, step, *, model_config, objective, num_classes, train: bool
):
  """HuBERT task: (params, batch, key) -> (loss, metrics).

  `batch` holds waveform, padding_mask and `labels` int32 [batch, label_frames] at
  `objective.label_rate` Hz (-1 where there is no label), optionally `mask` (else drawn from
  `key` with the reference's span masking).
  """
  from jaxdisco.models.hubert import HubertForPretraining
  from jaxdisco.objectives.masking import batch_or_span_mask

  del step  # No schedule inside the HuBERT loss.
  model = HubertForPretraining(model_config, tuple(num_classes), objective.untie_final_proj)
  mask_key, dropout_key = jax.random.split(key)
  num_frames = model_config.num_frames(batch["waveform"].shape[-1])
  mask = batch_or_span_mask(mask_key, batch, model_config, objective)
  out = model.apply(
      params,
      batch["waveform"],
      batch["padding_mask"],
      mask,
      deterministic=not train,
      rngs={"dropout": dropout_key},
  )
  labels = frame_labels(batch["labels"], num_frames, objective.label_rate)
  has_label = labels >= 0
  logits = jnp.stack(
      [
          cosine_logits(p, e, objective.logit_temperature)
          for p, e in zip(out.projections, out.label_embeddings)
      ]
  )
  terms = hubert_loss(
      logits,
      jnp.maximum(labels, 0)[None],
      mask,
      out.frame_valid & has_label,
      out.feature_penalty,
      masked_weight=objective.masked_weight,
      unmasked_weight=objective.unmasked_weight,
      feature_penalty_weight=objective.feature_penalty_weight,
  )
  metrics = {
      "loss": terms.loss,
      "masked_loss": terms.masked_loss / jnp.maximum(terms.num_masked, 1.0),
      "feature_penalty": terms.feature_penalty,
      "accuracy": terms.masked_accuracy,
      "unmasked_accuracy": terms.unmasked_accuracy,
      # The trainer's weight for micro-batches and eval batches: the loss's sample size (the
      # masked frames, plus the unmasked ones when they are weighted too).
      "masked_frames": terms.sample_size,
  }
  return terms.loss, metrics
