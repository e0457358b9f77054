"""wav2vec 1.0 convolutional encoder and causal conv aggregator, and the vq-wav2vec model.

Follows the reference's `wav2vec` model (fairseq) as configured by the vq-wav2vec recipe:
  * encoder: per layer conv (no bias) -> GroupNorm(1 group, affine) -> activation; optional
    log(|z| + 1) compression at the end; total stride 160 (100 frames/s at 16 kHz);
  * quantizer on the encoder output z: gumbel (`quantizers.gumbel`) or online k-means
    (`quantizers.kmeans_vq`), giving z_hat (the reference's dropout_features is 0: none here);
  * aggregator on z_hat: per layer left replication padding of kernel - 1 frames (causal) ->
    conv (bias) -> GroupNorm(1) -> activation, then (x + residual) * sqrt(residual_scale), with
    a 1x1 conv on the residual where the channel count changes (dropout 0: none here);
  * per-step projections of the context c (the reference's ConvTranspose2d(in, out, (1, K)):
    one [in, out] matrix per step, one bias shared by all steps).
The targets of the contrastive task are z_hat itself, gradient included (the reference does not
detach them). Convs use PyTorch's default init (U(+-1/sqrt(fan_in))), which the reference keeps;
biases start at zero. GroupNorm statistics skip padded frames (see `models.group_norm`).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxdisco.models.config import conv_output_length
from jaxdisco.models.feature_encoder import strided_conv1d
from jaxdisco.models.group_norm import GroupNorm
from jaxdisco.models.layers import gelu
from jaxdisco.models.vq_wav2vec_config import VqWav2VecConfig
from jaxdisco.models.wav2vec2 import frame_validity  # Needs only num_frames and geometry_spec.
from jaxdisco.quantizers.gumbel import GumbelQuantizer
from jaxdisco.quantizers.kmeans_vq import KmeansQuantizer, dead_code_fraction

Array = jax.Array

# PyTorch's default conv/linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
_TORCH_DEFAULT = nn.initializers.variance_scaling(
    1.0 / 3, "fan_in", "uniform", in_axis=(0, 1), out_axis=2
)


def _activation(name: str):
  return gelu if name == "gelu" else jax.nn.relu


def _frames_valid(lengths: Optional[Array], frames: int) -> Optional[Array]:
  if lengths is None:
    return None
  return jnp.arange(frames)[None, :] < lengths[:, None]


class Conv(nn.Module):
  """1-D conv [batch, time, in] -> [batch, frames, out], VALID padding."""

  features: int
  kernel_size: int
  stride: int = 1
  use_bias: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = self.param(
        "kernel",
        nn.with_logical_partitioning(_TORCH_DEFAULT, (None, "conv_in", "conv_out")),
        (self.kernel_size, x.shape[-1], self.features),
    )
    y = strided_conv1d(x.astype(self.dtype), kernel, self.stride)
    if self.use_bias:
      bias = self.param(
          "bias",
          nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",)),
          (self.features,),
      )
      y = y + bias.astype(y.dtype)
    return y


class Wav2Vec1Encoder(nn.Module):
  """waveform [batch, samples] -> z [batch, frames, channels]."""

  config: VqWav2VecConfig

  @nn.compact
  def __call__(self, waveform: Array, valid_samples: Optional[Array] = None) -> Array:
    cfg = self.config
    act = _activation(cfg.activation)
    x, lengths = waveform[..., None], valid_samples
    for i, (channels, kernel, stride) in enumerate(cfg.conv_spec):
      x = Conv(channels, kernel, stride, False, jnp.dtype(cfg.dtype), name=f"conv_{i}")(x)
      if lengths is not None:
        lengths = conv_output_length(lengths, ((channels, kernel, stride),))
      valid = _frames_valid(lengths, x.shape[1])
      x = act(GroupNorm(1, name=f"norm_{i}")(x, valid))
    if cfg.log_compression:
      x = jnp.log1p(jnp.abs(x))
    return x


class ConvAggregator(nn.Module):
  """z_hat [batch, frames, dim] -> context c [batch, frames, agg_dim]; causal: c_t sees
  z_hat_{<=t} only (up to the GroupNorm statistics, which span the utterance, as in the
  reference)."""

  config: VqWav2VecConfig

  @nn.compact
  def __call__(self, x: Array, frame_valid: Optional[Array] = None) -> Array:
    cfg = self.config
    act = _activation(cfg.activation)
    scale = cfg.residual_scale**0.5
    dtype = jnp.dtype(cfg.dtype)
    for i, (channels, kernel, _) in enumerate(cfg.aggregator_spec):
      residual = x
      # Replication padding on the left (the reference's default; `agg_zero_pad` is off).
      padded = jnp.concatenate([jnp.repeat(x[:, :1], kernel - 1, axis=1), x], axis=1)
      y = Conv(channels, kernel, 1, cfg.aggregator_bias, dtype, name=f"conv_{i}")(padded)
      y = act(GroupNorm(1, name=f"norm_{i}")(y, frame_valid))
      if residual.shape[-1] != channels:
        residual = Conv(channels, 1, 1, False, dtype, name=f"residual_proj_{i}")(residual)
      x = (y + residual.astype(y.dtype)) * scale
    return x


def make_quantizer(cfg: VqWav2VecConfig, kmeans_gamma: float = 0.25) -> nn.Module:
  """The quantizer module `cfg.vq_type` names (parameters under "quantizer" in VqWav2Vec)."""
  if cfg.vq_type == "gumbel":
    return GumbelQuantizer(
        cfg.vq_vars,
        cfg.vq_groups,
        cfg.codevector_dim,
        proj_depth=cfg.vq_depth,
        combine_groups=cfg.combine_groups,
    )
  return KmeansQuantizer(cfg.vq_vars, cfg.vq_groups, cfg.combine_groups, kmeans_gamma)


class VqWav2VecOutput(NamedTuple):
  predictions: Array  # [batch, frames, steps, dim] per-step projections of the context
  targets: Array  # [batch, frames, dim] quantized encoder output z_hat
  codes: Array  # [batch, frames, groups] int32
  code_perplexity: Array  # scalar, of the hard codes over valid frames
  prob_perplexity: Array  # scalar, soft (gumbel); equal to code_perplexity for k-means
  dead_code_fraction: Array  # scalar
  quantizer_loss: Array  # k-means: codebook + gamma * commitment; gumbel: G*V - prob_perplexity
  frame_valid: Array  # [batch, frames] bool


class VqWav2Vec(nn.Module):
  """vq-wav2vec: encoder -> quantizer -> aggregator -> per-step projections."""

  config: VqWav2VecConfig
  kmeans_gamma: float = 0.25

  def setup(self):
    cfg = self.config
    self.encoder = Wav2Vec1Encoder(cfg)
    self.quantizer = make_quantizer(cfg, self.kmeans_gamma)
    self.aggregator = ConvAggregator(cfg)
    context_dim = cfg.aggregator_spec[-1][0]
    self.step_projection = self.param(
        "step_projection",
        nn.with_logical_partitioning(_TORCH_DEFAULT, (None, "conv_in", "conv_out")),
        (cfg.prediction_steps, context_dim, cfg.codevector_dim),
    )
    self.step_bias = self.param(
        "step_bias",
        nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",)),
        (cfg.codevector_dim,),
    )

  def quantize(
      self,
      waveform: Array,
      padding_mask: Optional[Array] = None,
      *,
      temperature=1.0,
      gumbel_key: Optional[Array] = None,
  ):
    """(quantizer output, frame_valid [batch, frames]); gumbel_key None: argmax codes."""
    cfg = self.config
    valid_samples = None if padding_mask is None else jnp.sum(~padding_mask, axis=-1)
    z = self.encoder(waveform, valid_samples)
    frame_valid = frame_validity(padding_mask, waveform.shape[-1], cfg, waveform.shape[0])
    if cfg.vq_type == "gumbel":
      q = self.quantizer(z, temperature=temperature, key=gumbel_key, weights=frame_valid)
      if gumbel_key is not None:
        # Codes, their perplexity and usage as the reference reports them: argmax of the
        # logits, without the gumbel noise (noisy codes look diverse even when collapsed).
        hard = self.quantizer(z, temperature=temperature, key=None, weights=frame_valid)
        q = q._replace(codes=hard.codes, code_perplexity=hard.code_perplexity)
    else:
      q = self.quantizer(z, frame_valid)
    return q, frame_valid

  def __call__(
      self,
      waveform: Array,
      padding_mask: Optional[Array] = None,
      *,
      temperature=1.0,
      gumbel_key: Optional[Array] = None,
  ) -> VqWav2VecOutput:
    """waveform: [batch, samples]; padding_mask: [batch, samples] bool (True = pad, at the end);
    temperature: gumbel temperature (ignored by k-means)."""
    cfg = self.config
    q, frame_valid = self.quantize(
        waveform, padding_mask, temperature=temperature, gumbel_key=gumbel_key
    )
    context = self.aggregator(q.quantized, frame_valid)
    kernel = self.step_projection.astype(context.dtype)
    predictions = jnp.einsum("btc,scd->btsd", context, kernel) + self.step_bias
    if cfg.vq_type == "gumbel":
      num_vars = cfg.vq_groups * cfg.vq_vars
      dead = dead_code_fraction(q.codes, cfg.vq_vars, frame_valid)
      extra, prob_ppl = num_vars - q.prob_perplexity, q.prob_perplexity
    else:
      dead, extra, prob_ppl = q.dead_code_fraction, q.loss, q.code_perplexity
    return VqWav2VecOutput(
        predictions.astype(jnp.float32),
        q.quantized.astype(jnp.float32),
        q.codes,
        q.code_perplexity,
        prob_ppl,
        dead,
        extra,
        frame_valid,
    )
