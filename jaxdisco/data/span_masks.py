"""Span masks and negative indices drawn on the host, in the input pipeline.

The reference's TPU recipe computes masks in the data loader so the device
program has no host-side randomness and no data-dependent shapes. These are
numpy ports of `jaxdisco.objectives.masking.mask_spans` and
`jaxdisco.objectives.negatives.sample_negatives` / `sample_cross_negatives`:
the same algorithm and semantics (span counts, start ranges, overlap,
`require_same_masks` trimming, negatives excluding the frame itself), with a
`numpy.random.Generator` instead of a JAX key, so values differ from the
jitted draw but the distributions are the same.

One difference in scope: inside the jitted step `require_same_masks` equalises
mask counts over the global batch; here it equalises them over the local
batch of each process. The loss weights frames by `mask`, so that is correct
either way.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np


def _rank_of(priorities: np.ndarray) -> np.ndarray:
  """Rank (0 = highest priority) of every position along the last axis."""
  order = np.argsort(-priorities, axis=-1, kind='stable')
  return np.argsort(order, axis=-1, kind='stable')


def mask_spans(rng: np.random.Generator, frame_lengths: np.ndarray, num_frames: int, *,
               mask_prob: float, mask_length: int, min_masks: int = 2,
               require_same_masks: bool = True) -> np.ndarray:
  """frame_lengths: int `[batch]`; returns bool `[batch, num_frames]` (see module doc)."""
  sz = np.asarray(frame_lengths, np.int64)
  batch = sz.shape[0]
  u = rng.random(batch)
  num_spans = np.floor(mask_prob * sz / mask_length + u).astype(np.int64)
  num_spans = np.maximum(num_spans, min_masks)
  min_len = np.full_like(sz, mask_length)
  min_len = np.where(sz - min_len <= num_spans, sz - num_spans - 1, min_len)
  num_starts = np.maximum(sz - min_len, 1)
  num_spans = np.minimum(num_spans, num_starts)

  positions = np.arange(num_frames)
  priorities = rng.random((batch, num_frames))
  priorities = np.where(positions[None] < num_starts[:, None], priorities, -1.0)
  is_start = _rank_of(priorities) < num_spans[:, None]

  starts_before = np.cumsum(is_start, axis=-1)
  shifted = np.pad(starts_before, ((0, 0), (mask_length, 0)))[:, :num_frames]
  mask = (starts_before - shifted) > 0
  mask &= positions[None] < sz[:, None]

  if require_same_masks:
    counts = mask.sum(-1)
    keep = np.min(np.where(sz > 0, counts, num_frames))
    trim_priorities = np.where(mask, rng.random(mask.shape), -1.0)
    mask &= _rank_of(trim_priorities) < keep
  return mask


def sample_negatives(rng: np.random.Generator, mask: np.ndarray, num_negatives: int
                     ) -> np.ndarray:
  """int32 `[batch, frames, K]`: other masked frames of the same utterance."""
  batch, frames = mask.shape
  num_masked = mask.sum(-1).astype(np.int64)
  masked_positions = np.argsort(~mask, axis=-1, kind='stable')
  own_rank = np.cumsum(mask, axis=-1) - 1
  high = np.maximum(num_masked - 1, 1)[:, None, None]
  draws = np.floor(rng.random((batch, frames, num_negatives)) * high).astype(np.int64)
  draws = np.where(draws >= own_rank[..., None], draws + 1, draws)
  draws = np.minimum(draws, np.maximum(num_masked - 1, 0)[:, None, None])
  return np.take_along_axis(masked_positions, draws.reshape(batch, -1), axis=1).reshape(
      batch, frames, num_negatives).astype(np.int32)


def sample_cross_negatives(rng: np.random.Generator, mask: np.ndarray, num_negatives: int
                           ) -> np.ndarray:
  """int32 `[batch, frames, K]` indices into the flattened batch*frames axis."""
  batch, frames = mask.shape
  flat = mask.reshape(-1)
  total = int(flat.sum())
  masked_positions = np.argsort(~flat, kind='stable')
  own_rank = (np.cumsum(flat) - 1).reshape(batch, frames)
  draws = np.floor(rng.random((batch, frames, num_negatives)) * max(total - 1, 1)).astype(
      np.int64)
  draws = np.where(draws >= own_rank[..., None], draws + 1, draws)
  draws = np.minimum(draws, max(total - 1, 0))
  return masked_positions[draws].astype(np.int32)


def conv_output_length(num_samples, conv_spec: Sequence[tuple[int, int, int]]):
  """Frames of a conv stack of `(dim, kernel, stride)` layers (int or array)."""
  length = num_samples
  for _, kernel, stride in conv_spec:
    length = (length - kernel) // stride + 1
  return length


@dataclasses.dataclass(frozen=True)
class MaskingSpec:
  """What the pipeline needs to draw masks/negatives like the jitted loss does.

  Build it from the run's configs with `from_configs(model_config, objective)`.
  """

  conv_spec: tuple[tuple[int, int, int], ...]
  mask_prob: float
  mask_length: int
  min_masks: int = 2
  require_same_masks: bool = True
  num_negatives: int = 100
  cross_sample_negatives: int = 0

  @classmethod
  def from_configs(cls, model_config, objective) -> 'MaskingSpec':
    return cls(
        conv_spec=tuple(tuple(layer) for layer in model_config.conv_spec),
        mask_prob=float(objective.mask_prob), mask_length=int(objective.mask_length),
        min_masks=int(objective.min_masks),
        require_same_masks=bool(objective.require_same_masks),
        num_negatives=int(objective.num_negatives),
        cross_sample_negatives=int(objective.cross_sample_negatives or 0),
    )

  def draw(self, rng: np.random.Generator, padding_mask: np.ndarray) -> dict[str, np.ndarray]:
    """`mask` bool `[batch, frames]`, `negatives` int32 `[batch, frames, K]` (and
    `cross_negatives` if configured) for a batch with padding_mask `[batch, samples]`."""
    num_frames = int(conv_output_length(padding_mask.shape[-1], self.conv_spec))
    lengths = conv_output_length((~padding_mask).sum(-1), self.conv_spec)
    mask = mask_spans(rng, lengths, num_frames, mask_prob=self.mask_prob,
                      mask_length=self.mask_length, min_masks=self.min_masks,
                      require_same_masks=self.require_same_masks)
    out = {'mask': mask, 'negatives': sample_negatives(rng, mask, self.num_negatives)}
    if self.cross_sample_negatives:
      out['cross_negatives'] = sample_cross_negatives(rng, mask, self.cross_sample_negatives)
    return out


def add_masks(batch: dict, rng: np.random.Generator, spec: Optional[MaskingSpec]) -> dict:
  """`batch` plus the spec's masks/negatives (unchanged when `spec` is None)."""
  if spec is None:
    return batch
  return {**batch, **spec.draw(rng, batch['padding_mask'])}
