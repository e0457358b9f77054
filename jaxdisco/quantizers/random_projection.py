"""BEST-RQ's random-projection quantizer (Chiu et al. 2022, arXiv 2202.01855, Sec. 3.1).

Targets of frame t: stack the `stack` normalised log-mel frames under it (4 x 80-d for a 40 ms
encoder frame: stack = encoder frame stride / 160 samples), project with a frozen random
matrix A (Xavier-initialised, [stack * bins, code_dim]), L2-normalise, and take the index of
the nearest of `vocab` codes (standard-normal vectors, L2-normalised once at init) by L2
distance. With `num_codebooks` > 1 (the paper's multi-softmax variant) each codebook has its own
projection and codes: ids [..., num_codebooks].

Nothing here is trained: the module only holds the two arrays (so that they are created from
the model's init key, checkpoint, shard and export with the model), the method declares the
top-level `quantizer` frozen (`Method.frozen_params`: no optimizer update, no weight decay) and
the ids are computed under `stop_gradient`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

Array = jax.Array
_HIGHEST = jax.lax.Precision.HIGHEST


def _unit(x: Array, axis: int = -1) -> Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def normal_unit_codes(key, shape, dtype=jnp.float32) -> Array:
  """[codebooks, vocab, code_dim] standard-normal vectors, each L2-normalised."""
  return _unit(jax.random.normal(key, shape, dtype))


def random_projection_ids(stacked: Array, projection: Array, codebooks: Array) -> Array:
  """stacked [..., input_dim] -> ids [..., num_codebooks] int32.

  projection [num_codebooks, input_dim, code_dim]; codebooks [num_codebooks, vocab, code_dim]
  (unit rows). id_g = argmin_c || unit(x A_g) - codebooks[g, c] ||^2, in float32.
  """
  projection = jax.lax.stop_gradient(projection).astype(jnp.float32)
  codebooks = jax.lax.stop_gradient(codebooks).astype(jnp.float32)
  x = jax.lax.stop_gradient(stacked).astype(jnp.float32)
  z = _unit(jnp.einsum("...i,gid->...gd", x, projection, precision=_HIGHEST))
  # ||z - c||^2 = ||z||^2 - 2 z.c + ||c||^2; ||z||^2 is the same for every code.
  dots = jnp.einsum("...gd,gvd->...gv", z, codebooks, precision=_HIGHEST)
  distances = jnp.sum(jnp.square(codebooks), -1) - 2.0 * dots
  return jnp.argmin(distances, axis=-1).astype(jnp.int32)


class RandomProjectionQuantizer(nn.Module):
  """Holds `projection` and `codebooks` (replicated: a few hundred KiB) and computes ids."""

  input_dim: int
  vocab: int = 8192
  code_dim: int = 16
  num_codebooks: int = 1

  @nn.compact
  def __call__(self, stacked: Array) -> Array:
    # Xavier (Glorot) uniform per codebook: fan_in = input_dim, fan_out = code_dim.
    xavier = nn.initializers.variance_scaling(
        1.0, "fan_avg", "uniform", in_axis=-2, out_axis=-1, batch_axis=(0,)
    )
    projection = self.param(
        "projection",
        nn.with_logical_partitioning(xavier, (None, None, None)),
        (self.num_codebooks, self.input_dim, self.code_dim),
    )
    codebooks = self.param(
        "codebooks",
        nn.with_logical_partitioning(normal_unit_codes, (None, None, None)),
        (self.num_codebooks, self.vocab, self.code_dim),
    )
    return random_projection_ids(stacked, projection, codebooks)
