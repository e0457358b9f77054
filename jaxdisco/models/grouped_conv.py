"""The positional embedding's grouped convolution over time, computed where it is fast.

    y[b, t, o] = sum_k sum_c x[b, t + k - K // 2, c] kernel[k, c, o]   (c, o in one group)

x: [batch, frames, dim]; kernel: [K, dim / groups, dim] (WIO); zero padding K // 2 before and
K - 1 - K // 2 after, so y has as many frames as x (for even K, the reference's symmetric
padding with the extra last frame dropped).

XLA's grouped convolution is slow here on two backends, measured in the BASE / CPU train steps:
  * GPU (H200, bf16, BASE batch 8 x 15.6 s): cuDNN runs the forward and the input gradient as a
    generic engine at ~6.6 ms each, 14 ms of a 44 ms step for 0.35 TFLOP;
  * CPU: the kernel gradient becomes a batch-grouped convolution, 270 ms of a 2.1 s step for
    0.1 GFLOP.
All three products are correlations or convolutions along time, so they are computed through
real FFTs in fp32 instead: O(frames log frames) per channel plus a [dim/groups]^2 complex
product per frequency and group. Which path runs is chosen per backend
(`lax.platform_dependent`, so a program exported for several backends keeps each one's): FFTs
for everything on GPU; on CPU XLA's forward and input gradient (fast there) with the FFT kernel
gradient; on TPU XLA's convolution throughout (not measured).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

Array = jax.Array
_HIGHEST = jax.lax.Precision.HIGHEST


def _pads(taps: int) -> tuple[int, int]:
  return taps // 2, taps - 1 - taps // 2


def fft_length(n: int) -> int:
  """The smallest 2^a 3^b 5^c >= n: FFT sizes that cuFFT and ducc run without Bluestein."""
  best = 1 << max(n - 1, 0).bit_length()
  p3 = 1
  while p3 < best:
    p35 = p3
    while p35 < best:
      m = p35
      while m < n:
        m *= 2
      best = min(best, m)
      p35 *= 5
    p3 *= 3
  return best


def lax_grouped_conv(x: Array, kernel: Array, groups: int) -> Array:
  return jax.lax.conv_general_dilated(
      x,
      kernel,
      window_strides=(1,),
      padding=[_pads(kernel.shape[0])],
      dimension_numbers=("NWC", "WIO", "NWC"),
      feature_group_count=groups,
  )


def _time_spectrum(a: Array, n: int, groups: int, taps: int = 0) -> Array:
  """rfft over time of a [batch, frames, dim] (zero-padded for a K-tap kernel when taps > 0),
  as [batch, freqs, groups, dim / groups]."""
  a = a.astype(jnp.float32)
  if taps:
    a = jnp.pad(a, ((0, 0), _pads(taps), (0, 0)))
  return jnp.fft.rfft(a, n, axis=1).reshape(a.shape[0], -1, groups, a.shape[-1] // groups)


def _kernel_spectrum(kernel: Array, n: int, groups: int) -> Array:
  """rfft over taps of the kernel [K, c, groups * o], as [freqs, c, groups, o]."""
  _, c_in, c_out = kernel.shape
  fk = jnp.fft.rfft(kernel.astype(jnp.float32), n, axis=0)
  return fk.reshape(-1, c_in, groups, c_out // groups)


def _back_to_time(spectrum: Array, n: int) -> Array:
  """[batch, freqs, groups, c] -> [batch, n, groups * c]."""
  return jnp.fft.irfft(spectrum.reshape(*spectrum.shape[:2], -1), n, axis=1)


def fft_grouped_conv(x: Array, kernel: Array, groups: int) -> Array:
  """The forward, a correlation with the kernel: Y = X conj(K) per frequency and group."""
  frames, taps = x.shape[1], kernel.shape[0]
  # No wrap-around: outputs 0..frames-1 of a circular correlation of length
  # n >= frames + K - 1 read only the padded input.
  n = fft_length(frames + taps - 1)
  fx = _time_spectrum(x, n, groups, taps)
  fk = _kernel_spectrum(kernel, n, groups)
  fy = jnp.einsum("bfgc,fcgo->bfgo", fx, jnp.conj(fk), precision=_HIGHEST)
  return _back_to_time(fy, n)[:, :frames].astype(x.dtype)


def fft_input_grad(dy: Array, kernel: Array, groups: int) -> Array:
  """d/dx: the output gradient convolved with the kernel, cropped to the unpadded frames."""
  frames, taps = dy.shape[1], kernel.shape[0]
  n = fft_length(frames + taps - 1)  # The whole linear convolution, without wrap-around.
  fdy = _time_spectrum(dy, n, groups)
  fk = _kernel_spectrum(kernel, n, groups)
  fdx = jnp.einsum("bfgo,fcgo->bfgc", fdy, fk, precision=_HIGHEST)
  left = _pads(taps)[0]
  return _back_to_time(fdx, n)[:, left : left + frames]


def fft_kernel_grad(x: Array, dy: Array, taps: int, groups: int) -> Array:
  """d/dkernel[k, c, o] = sum_{b,t} x_padded[b, t + k, c] dy[b, t, o]: a correlation over time."""
  frames, c_in, c_out = x.shape[1], x.shape[-1] // groups, dy.shape[-1]
  # Lags 0..K-1 of a circular correlation of length n >= frames + K - 1 do not wrap, since dy is
  # zero past `frames`.
  n = fft_length(frames + taps - 1)
  fx = _time_spectrum(x, n, groups, taps)
  fdy = _time_spectrum(dy, n, groups)
  cross = jnp.einsum("bfgc,bfgo->fgco", fx, jnp.conj(fdy), precision=_HIGHEST)
  lags = jnp.fft.irfft(cross, n, axis=0)[:taps]  # [taps, groups, c_in, c_out / groups]
  return lags.transpose(0, 2, 1, 3).reshape(taps, c_in, c_out)


def _lax_input_grad(x, kernel, groups, dy):
  _, x_vjp = jax.vjp(lambda x: lax_grouped_conv(x, kernel, groups), x)
  return x_vjp(dy)[0]


def _lax_kernel_grad(x, kernel, groups, dy):
  _, k_vjp = jax.vjp(lambda k: lax_grouped_conv(x, k, groups), kernel)
  return k_vjp(dy)[0]


def _forward(x: Array, kernel: Array, groups: int) -> Array:
  fft = lambda x, k: fft_grouped_conv(x, k, groups)
  lax = lambda x, k: lax_grouped_conv(x, k, groups)
  return jax.lax.platform_dependent(x, kernel, cuda=fft, rocm=fft, default=lax)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def grouped_conv1d(x: Array, kernel: Array, groups: int) -> Array:
  """The grouped conv of the module docstring; the same function on every backend."""
  return _forward(x, kernel, groups)


def _fwd(x, kernel, groups):
  return _forward(x, kernel, groups), (x, kernel)


def _bwd(groups, residuals, dy):
  x, kernel = residuals
  fft_dx = lambda x, k, dy: fft_input_grad(dy, k, groups).astype(x.dtype)
  dx = jax.lax.platform_dependent(
      x,
      kernel,
      dy,
      cuda=fft_dx,
      rocm=fft_dx,
      default=lambda x, k, dy: _lax_input_grad(x, k, groups, dy),
  )
  dk = jax.lax.platform_dependent(
      x,
      kernel,
      dy,
      tpu=lambda x, k, dy: _lax_kernel_grad(x, k, groups, dy),
      default=lambda x, k, dy: fft_kernel_grad(x, dy, k.shape[0], groups).astype(k.dtype),
  )
  return dx, dk


grouped_conv1d.defvjp(_fwd, _bwd)
