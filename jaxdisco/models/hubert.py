"""HuBERT pretraining model: the wav2vec 2.0 backbone predicting k-means labels.

Per label set s (e.g. one k-means codebook), masked frames are scored against that set's
learned label embeddings. The reference's BASE/LARGE recipes untie the final projection:
one final_dim slice of the projection per label set.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxdisco.models.config import ModelConfig
from jaxdisco.models.layers import dense
from jaxdisco.models.wav2vec2 import Wav2Vec2Backbone

Array = jax.Array


class HubertOutput(NamedTuple):
  projections: tuple  # per label set: [batch, frames, final_dim]
  label_embeddings: tuple  # per label set: [num_classes, final_dim]
  feature_penalty: Array
  frame_valid: Array  # [batch, frames]


class HubertForPretraining(nn.Module):
  config: ModelConfig
  num_classes: Sequence[int] = (500,)
  untie_final_proj: bool = True

  def setup(self):
    cfg = self.config
    self.backbone = Wav2Vec2Backbone(cfg)
    sets = len(self.num_classes) if self.untie_final_proj else 1
    self.final_proj = dense(cfg.final_dim * sets, ("embed", "final"))
    self.label_embeddings = self.param(
        "label_embeddings",
        nn.with_logical_partitioning(nn.initializers.uniform(1.0), ("vocab", "final")),
        (sum(self.num_classes), cfg.final_dim),
    )

  def __call__(
      self,
      waveform: Array,
      padding_mask: Optional[Array],
      mask: Optional[Array],
      *,
      deterministic: bool = True,
  ) -> HubertOutput:
    out = self.backbone(waveform, padding_mask, mask, deterministic=deterministic)
    proj = self.final_proj(out.last_hidden_state).astype(jnp.float32)
    if self.untie_final_proj:
      projections = tuple(jnp.split(proj, len(self.num_classes), axis=-1))
    else:
      projections = (proj,) * len(self.num_classes)
    # Split points from the static class counts in plain Python: a jnp cumsum is a tracer under
    # jit and cannot give split indices (jit failed with two or more label sets).
    bounds = [sum(self.num_classes[: i + 1]) for i in range(len(self.num_classes) - 1)]
    embeddings = tuple(jnp.split(self.label_embeddings, bounds, axis=0))
    return HubertOutput(projections, embeddings, out.feature_penalty, out.frame_valid)

  def extract_features(self, waveform, padding_mask=None, num_layers=None):
    return self.backbone(waveform, padding_mask, None, deterministic=True, num_layers=num_layers)
