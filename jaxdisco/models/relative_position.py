"""WavLM's gated relative position bias (Chen et al. 2021, arXiv 2110.13900).

Attention logits get an additive bias that depends on the key's offset from the query,
looked up from a learned table of `num_buckets` entries per head. Half of the buckets are
for keys after the query, half for keys at or before it; within each half, offsets below a
quarter of `num_buckets` get a bucket each and larger ones share log-spaced buckets up to
`max_distance`, beyond which they all fall into the last one.

One table serves the whole encoder: `transformers` `WavLMModel` (like Microsoft's released
code) keeps it in the first layer and hands that layer's ungated bias on to every later one;
here the encoder holds it, which computes the same. Each layer scales the bias, per query and
head, by a gate computed from that layer's attention input:
  gate = a * (b * scale - 1) + 2,   a, b = sigmoid(two projections of the head's slice),
which with `scale` at its initial 1 lies between 1 and 2: the bias is reweighted by content,
never switched off.

`RelativePositionBias` (one per encoder) gives the ungated bias [heads, frames, frames];
`PositionBiasGate` (one per layer) turns it into the per-utterance bias that
`jax.nn.dot_product_attention` adds to the scaled logits.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from jaxdisco.models.layers import dense

Array = jax.Array

# Outputs of the gate projection per head. Only their two sums of four matter (which makes the
# projection equivalent to one with two outputs); the published checkpoints hold eight.
GATE_PROJECTION_OUTPUTS = 8


def relative_position_bucket(offsets: np.ndarray, num_buckets: int, max_distance: int):
  """Bucket of each key-minus-query offset (int array, any shape) -> int32, same shape.

  Computed in float32 in the reference's order of operations, so the bucket edges (truncated
  logarithms) agree with `transformers` exactly; numpy, because the frame count is static and
  only the 2 * frames - 1 possible offsets need buckets.
  """
  offsets = np.asarray(offsets, np.int64)
  half = num_buckets // 2
  max_exact = half // 2
  distance = np.abs(offsets)
  # log(0) would warn; those offsets take the exact branch anyway.
  scaled = np.log(np.maximum(distance, 1).astype(np.float32) / max_exact)
  scaled = scaled / np.float32(math.log(max_distance / max_exact)) * (half - max_exact)
  far = np.minimum((max_exact + scaled).astype(np.int64), half - 1)
  bucket = np.where(distance < max_exact, distance, far) + (offsets > 0) * half
  return bucket.astype(np.int32)


class RelativePositionBias(nn.Module):
  """Learned bias by bucketed offset: frames (static) -> [heads, queries, keys] float32."""

  num_heads: int
  num_buckets: int = 320
  max_distance: int = 800

  @nn.compact
  def __call__(self, frames: int) -> Array:
    # N(0, 0.02), the BERT-style init the reference applies to its embedding tables; a unit
    # normal would start the bias far larger than the logits.
    table = self.param(
        "embedding",
        nn.with_logical_partitioning(nn.initializers.normal(0.02), ("position_buckets", "heads")),
        (self.num_buckets, self.num_heads),
    )
    offsets = np.arange(-(frames - 1), frames)
    per_offset = table[relative_position_bucket(offsets, self.num_buckets, self.max_distance)]
    # Offset index of (query q, key k) is k - q + frames - 1: gather from 2T - 1 rows rather
    # than baking a [T, T] bucket constant into the program.
    positions = jnp.arange(frames)
    index = positions[None, :] - positions[:, None] + frames - 1
    return jnp.transpose(per_offset[index], (2, 0, 1))


class PositionBiasGate(nn.Module):
  """One layer's gated bias: (attention input [batch, frames, dim], bias [heads, frames,
  frames]) -> [batch, heads, frames (queries), frames (keys)] float32.

  The gates read each head's slice of the attention input (the input, not the query
  projection), one projection shared by all heads; `scale` is one learned factor per head.
  """

  num_heads: int

  @nn.compact
  def __call__(self, x: Array, position_bias: Array) -> Array:
    b, t, dim = x.shape
    # Kept in float32 whatever the compute dtype: it is [batch, frames, heads, 8], negligible.
    per_head = x.astype(jnp.float32).reshape(b, t, self.num_heads, dim // self.num_heads)
    proj = dense(GATE_PROJECTION_OUTPUTS, (None, None), "proj")(per_head)
    gates = jax.nn.sigmoid(proj.reshape(b, t, self.num_heads, 2, -1).sum(-1))
    scale = self.param(
        "scale", nn.with_logical_partitioning(nn.initializers.ones, ("heads",)), (self.num_heads,)
    )
    gate = gates[..., 0] * (gates[..., 1] * scale - 1.0) + 2.0  # [batch, queries, heads]
    return jnp.transpose(gate, (0, 2, 1))[..., None] * position_bias[None]
