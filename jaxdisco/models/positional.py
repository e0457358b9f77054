"""Convolutional relative positional embedding of the wav2vec 2.0 Transformer."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxdisco.models.grouped_conv import grouped_conv1d
from jaxdisco.models.layers import gelu

Array = jax.Array


class ConvPositionalEmbedding(nn.Module):
  """Grouped conv over time (kernel K, G groups, padding K//2), weight-normalised, GELU.

  Weight norm is over every axis but the kernel-tap axis (PyTorch `weight_norm(dim=2)`), so
  `weight_g` has one gain per tap. With an even kernel the conv yields one extra frame, which
  is dropped. x: [batch, frames, dim] -> [batch, frames, dim] (to be added residually).
  """

  kernel_size: int = 128
  groups: int = 16
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    dim = x.shape[-1]
    k, g = self.kernel_size, self.groups
    # The reference initialises N(0, sqrt(4 / (K * dim))) and sets the norm gains to the
    # resulting per-tap norms, so the effective weight starts equal to weight_v.
    std = math.sqrt(4.0 / (k * dim))
    weight_v = self.param(
        "weight_v",
        nn.with_logical_partitioning(nn.initializers.normal(std), (None, None, "embed")),
        (k, dim // g, dim),
    )
    weight_g = self.param(
        "weight_g",
        nn.with_logical_partitioning(
            lambda key, shape: jnp.sqrt(jnp.sum(jnp.square(weight_v), axis=(1, 2))), (None,)
        ),
        (k,),
    )
    bias = self.param(
        "bias", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)), (dim,)
    )
    norm = jnp.sqrt(jnp.sum(jnp.square(weight_v), axis=(1, 2), keepdims=True))
    kernel = weight_v * (weight_g[:, None, None] / norm)
    y = grouped_conv1d(x.astype(self.dtype), kernel.astype(self.dtype), g)
    return gelu(y + bias.astype(y.dtype))
