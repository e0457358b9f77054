"""wav2vec 2.0 backbone and pretraining model (pure Linen modules: params in, arrays out)."""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxdisco.models.config import ModelConfig, valid_frame_lengths
from jaxdisco.models.feature_encoder import ConvFeatureEncoder
from jaxdisco.models.layers import LayerNorm, dense, scale_gradient
from jaxdisco.models.transformer import TransformerEncoder
from jaxdisco.quantizers.gumbel import GumbelQuantizer

Array = jax.Array


def frame_validity(
    padding_mask: Optional[Array], num_samples: int, config: ModelConfig, batch: int
) -> Array:
  """Sample-level padding mask [batch, samples] (True = pad) -> frame validity [batch, frames].

  A frame is valid when it lies within the conv output length of the utterance's valid
  samples (padding is assumed to be at the end, as every batcher here produces it).
  """
  frames = config.num_frames(num_samples)
  if padding_mask is None:
    return jnp.ones((batch, frames), bool)
  frame_lengths = valid_frame_lengths(padding_mask, config.geometry_spec)
  return jnp.arange(frames)[None, :] < frame_lengths[:, None]


class BackboneOutput(NamedTuple):
  last_hidden_state: Array  # [batch, frames, embed_dim]
  hidden_states: tuple  # L + 1 entries of [batch, frames, embed_dim] (see TransformerEncoder)
  features: Array  # post-LayerNorm conv features [batch, frames, conv_dim] (quantizer input)
  feature_penalty: Array  # scalar mean(conv_features**2), before the LayerNorm
  frame_valid: Array  # [batch, frames] bool


class Wav2Vec2Backbone(nn.Module):
  """Conv encoder -> LayerNorm -> projection -> span masking -> Transformer.

  With `model.frontend = "log_mel"` the conv stages run over normalised log-mel frames
  (`jaxdisco/models/log_mel.py`) instead of samples; with `model.mask_noise_std > 0` masked
  frames are not replaced by the mask embedding but their log-mel input frames by N(0, std^2)
  noise drawn from `noise_key` (BEST-RQ), see `log_mel.mel_frame_mask`.
  """

  config: ModelConfig

  @nn.compact
  def __call__(
      self,
      waveform: Array,
      padding_mask: Optional[Array] = None,
      mask: Optional[Array] = None,
      *,
      deterministic: bool = True,
      num_layers: Optional[int] = None,
      noise_key: Optional[Array] = None,
  ) -> BackboneOutput:
    """waveform: [batch, samples] float32; padding_mask: [batch, samples] bool (True = pad);
    mask: [batch, frames] bool, frames replaced by the learned mask embedding (or, with
    model.mask_noise_std > 0, their log-mel input by noise from `noise_key`)."""
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    valid_lengths = None if padding_mask is None else jnp.sum(~padding_mask, axis=-1)
    noise_masking = cfg.mask_noise_std > 0
    encoder_input = waveform
    if cfg.frontend == "log_mel":
      from jaxdisco.models import log_mel  # pylint: disable=g-import-not-at-top

      encoder_input, mel_lengths = log_mel.normalized_log_mel(waveform, padding_mask, cfg.mel_bins)
      valid_lengths = None if padding_mask is None else mel_lengths
      if mask is not None and noise_masking:
        if noise_key is None:
          raise ValueError("model.mask_noise_std > 0: pass noise_key with a mask")
        mel_mask = log_mel.mel_frame_mask(
            mask, encoder_input.shape[1], cfg.frame_stride // log_mel.MEL_HOP
        )
        noise = cfg.mask_noise_std * jax.random.normal(noise_key, encoder_input.shape)
        encoder_input = jnp.where(mel_mask[..., None], noise, encoder_input)
    features = ConvFeatureEncoder(
        cfg.conv_spec, cfg.extractor_mode, cfg.conv_bias, dtype, name="feature_encoder"
    )(encoder_input, valid_lengths)
    features = scale_gradient(features, cfg.feature_grad_mult)
    feature_penalty = jnp.mean(jnp.square(features.astype(jnp.float32)))
    if cfg.feature_projection_layer_norm:
      features = LayerNorm(cfg.layer_norm_eps, axis_name="conv_out", name="feature_norm")(features)
    x = dense(cfg.embed_dim, ("conv_out", "embed"), "feature_projection", dtype=dtype)(features)
    x = nn.Dropout(cfg.dropout_input)(x, deterministic=deterministic)
    if not noise_masking:  # Noise masking (log-mel front end) has no mask embedding.
      mask_embedding = self.param(
          "mask_embedding",
          nn.with_logical_partitioning(nn.initializers.uniform(1.0), ("embed",)),
          (cfg.embed_dim,),
      )
      if mask is not None:
        x = jnp.where(mask[..., None], mask_embedding.astype(x.dtype), x)
    frame_valid = frame_validity(padding_mask, waveform.shape[-1], cfg, waveform.shape[0])
    out, hidden = TransformerEncoder(cfg, name="encoder")(x, frame_valid, deterministic, num_layers)
    return BackboneOutput(out, tuple(hidden), features, feature_penalty, frame_valid)


class PretrainOutput(NamedTuple):
  context: Array  # final_proj(transformer output) [batch, frames, final_dim]
  targets: Array  # project_q(quantized unmasked features) [batch, frames, final_dim]
  codes: Array  # [batch, frames, groups] int32
  prob_perplexity: Array
  code_perplexity: Array
  feature_penalty: Array
  frame_valid: Array


class Wav2Vec2ForPretraining(nn.Module):
  config: ModelConfig

  def setup(self):
    cfg = self.config
    self.backbone = Wav2Vec2Backbone(cfg)
    self.quantizer = GumbelQuantizer(
        cfg.latent_vars, cfg.latent_groups, cfg.codevector_dim, cfg.quantizer_init_std
    )
    self.feature_dropout = nn.Dropout(cfg.dropout_features)
    self.project_q = dense(cfg.final_dim, ("codevector", "final"))
    self.final_proj = dense(cfg.final_dim, ("embed", "final"))

  def __call__(
      self,
      waveform: Array,
      padding_mask: Optional[Array],
      mask: Array,
      *,
      temperature,
      deterministic: bool = True,
      gumbel_key: Optional[Array] = None,
  ) -> PretrainOutput:
    """mask: [batch, frames] bool span mask; gumbel_key None = deterministic argmax codes."""
    cfg = self.config
    out = self.backbone(waveform, padding_mask, mask, deterministic=deterministic)
    features = self.feature_dropout(out.features, deterministic=deterministic)
    weights = mask & out.frame_valid
    q = self.quantizer(features, temperature=temperature, key=gumbel_key, weights=weights)
    targets = self.project_q(q.quantized)
    context = self.final_proj(out.last_hidden_state)
    return PretrainOutput(
        context.astype(jnp.float32),
        targets.astype(jnp.float32),
        q.codes,
        q.prob_perplexity,
        q.code_perplexity,
        out.feature_penalty,
        out.frame_valid,
    )

  def extract_features(self, waveform, padding_mask=None, num_layers=None):
    return self.backbone(waveform, padding_mask, None, deterministic=True, num_layers=num_layers)
