"""Negative sampling for the contrastive task, with static shapes."""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def sample_negatives(key: Array, mask: Array, num_negatives: int) -> Array:
  """For every masked frame, `num_negatives` other masked frames of the same utterance.

  Drawn uniformly and independently (duplicates allowed) among the utterance's M masked
  frames excluding the frame itself, by drawing from M - 1 ranks and shifting ranks at or
  above the frame's own rank, as the reference does. mask: [batch, frames] bool.
  Returns [batch, frames, num_negatives] int32 frame indices within the utterance; rows of
  unmasked frames hold arbitrary valid indices (their loss weight is zero).
  """
  batch, frames = mask.shape
  num_masked = mask.sum(-1).astype(jnp.int32)  # [batch]
  # Positions of masked frames in ascending order occupy the first num_masked slots.
  masked_positions = jnp.argsort(~mask, axis=-1, stable=True).astype(jnp.int32)
  own_rank = jnp.cumsum(mask.astype(jnp.int32), axis=-1) - 1  # rank of a masked frame
  high = jnp.maximum(num_masked - 1, 1)[:, None, None]
  draws = jnp.floor(jax.random.uniform(key, (batch, frames, num_negatives)) * high)
  draws = draws.astype(jnp.int32)
  draws = jnp.where(draws >= own_rank[..., None], draws + 1, draws)
  draws = jnp.minimum(draws, jnp.maximum(num_masked - 1, 0)[:, None, None])
  return jnp.take_along_axis(
      masked_positions[:, :, None], draws.reshape(batch, -1, 1), axis=1
  ).reshape(batch, frames, num_negatives)


def sample_cross_negatives(key: Array, mask: Array, num_negatives: int) -> Array:
  """Negatives from the masked frames of the whole batch (the reference's
  `cross_sample_negatives`), excluding the frame itself.

  Returns [batch, frames, num_negatives] int32 indices into the flattened batch*frames axis.
  """
  batch, frames = mask.shape
  flat = mask.reshape(-1)
  total = flat.sum().astype(jnp.int32)
  masked_positions = jnp.argsort(~flat, stable=True).astype(jnp.int32)
  own_rank = (jnp.cumsum(flat.astype(jnp.int32)) - 1).reshape(batch, frames)
  draws = jnp.floor(
      jax.random.uniform(key, (batch, frames, num_negatives)) * jnp.maximum(total - 1, 1)
  ).astype(jnp.int32)
  draws = jnp.where(draws >= own_rank[..., None], draws + 1, draws)
  draws = jnp.minimum(draws, jnp.maximum(total - 1, 0))
  return masked_positions[draws]


def sample_negatives_in_prefix(
    key: Array, lengths: Array, frames: int, num_negatives: int
) -> Array:
  """`sample_negatives` for a mask that is a prefix (the first `lengths[b]` frames of each row,
  e.g. the valid frames of padded-at-the-end utterances): same distribution, no sort.

  For every frame t, `num_negatives` frames of [0, length) other than t, uniform and
  independent. lengths: [batch] int. Returns [batch, frames, num_negatives] int32; rows of
  frames t >= length hold arbitrary valid indices.
  """
  batch = lengths.shape[0]
  high = jnp.maximum(lengths - 1, 1)[:, None, None]
  draws = jnp.floor(jax.random.uniform(key, (batch, frames, num_negatives)) * high)
  draws = draws.astype(jnp.int32)
  draws = jnp.where(draws >= jnp.arange(frames)[None, :, None], draws + 1, draws)
  return jnp.minimum(draws, jnp.maximum(lengths - 1, 0)[:, None, None])
