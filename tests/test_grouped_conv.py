"""The positional embedding's grouped conv equals XLA's grouped convolution with the reference's
padding: values and both gradients, through the path this backend picks and through each FFT
product alone (the GPU's path, checked here on CPU too), for even and odd kernels and bf16."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdisco.models import grouped_conv
from jaxdisco.models.grouped_conv import grouped_conv1d

CASES = [
    (50, 128, 16, 32),  # BASE's kernel and groups, fewer frames than taps
    (37, 8, 4, 16),  # the tests' tiny model
    (23, 7, 1, 6),  # odd kernel, one group
    (64, 4, 2, 8),
]


def _reference(x, kernel, groups):
  """The reference's form: padding K // 2 both sides, the extra frame of an even K dropped."""
  taps = kernel.shape[0]
  y = jax.lax.conv_general_dilated(
      x,
      kernel,
      (1,),
      [(taps // 2, taps // 2)],
      dimension_numbers=("NWC", "WIO", "NWC"),
      feature_group_count=groups,
      precision="highest",
  )
  return y[:, : x.shape[1]]


def _inputs(frames, taps, groups, dim, seed=0):
  rng = np.random.default_rng(seed + taps)
  x = jnp.asarray(rng.standard_normal((3, frames, dim)), jnp.float32)
  kernel = jnp.asarray(rng.standard_normal((taps, dim // groups, dim)) / taps, jnp.float32)
  dy = jnp.asarray(rng.standard_normal((3, frames, dim)), jnp.float32)
  return x, kernel, dy


def _close(actual, expected):
  scale = float(jnp.abs(expected).max())
  np.testing.assert_allclose(actual, expected, atol=2e-5 * scale, rtol=1e-4)


@pytest.mark.parametrize("frames,taps,groups,dim", CASES)
def test_backend_path_equals_xla_with_gradients(frames, taps, groups, dim):
  x, kernel, dy = _inputs(frames, taps, groups, dim)
  out, vjp = jax.vjp(lambda x, k: grouped_conv1d(x, k, groups), x, kernel)
  ref, ref_vjp = jax.vjp(lambda x, k: _reference(x, k, groups), x, kernel)
  assert out.shape == ref.shape == x.shape
  _close(out, ref)
  for g, r in zip(vjp(dy), ref_vjp(dy)):
    _close(g, r)
  jitted = jax.jit(jax.grad(lambda x, k: jnp.sum(grouped_conv1d(x, k, groups) * dy), (0, 1)))
  for g, r in zip(jitted(x, kernel), ref_vjp(dy)):
    _close(g, r)


@pytest.mark.parametrize("frames,taps,groups,dim", CASES)
def test_each_fft_product_equals_xla(frames, taps, groups, dim):
  x, kernel, dy = _inputs(frames, taps, groups, dim, seed=1)
  _, ref_vjp = jax.vjp(lambda x, k: _reference(x, k, groups), x, kernel)
  ref_dx, ref_dk = ref_vjp(dy)
  _close(grouped_conv.fft_grouped_conv(x, kernel, groups), _reference(x, kernel, groups))
  _close(grouped_conv.fft_input_grad(dy, kernel, groups), ref_dx)
  _close(grouped_conv.fft_kernel_grad(x, dy, taps, groups), ref_dk)


def test_fft_length_is_smooth_and_minimal():
  smooth = lambda m: m == 1 or any(m % p == 0 and smooth(m // p) for p in (2, 3, 5))
  for n in (1, 2, 7, 97, 908, 1025, 4097):
    m = grouped_conv.fft_length(n)
    assert m >= n and smooth(m)
    assert not any(smooth(k) for k in range(n, m)), (n, m)
  assert grouped_conv.fft_length(908) == 960  # BASE: 781 frames + 128 taps - 1


def test_bfloat16_within_bf16_rounding():
  x, kernel, dy = _inputs(40, 8, 4, 16, seed=2)
  bf = jnp.bfloat16
  out, vjp = jax.vjp(lambda x, k: grouped_conv1d(x.astype(bf), k.astype(bf), 4), x, kernel)
  ref, ref_vjp = jax.vjp(lambda x, k: _reference(x, k, 4), x, kernel)
  assert out.dtype == bf
  rel = lambda a, b: float(jnp.linalg.norm(a.astype(jnp.float32) - b) / jnp.linalg.norm(b))
  assert rel(out, ref) < 1e-2
  for g, r in zip(vjp(dy.astype(bf)), ref_vjp(dy)):
    assert g.dtype == jnp.float32 and rel(g, r) < 1e-2
