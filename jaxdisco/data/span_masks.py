"""Span masks and negative indices drawn on the host, in the input pipeline.

The reference's TPU recipe computes masks in the data loader so the device program has no
host-side randomness and no data-dependent shapes. This runs the very function the jitted
wav2vec 2.0 loss draws with (`jaxdisco.objectives.wav2vec2.draw_masks_and_negatives`) on the host
CPU, keyed by a seed drawn from the pipeline's numpy generator, so both paths share one
implementation and one set of semantics.

One difference in scope: inside the jitted step `require_same_masks` equalises mask counts over
the global batch; here over each process's local batch. The loss weights frames by `mask`, so
that is correct either way.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxdisco.objectives.wav2vec2 import draw_masks_and_negatives


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
        conv_spec=tuple(tuple(layer) for layer in model_config.geometry_spec),
        mask_prob=float(objective.mask_prob),
        mask_length=int(objective.mask_length),
        min_masks=int(objective.min_masks),
        require_same_masks=bool(objective.require_same_masks),
        num_negatives=int(objective.get('num_negatives', 0)),  # HuBERT: masks only.
        cross_sample_negatives=int(objective.get('cross_sample_negatives', 0) or 0),
    )

  def draw(self, rng: np.random.Generator, padding_mask: np.ndarray) -> dict[str, np.ndarray]:
    """`mask` bool `[batch, frames]`, `negatives` int32 `[batch, frames, K]` (and
    `cross_negatives` if configured) for a batch with padding_mask `[batch, samples]`."""
    seed = int(rng.integers(0, 2**31 - 1))
    with jax.default_device(jax.devices('cpu')[0]):
      out = _draw_on_host(self, seed, jnp.asarray(padding_mask))
    return {k: np.asarray(v) for k, v in out.items()}


@functools.partial(jax.jit, static_argnums=0)
def _draw_on_host(spec: MaskingSpec, seed, padding_mask):
  return draw_masks_and_negatives(jax.random.key(seed), padding_mask, spec.conv_spec, spec)


def add_masks(batch: dict, rng: np.random.Generator, spec: Optional[MaskingSpec]) -> dict:
  """`batch` plus the spec's masks/negatives (unchanged when `spec` is None)."""
  if spec is None:
    return batch
  return {**batch, **spec.draw(rng, batch['padding_mask'])}
