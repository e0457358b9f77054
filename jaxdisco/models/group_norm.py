"""GroupNorm over (channels of a group x time) per example, in fp32, padding-aware.

The reference's `Fp32GroupNorm(groups, dim)` on [batch, channels, time]: each example's group of
channels is normalised with one mean and variance taken over the group's channels and all its
frames, then scaled per channel. wav2vec 1.0 / vq-wav2vec use one group after every conv
(`norm_block`) and G groups in front of the k-means quantizer.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from flax import linen as nn

Array = jax.Array


def group_norm(
    x: Array, groups: int, frame_valid: Optional[Array] = None, eps: float = 1e-5
) -> Array:
  """Unscaled group norm. x: [batch, frames, channels]; frame_valid: [batch, frames] bool.

  With `frame_valid`, statistics cover valid frames only, so padding never changes the valid
  frames' output (the reference crops batches to equal length and never sees padding).
  Returns fp32 [batch, frames, channels].
  """
  b, t, c = x.shape
  xg = x.astype(jnp.float32).reshape(b, t, groups, c // groups)
  if frame_valid is None:
    w = jnp.ones((b, t, 1, 1), jnp.float32)
  else:
    w = frame_valid.astype(jnp.float32)[:, :, None, None]
  count = jnp.maximum(w.sum(axis=(1, 3), keepdims=True) * (c // groups), 1.0)
  mean = (xg * w).sum(axis=(1, 3), keepdims=True) / count
  var = (jnp.square(xg - mean) * w).sum(axis=(1, 3), keepdims=True) / count
  return ((xg - mean) * jax.lax.rsqrt(var + eps)).reshape(b, t, c)


class GroupNorm(nn.Module):
  """`group_norm` with a learned per-channel scale and bias (affine, as in the reference)."""

  groups: int = 1
  eps: float = 1e-5
  axis_name: str = "conv_out"

  @nn.compact
  def __call__(self, x: Array, frame_valid: Optional[Array] = None) -> Array:
    c = x.shape[-1]
    scale = self.param(
        "scale", nn.with_logical_partitioning(nn.initializers.ones, (self.axis_name,)), (c,)
    )
    bias = self.param(
        "bias", nn.with_logical_partitioning(nn.initializers.zeros, (self.axis_name,)), (c,)
    )
    y = group_norm(x, self.groups, frame_valid, self.eps) * scale + bias
    return y.astype(x.dtype)
