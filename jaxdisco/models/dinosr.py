"""DinoSR pretraining model (Liu et al., arXiv 2305.10005): a student wav2vec 2.0 backbone
predicting, at masked frames, the online-clustered codes of an EMA teacher's top layers.

Top-level parameters:
  * `backbone`: the student (`Wav2Vec2Backbone`), the only part the optimizer trains besides
    `heads`;
  * `teacher`: the teacher's Transformer encoder, the same tree as `backbone/encoder`. It has no
    conv encoder of its own: it reads the student's pre-mask, pre-dropout features (conv encoder
    -> LayerNorm -> projection), as the reference's `ema_transformer_only` teacher does;
  * `heads`: one Dense(codebook_size) per codebook on the student's last hidden state;
  * `codebooks` [K, V, D] float32: per-code running *sums* of the teacher features assigned to
    the code, and `codebook_counts` [K, V] float32: their running counts (init 1). A codeword
    is sums / counts;
  * `codebook_idle` [K, V] float32: updates since each code was last assigned a frame (the
    dead-code rule of `objectives/dinosr.py`; the reference has no such state).
`teacher`, `codebooks`, `codebook_counts` and `codebook_idle` are never touched by the
optimizer (`Method.frozen_params`); `objectives.dinosr.make_param_update` moves them after
each update.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxdisco.models.config import ModelConfig
from jaxdisco.models.layers import dense
from jaxdisco.models.transformer import TransformerEncoder
from jaxdisco.models.wav2vec2 import Wav2Vec2Backbone

Array = jax.Array

# The top-level parameters the optimizer never updates (see the module docstring).
FROZEN_PARAMS = ("teacher", "codebooks", "codebook_counts", "codebook_idle")
# The student's modules before the Transformer: frozen with the teacher at
# `objective.freeze_teacher_step` (the reference's `freeze_pre_enc_modules`).
PRE_ENCODER_MODULES = ("feature_encoder", "feature_norm", "feature_projection")


def codebook_init(
    key: Array, shape: tuple[int, int, int], dtype=jnp.float32, scale: float = 1.0
) -> Array:
  """The reference's `normal_init_codebook: false` codebooks: N(0, 1) of shape [K, D, V],
  instance-normalised over V (zero mean, unit biased variance per (k, d), eps 1e-5, as
  `F.instance_norm`), transposed to [K, V, D], times `scale` (1: the reference; see
  `objective.codebook_init_scale` in `methods/dinosr.py` for when to shrink it)."""
  k, v, d = shape
  x = jax.random.normal(key, (k, d, v), jnp.float32)
  mean = x.mean(-1, keepdims=True)
  var = jnp.square(x - mean).mean(-1, keepdims=True)
  x = (x - mean) * jax.lax.rsqrt(var + 1e-5)
  return (scale * jnp.swapaxes(x, 1, 2)).astype(dtype)


class DinoSROutput(NamedTuple):
  logits: Array  # [K, batch, frames, V] float32: head k on the student's last hidden state
  targets: Array  # [K, batch, frames, D] float32: the teacher's top K layers (no gradient)
  frame_valid: Array  # [batch, frames] bool


class DinoSRForPretraining(nn.Module):
  config: ModelConfig
  num_codebooks: int = 8
  codebook_size: int = 256
  codebook_init_scale: float = 1.0

  @nn.compact
  def __call__(
      self,
      waveform: Array,
      padding_mask: Optional[Array],
      mask: Optional[Array],
      *,
      deterministic: bool = True,
  ) -> DinoSROutput:
    cfg = self.config
    k, v, d = self.num_codebooks, self.codebook_size, cfg.embed_dim
    backbone = Wav2Vec2Backbone(cfg, name="backbone")
    out = backbone(waveform, padding_mask, mask, deterministic=deterministic)
    heads = _Heads(k, v, jnp.dtype(cfg.dtype), name="heads")
    logits = heads(out.last_hidden_state)

    # The teacher's input: the student's own projected features, before dropout and masking
    # (the backbone's `feature_projection` applied to its post-LayerNorm `features`), without
    # gradient. The projection is re-applied from the student's parameters rather than
    # recomputing the conv encoder.
    projection = nn.meta.unbox(backbone.variables["params"]["feature_projection"])
    teacher_in = nn.Dense(
        d, dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.float32, parent=None
    ).apply({"params": projection}, out.features)
    teacher_in = jax.lax.stop_gradient(teacher_in)
    # Eval mode: no dropout, no LayerDrop, whatever the student runs.
    _, hidden = TransformerEncoder(cfg, name="teacher")(teacher_in, out.frame_valid, True)
    targets = jnp.stack([h.astype(jnp.float32) for h in hidden[len(hidden) - k :]])
    targets = jax.lax.stop_gradient(targets)

    # Declared here so that `init` makes them; the loss reads them from the params.
    self.param(
        "codebooks",
        nn.with_logical_partitioning(
            functools.partial(codebook_init, scale=self.codebook_init_scale),
            (None, "vocab", "embed"),
        ),
        (k, v, d),
    )
    self.param(
        "codebook_counts",
        nn.with_logical_partitioning(nn.initializers.ones, (None, "vocab")),
        (k, v),
    )
    self.param(
        "codebook_idle",
        nn.with_logical_partitioning(nn.initializers.zeros, (None, "vocab")),
        (k, v),
    )
    return DinoSROutput(logits, targets, out.frame_valid)


class _Heads(nn.Module):
  num_codebooks: int
  codebook_size: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    return jnp.stack(
        [
            dense(self.codebook_size, ("embed", "vocab"), f"head_{i}", dtype=self.dtype)(x).astype(
                jnp.float32
            )
            for i in range(self.num_codebooks)
        ]
    )


def copy_student_to_teacher(boxed: dict) -> dict:
  """`Method.finish_init`: the teacher starts as an exact copy of the student's encoder (the
  boxed subtree, partitioning included)."""
  params = dict(boxed["params"])
  params["teacher"] = params["backbone"]["encoder"]
  return {**boxed, "params": params}


def teacher_as_backbone(params: dict) -> dict:
  """`Method.inference_params`: the teacher's encoder on the student's pre-encoder (conv
  encoder, feature LayerNorm, projection, mask embedding) as `backbone`, plus the codebooks
  (what the `dinosr` units read). The student's Transformer and the heads are dropped."""
  p = params["params"]
  backbone = dict(p["backbone"])
  backbone["encoder"] = p["teacher"]
  return {
      "params": {
          "backbone": backbone,
          "codebooks": p["codebooks"],
          "codebook_counts": p["codebook_counts"],
      }
  }
