"""The conv stack's taps-as-one-matmul convolution equals XLA's own convolution, values and
gradients, for the strides and kernels the shipped models use and for awkward lengths."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdisco.models.feature_encoder import strided_conv1d


def _lax_conv(x, w, stride):
  return jax.lax.conv_general_dilated(
      x, w, (stride,), "VALID", dimension_numbers=("NWC", "WIO", "NWC"), precision="highest"
  )


@pytest.mark.parametrize(
    "time,taps,stride,channels",
    [
        (400, 10, 5, 1),  # wav2vec 2.0 / HuBERT first layer
        (79, 3, 2, 8),  # their middle layers, odd length
        (40, 2, 2, 4),  # their last layers, length a multiple of the stride
        (41, 2, 2, 4),
        (64, 8, 4, 3),  # vq-wav2vec's second layer
        (97, 7, 3, 2),  # taps neither a multiple of the stride nor below it
        (20, 5, 5, 2),  # one frame per row, frames end exactly at the input's end
        (13, 4, 1, 3),  # stride 1 (the causal aggregator)
    ],
)
def test_equals_xla_conv_with_gradients(time, taps, stride, channels):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, time, channels)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((taps, channels, 6)), jnp.float32)
  out = strided_conv1d(x, w, stride)
  ref = _lax_conv(x, w, stride)
  assert out.shape == ref.shape == (2, (time - taps) // stride + 1, 6)
  np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5)
  loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w, stride)))
  grads = jax.grad(loss(strided_conv1d), argnums=(0, 1))(x, w)
  ref_grads = jax.grad(loss(_lax_conv), argnums=(0, 1))(x, w)
  for g, r in zip(grads, ref_grads):
    np.testing.assert_allclose(g, r, atol=1e-4, rtol=1e-4)
