"""Gumbel-softmax product quantizer (wav2vec 2.0; vq-wav2vec's gumbel variant).

G groups each pick one of V learned codevectors; the picks are concatenated. Training uses a
hard, straight-through gumbel softmax in fp32; evaluation takes the argmax. The diversity loss
uses the *soft* code perplexity (softmax of the logits, no noise, no temperature).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxdisco.models.layers import gelu

Array = jax.Array

_LOG_EPS = 1e-7  # The reference's epsilon inside log() of the perplexity.


def gumbel_temperature(step, start: float, end: float, decay: float):
  """max(start * decay**step, end): the reference's per-update temperature annealing.

  Computed as exp(step * log(decay)) with log(decay) in float64 on the host: decay is so close
  to 1 (0.999995) that float32 pow(decay, step) is off by ~1e-3 relative.
  """
  log_decay = math.log(decay)
  return jnp.maximum(start * jnp.exp(jnp.asarray(step, jnp.float32) * log_decay), end)


def perplexity(probs: Array, weights: Optional[Array] = None) -> Array:
  """Sum over groups of exp(entropy of the frame-averaged distribution).

  probs: [..., groups, vars] per-frame distributions; weights: [...] frame weights (e.g. the
  masked, non-padded frames), None for a plain mean. Returns a scalar in [G, G*V].
  """
  probs = probs.astype(jnp.float32)
  if weights is None:
    avg = probs.reshape(-1, *probs.shape[-2:]).mean(0)
  else:
    w = weights.astype(jnp.float32)[..., None, None]
    avg = (probs * w).reshape(-1, *probs.shape[-2:]).sum(0) / jnp.maximum(w.sum(), 1.0)
  entropy = -jnp.sum(avg * jnp.log(avg + _LOG_EPS), axis=-1)
  return jnp.exp(entropy).sum()


def gumbel_quantize(logits: Array, key: Optional[Array], temperature) -> tuple[Array, Array]:
  """Picks one entry per group.

  logits: [..., groups, vars] (fp32). With a key: hard gumbel softmax with straight-through
  gradients (forward value one-hot, backward through the soft sample). Without a key: argmax.
  Returns (one_hot_weights [..., groups, vars], codes [..., groups] int32).
  """
  logits = logits.astype(jnp.float32)
  if key is None:
    codes = jnp.argmax(logits, axis=-1)
    return jax.nn.one_hot(codes, logits.shape[-1], dtype=jnp.float32), codes.astype(jnp.int32)
  noisy = logits + jax.random.gumbel(key, logits.shape, jnp.float32)
  soft = jax.nn.softmax(noisy / temperature, axis=-1)
  codes = jnp.argmax(noisy, axis=-1)
  hard = jax.nn.one_hot(codes, logits.shape[-1], dtype=jnp.float32)
  return hard + soft - jax.lax.stop_gradient(soft), codes.astype(jnp.int32)


class QuantizerOutput(NamedTuple):
  quantized: Array  # [batch, frames, codevector_dim]
  codes: Array  # [batch, frames, groups] int32
  prob_perplexity: Array  # scalar, soft (drives the diversity loss)
  code_perplexity: Array  # scalar, of the hard codes (diagnostic)


def _dense(features: int, axes: tuple[str, str], kernel_init, name: str) -> nn.Dense:
  return nn.Dense(
      features,
      name=name,
      param_dtype=jnp.float32,
      dtype=jnp.float32,
      kernel_init=nn.with_logical_partitioning(kernel_init, axes),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[1:]),
  )


class GumbelQuantizer(nn.Module):
  num_vars: int = 320
  num_groups: int = 2
  codevector_dim: int = 256
  init_std: float = 1.0
  # vq-wav2vec's variant (defaults keep wav2vec 2.0's): `proj_depth` > 1 puts proj_depth - 1
  # Dense(2 * in) + GELU layers before the logits, all with PyTorch's default init as in the
  # reference (init_std then unused); `combine_groups` shares one set of V codevectors
  # between the groups.
  proj_depth: int = 1
  combine_groups: bool = False

  @nn.compact
  def __call__(
      self, x: Array, *, temperature, key: Optional[Array] = None, weights: Optional[Array] = None
  ) -> QuantizerOutput:
    """x: [batch, frames, in]; weights: [batch, frames] frames counted in the perplexities."""
    g, v = self.num_groups, self.num_vars
    h, in_axis = x.astype(jnp.float32), "conv_out"
    kernel_init = nn.initializers.normal(self.init_std)
    if self.proj_depth > 1:
      kernel_init = nn.initializers.variance_scaling(1.0 / 3, "fan_in", "uniform")
    for i in range(self.proj_depth - 1):
      h = gelu(_dense(2 * x.shape[-1], (in_axis, "mlp"), kernel_init, f"logits_hidden_{i}")(h))
      in_axis = "mlp"
    proj = _dense(g * v, (in_axis, "vocab"), kernel_init, "logits")
    codebook = self.param(
        "codevectors",
        nn.with_logical_partitioning(nn.initializers.uniform(1.0), ("vocab", None)),
        ((1 if self.combine_groups else g) * v, self.codevector_dim // g),
    )
    if self.combine_groups:
      codebook = jnp.tile(codebook, (g, 1))
    logits = proj(h).reshape(*x.shape[:-1], g, v)
    one_hot, codes = gumbel_quantize(logits, key, temperature)
    prob_ppl = perplexity(jax.nn.softmax(logits, axis=-1), weights)
    code_ppl = perplexity(jax.lax.stop_gradient(jax.nn.one_hot(codes, v)), weights)
    # [..., g, v] x [g, v, d] -> [..., g, d]: each group selects from its own V entries.
    quantized = jnp.einsum("...gv,gvd->...gd", one_hot, codebook.reshape(g, v, -1))
    quantized = quantized.reshape(*x.shape[:-1], self.codevector_dim)
    return QuantizerOutput(quantized, codes, prob_ppl, code_ppl)
