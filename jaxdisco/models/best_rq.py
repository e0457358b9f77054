"""BEST-RQ pretraining model: the wav2vec 2.0 backbone (log-mel front end or conv waveform
encoder), one softmax head per codebook, and the frozen random-projection quantizer that makes
the targets from the unmasked input (`jaxdisco/quantizers/random_projection.py`)."""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxdisco.models import log_mel
from jaxdisco.models.config import ModelConfig
from jaxdisco.models.layers import dense
from jaxdisco.models.wav2vec2 import Wav2Vec2Backbone
from jaxdisco.quantizers.random_projection import RandomProjectionQuantizer

Array = jax.Array


class BestRqOutput(NamedTuple):
  logits: Array  # [batch, frames, codebooks, vocab] float32
  targets: Array  # [batch, frames, codebooks] int32
  frame_valid: Array  # [batch, frames]: valid frames with a whole target stack


def quantizer_targets(
    quantizer: nn.Module, config: ModelConfig, stack: int, waveform, padding_mask, num_frames: int
):
  """(ids [batch, frames, codebooks], valid [batch, frames]) of the unmasked audio."""
  mel, lengths = log_mel.normalized_log_mel(waveform, padding_mask, config.mel_bins)
  stacked, valid = stack_targets(mel, lengths, stack, num_frames)
  return quantizer(stacked), valid


def stack_targets(mel, lengths, stack: int, num_frames: int):
  return log_mel.stack_frames(jax.lax.stop_gradient(mel), lengths, stack, num_frames)


class BestRqForPretraining(nn.Module):
  config: ModelConfig
  vocab: int = 8192
  code_dim: int = 16
  num_codebooks: int = 1
  stack_frames: int = 4  # Log-mel frames per encoder frame (encoder stride / 160 samples).

  def setup(self):
    cfg = self.config
    self.backbone = Wav2Vec2Backbone(cfg)
    self.quantizer = RandomProjectionQuantizer(
        self.stack_frames * cfg.mel_bins, self.vocab, self.code_dim, self.num_codebooks
    )
    self.heads = dense(self.num_codebooks * self.vocab, ("embed", "vocab"))

  def __call__(
      self,
      waveform: Array,
      padding_mask: Optional[Array],
      mask: Optional[Array],
      *,
      deterministic: bool = True,
      noise_key: Optional[Array] = None,
  ) -> BestRqOutput:
    out = self.backbone(
        waveform, padding_mask, mask, deterministic=deterministic, noise_key=noise_key
    )
    batch, frames = out.frame_valid.shape
    targets, target_valid = quantizer_targets(
        self.quantizer, self.config, self.stack_frames, waveform, padding_mask, frames
    )
    logits = self.heads(out.last_hidden_state).astype(jnp.float32)
    logits = logits.reshape(batch, frames, self.num_codebooks, self.vocab)
    return BestRqOutput(logits, targets, out.frame_valid & target_valid)

  def extract_features(self, waveform, padding_mask=None, num_layers=None):
    return self.backbone(waveform, padding_mask, None, deterministic=True, num_layers=num_layers)
