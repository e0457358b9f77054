"""Convolutional waveform encoder: raw 16 kHz samples -> ~50 Hz feature frames."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxdisco.models.config import ConvSpec
from jaxdisco.models.layers import LayerNorm, gelu

Array = jax.Array


def strided_conv1d(x: Array, kernel: Array, stride: int) -> Array:
  """VALID 1-D convolution as one matmul over gathered taps.

  x: [batch, time, in]; kernel: [taps, in, out]. Returns [batch, frames, out] with
  frames = (time - taps) // stride + 1. Each output frame concatenates its `taps` strided input
  frames and multiplies once by the flattened kernel; for the first layer (in=1) this turns a
  one-channel convolution, which wastes matrix units, into a [frames, taps] x [taps, out] matmul.
  """
  taps, _, _ = kernel.shape
  frames = (x.shape[1] - taps) // stride + 1
  limit = stride * (frames - 1) + 1
  windows = [x[:, j : j + limit : stride] for j in range(taps)]  # each [batch, frames, in]
  stacked = jnp.concatenate(windows, axis=-1)  # [batch, frames, taps * in], tap-major
  return stacked @ kernel.reshape(-1, kernel.shape[-1]).astype(x.dtype)


class ConvBlock(nn.Module):
  out_channels: int
  kernel_size: int
  stride: int
  norm: str  # "group", "layer" or "none"
  use_bias: bool
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, valid_lengths: Optional[Array] = None) -> Array:
    """x: [batch, time, in]; valid_lengths: [batch] valid input steps (None: all valid)."""
    in_channels = x.shape[-1]
    # Kaiming-normal (fan-in, gain sqrt(2)), the reference's init for these convs.
    init = nn.initializers.variance_scaling(2.0, "fan_in", "normal", in_axis=(0, 1), out_axis=2)
    kernel = self.param(
        "kernel",
        nn.with_logical_partitioning(init, (None, "conv_in", "conv_out")),
        (self.kernel_size, in_channels, self.out_channels),
    )
    y = strided_conv1d(x.astype(self.dtype), kernel, self.stride)
    if self.use_bias:
      bias = self.param(
          "bias",
          nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",)),
          (self.out_channels,),
      )
      y = y + bias.astype(y.dtype)
    if self.norm == "group":
      frame_valid = None
      if valid_lengths is not None:
        out_lengths = (valid_lengths - self.kernel_size) // self.stride + 1
        frame_valid = jnp.arange(y.shape[1])[None] < out_lengths[:, None]
      y = ChannelGroupNorm(name="norm")(y, frame_valid)
    elif self.norm == "layer":
      y = LayerNorm(axis_name="conv_out", name="norm")(y)
    return gelu(y)


class ChannelGroupNorm(nn.Module):
  """GroupNorm with one group per channel: each channel normalised over time, per example,
  in fp32 (the reference's first-layer norm in "default" mode). x: [batch, frames, channels].

  With `frame_valid` [batch, frames], statistics cover valid frames only, so a padded row gives
  exactly the features of the same utterance unpadded. (The reference never pads these models:
  it crops batches to equal length and featurizes one utterance at a time. Hugging Face
  includes the padding in the statistics, so its batched outputs drift with the padding.)
  """

  eps: float = 1e-5

  @nn.compact
  def __call__(self, x: Array, frame_valid: Optional[Array] = None) -> Array:
    channels = x.shape[-1]
    scale = self.param(
        "scale", nn.with_logical_partitioning(nn.initializers.ones, ("conv_out",)), (channels,)
    )
    bias = self.param(
        "bias", nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",)), (channels,)
    )
    x32 = x.astype(jnp.float32)
    if frame_valid is None:
      mean = x32.mean(1, keepdims=True)
      var = jnp.square(x32 - mean).mean(1, keepdims=True)
    else:
      w = frame_valid[..., None].astype(jnp.float32)
      count = jnp.maximum(w.sum(1, keepdims=True), 1.0)  # Fully padded rows: no NaN.
      mean = (x32 * w).sum(1, keepdims=True) / count
      var = (jnp.square(x32 - mean) * w).sum(1, keepdims=True) / count
    return ((x32 - mean) * jax.lax.rsqrt(var + self.eps) * scale + bias).astype(x.dtype)


class ConvFeatureEncoder(nn.Module):
  """waveform [batch, samples] -> features [batch, frames, channels_of_last_layer]."""

  conv_spec: ConvSpec
  mode: str = "default"
  use_bias: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, waveform: Array, valid_lengths: Optional[Array] = None) -> Array:
    """valid_lengths: [batch] valid samples per row (padding at the end), or None. A 3-D input
    [batch, steps, channels] (log-mel frames) is convolved as it is: the stages are then a
    conv subsampling over its channels, and valid_lengths counts steps."""
    x = waveform[..., None] if waveform.ndim == 2 else waveform
    for i, (channels, kernel, stride) in enumerate(self.conv_spec):
      if self.mode == "layer_norm":
        norm = "layer"
      else:
        norm = "group" if i == 0 else "none"
      block = ConvBlock(channels, kernel, stride, norm, self.use_bias, self.dtype, name=f"conv_{i}")
      x = block(x, valid_lengths if i == 0 else None)
    return x
