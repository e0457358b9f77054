"""Span masking with static shapes: the reference's `compute_mask_indices`, jit-friendly.

Every quantity that is a Python loop or a variable-length array in the reference becomes a
fixed-shape computation over all frames: choosing span starts without replacement is a top-k
over random priorities, spans are a sliding-window OR over the start indicators, and trimming
to a common mask count (`require_same_masks`) is a second top-k among masked frames.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def _rank_of(priorities: Array) -> Array:
  """Rank (0 = highest priority) of every position along the last axis."""
  order = jnp.argsort(-priorities, axis=-1)
  return jnp.argsort(order, axis=-1)


def mask_spans(
    key: Array,
    frame_lengths: Array,
    num_frames: int,
    *,
    mask_prob: float,
    mask_length: int,
    min_masks: int = 2,
    require_same_masks: bool = True,
) -> Array:
  """Draws span masks.

  Per utterance of valid length `sz` (frames): num_spans = max(min_masks,
  int(mask_prob * sz / mask_length + u)), u ~ U[0, 1); span starts drawn uniformly without
  replacement from [0, sz - mask_length) (shrunk as the reference does when the utterance is
  too short); spans may overlap and are clipped at `sz`. With `require_same_masks`, every
  utterance keeps a random subset of its masked frames of the batch's smallest size, so the
  masked frames form a dense [batch, M] set as in the reference.

  frame_lengths: [batch] int valid frames; returns [batch, num_frames] bool.
  """
  batch = frame_lengths.shape[0]
  count_key, start_key, trim_key = jax.random.split(key, 3)
  sz = frame_lengths.astype(jnp.int32)
  u = jax.random.uniform(count_key, (batch,))
  num_spans = jnp.floor(mask_prob * sz / mask_length + u).astype(jnp.int32)
  num_spans = jnp.maximum(num_spans, min_masks)
  min_len = jnp.full_like(sz, mask_length)
  # The reference shrinks the start range when spans would not fit without replacement.
  min_len = jnp.where(sz - min_len <= num_spans, sz - num_spans - 1, min_len)
  num_starts = jnp.maximum(sz - min_len, 1)
  num_spans = jnp.minimum(num_spans, num_starts)

  positions = jnp.arange(num_frames)
  priorities = jax.random.uniform(start_key, (batch, num_frames))
  priorities = jnp.where(positions[None] < num_starts[:, None], priorities, -1.0)
  is_start = _rank_of(priorities) < num_spans[:, None]

  # Frame t is masked if any start lies in (t - mask_length, t].
  starts_before = jnp.cumsum(is_start.astype(jnp.int32), axis=-1)
  shifted = jnp.pad(starts_before, ((0, 0), (mask_length, 0)))[:, :num_frames]
  mask = (starts_before - shifted) > 0
  mask &= positions[None] < sz[:, None]

  if require_same_masks:
    counts = mask.sum(-1)
    # Rows without valid frames (dummy rows padding an eval batch) must not set the minimum.
    keep = jnp.min(jnp.where(sz > 0, counts, num_frames))
    trim_priorities = jnp.where(mask, jax.random.uniform(trim_key, mask.shape), -1.0)
    mask &= _rank_of(trim_priorities) < keep
  return mask


def batch_or_span_mask(key: Array, batch, model_config, objective) -> Array:
  """The batch's `mask` if the input pipeline drew one (`data.masks_in_pipeline`), else span
  masks drawn here from `key` with `objective`'s settings over each row's valid frames (the
  front end's geometry, log-mel framing included): [batch, frames] bool."""
  from jaxdisco.models.config import valid_frame_lengths  # pylint: disable=g-import-not-at-top

  mask = batch.get("mask")
  if mask is not None:
    return mask
  return mask_spans(
      key,
      valid_frame_lengths(batch["padding_mask"], model_config.geometry_spec),
      model_config.num_frames(batch["waveform"].shape[-1]),
      mask_prob=objective.mask_prob,
      mask_length=objective.mask_length,
      min_masks=objective.min_masks,
      require_same_masks=objective.require_same_masks,
  )
