"""Small building blocks shared by every model: dense/conv layers with logical axis names,
norms computed in fp32, and the gradient multiplier.

Parameters carry *logical* axis names (`embed`, `mlp`, `heads`, ...); the trainer maps them to
mesh axes through one rules table in the config, so model code never names a device axis.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

Array = jax.Array


def dense(
    features: int,
    axes: tuple[str, str],
    name: str | None = None,
    *,
    use_bias: bool = True,
    dtype=jnp.float32,
    kernel_init=nn.initializers.lecun_normal(),
) -> nn.Dense:
  return nn.Dense(
      features,
      use_bias=use_bias,
      dtype=dtype,
      param_dtype=jnp.float32,
      name=name,
      kernel_init=nn.with_logical_partitioning(kernel_init, axes),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[1:]),
  )


class LayerNorm(nn.Module):
  """LayerNorm over the last axis, always computed in fp32 (as the reference does)."""

  eps: float = 1e-5
  axis_name: str = "embed"

  @nn.compact
  def __call__(self, x: Array) -> Array:
    dim = x.shape[-1]
    scale = self.param(
        "scale", nn.with_logical_partitioning(nn.initializers.ones, (self.axis_name,)), (dim,)
    )
    bias = self.param(
        "bias", nn.with_logical_partitioning(nn.initializers.zeros, (self.axis_name,)), (dim,)
    )
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + self.eps) * scale + bias
    return y.astype(x.dtype)


def scale_gradient(x: Array, multiplier: float) -> Array:
  """Identity forward; gradient multiplied by `multiplier` backward (the reference's
  feature_grad_mult, which slows the conv encoder relative to the Transformer)."""
  if multiplier == 1.0:
    return x
  if multiplier == 0.0:
    return jax.lax.stop_gradient(x)
  return x * multiplier + jax.lax.stop_gradient(x) * (1.0 - multiplier)


def gelu(x: Array) -> Array:
  """Exact GELU, x * Phi(x), as the reference and Hugging Face compute it: 0.5 x (1 + erf(x/√2)).

  Not `jax.nn.gelu(approximate=False)`, which goes through erfc: the same function to 1e-6 in
  fp32, but XLA's CPU erfc costs an exp and two selects per element, and its gradient more; on
  the conv stack's largest activation (4 x 6399 x 512) layer norm + GELU forward and backward
  took 228 ms that way and 98 ms this way on 2 cores.
  """
  return 0.5 * x * (1.0 + jax.lax.erf(x * jnp.asarray(_SQRT_HALF, x.dtype)))


_SQRT_HALF = 0.7071067811865476
