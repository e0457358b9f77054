"""Online k-means vector quantizer (vq-wav2vec's k-means variant) and code usage statistics.

Following the reference (`KmeansVectorQuantizer`): the encoder output goes through a grouped
1x1 conv (block-diagonal linear, no bias) and GroupNorm(G); each group's slice z_e is replaced by
its nearest codebook vector in L2 (z_q), with a straight-through gradient (forward z_q, backward
identity to z_e). The loss is MSE(z_q, sg(z_e)) (moves the codebook) + gamma * MSE(z_e, sg(z_q))
(commitment, moves the encoder), gamma = 0.25, means over valid frames and channels. Codebook
init 0.01 * N(0, 1); with `combine_groups` all groups share one set of V vectors.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxdisco.models.group_norm import GroupNorm
from jaxdisco.quantizers.gumbel import perplexity

Array = jax.Array


def code_counts(codes: Array, num_vars: int, weights: Optional[Array] = None) -> Array:
  """How often each entry is picked: codes [..., groups] int -> [groups, num_vars] float32,
  counting frames with weight (e.g. valid frames; None: all)."""
  one_hot = jax.nn.one_hot(codes, num_vars, dtype=jnp.float32)  # [..., groups, vars]
  if weights is not None:
    one_hot = one_hot * weights.astype(jnp.float32)[..., None, None]
  return one_hot.reshape(-1, *one_hot.shape[-2:]).sum(0)


def dead_code_fraction(codes: Array, num_vars: int, weights: Optional[Array] = None) -> Array:
  """Fraction of the G x V (group, entry) pairs no counted frame picked: 0 = all in use."""
  return jnp.mean((code_counts(codes, num_vars, weights) == 0).astype(jnp.float32))


def nearest_codes(z: Array, codebook: Array) -> Array:
  """z: [..., groups, dim]; codebook: [groups, vars, dim] -> codes [..., groups] int32 minimising
  ||z - e||^2 (computed as ||e||^2 - 2 z.e: the ||z||^2 term does not change the argmin, and no
  [..., groups, vars, dim] difference tensor is built)."""
  z = z.astype(jnp.float32)
  dist = jnp.sum(jnp.square(codebook), -1) - 2.0 * jnp.einsum("...gd,gvd->...gv", z, codebook)
  return jnp.argmin(dist, axis=-1).astype(jnp.int32)


def straight_through(z_e: Array, z_q: Array) -> Array:
  """Forward value exactly z_q, gradient passed to z_e unchanged (none to z_q).

  Written as sg(z_q) + (z_e - sg(z_e)), the reference's form: z_e + sg(z_q - z_e) rounds, so two
  frames with the same code got targets a few ulps apart, their logits no longer tied, and the
  accuracy count (where a distractor with the positive's code ties) differed from the
  reference's (tests/test_fairseq_parity.py).
  """
  return jax.lax.stop_gradient(z_q) + (z_e - jax.lax.stop_gradient(z_e))


def kmeans_vq_loss(z_e: Array, z_q: Array, weights: Optional[Array] = None) -> tuple[Array, Array]:
  """(codebook loss MSE(z_q, sg z_e), commitment loss MSE(z_e, sg z_q)) of [..., dim] inputs:
  means over the frames with weight (weights [...], None: all) and all channels."""
  z_e, z_q = z_e.astype(jnp.float32), z_q.astype(jnp.float32)
  w = jnp.ones(z_e.shape[:-1], jnp.float32) if weights is None else weights.astype(jnp.float32)
  denominator = jnp.maximum(w.sum(), 1.0) * z_e.shape[-1]
  mse = lambda a, b: jnp.sum(jnp.square(a - b).sum(-1) * w) / denominator
  codebook = mse(z_q, jax.lax.stop_gradient(z_e))
  commitment = mse(z_e, jax.lax.stop_gradient(z_q))
  return codebook, commitment


class KmeansQuantizerOutput(NamedTuple):
  quantized: Array  # [batch, frames, dim]: z_q forward, straight-through to z_e backward
  codes: Array  # [batch, frames, groups] int32
  code_perplexity: Array  # scalar in [G, G*V]
  dead_code_fraction: Array  # scalar in [0, 1]
  codebook_loss: Array  # scalar
  commitment_loss: Array  # scalar
  loss: Array  # codebook_loss + gamma * commitment_loss


class KmeansQuantizer(nn.Module):
  num_vars: int = 320
  num_groups: int = 2
  combine_groups: bool = True
  gamma: float = 0.25

  @nn.compact
  def __call__(self, x: Array, weights: Optional[Array] = None) -> KmeansQuantizerOutput:
    """x: [batch, frames, dim]; weights: [batch, frames] frames that count (valid frames)."""
    b, t, dim = x.shape
    g, v = self.num_groups, self.num_vars
    # Grouped 1x1 conv = one [dim/G, dim/G] matrix per group. PyTorch's default conv init.
    init = nn.initializers.variance_scaling(1.0 / 3, "fan_in", "uniform", in_axis=1, out_axis=2)
    kernel = self.param(
        "projection",
        nn.with_logical_partitioning(init, (None, "conv_in", "conv_out")),
        (g, dim // g, dim // g),
    )
    xg = x.astype(jnp.float32).reshape(b, t, g, dim // g)
    z_e = jnp.einsum("btgi,gio->btgo", xg, kernel).reshape(b, t, dim)
    z_e = GroupNorm(g, name="norm")(z_e, weights)
    books = 1 if self.combine_groups else g
    codebook = self.param(
        "codebook",
        nn.with_logical_partitioning(nn.initializers.normal(0.01), (None, "vocab", None)),
        (books, v, dim // g),
    )
    codebook = jnp.broadcast_to(codebook, (g, v, dim // g))
    z_e_groups = z_e.reshape(b, t, g, dim // g)
    codes = nearest_codes(jax.lax.stop_gradient(z_e_groups), codebook)
    # Gather each group's selected vector (a one-hot matmul keeps the codebook gradient dense).
    z_q = jnp.einsum("btgv,gvd->btgd", jax.nn.one_hot(codes, v, dtype=jnp.float32), codebook)
    z_q = z_q.reshape(b, t, dim)
    codebook_loss, commitment_loss = kmeans_vq_loss(z_e, z_q, weights)
    return KmeansQuantizerOutput(
        straight_through(z_e, z_q),
        codes,
        perplexity(jax.nn.one_hot(codes, v), weights),
        dead_code_fraction(codes, v, weights),
        codebook_loss,
        commitment_loss,
        codebook_loss + self.gamma * commitment_loss,
    )
