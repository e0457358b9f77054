"""Transformer encoder of wav2vec 2.0 / HuBERT / WavLM, post-LN (BASE) and pre-LN (LARGE) forms.

WavLM is the same encoder with `ModelConfig.relative_position_buckets` on: a gated relative
position bias added to every layer's attention logits (models/relative_position.py).
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator, Optional

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxdisco.models.config import ModelConfig
from jaxdisco.models.layers import LayerNorm, dense, gelu
from jaxdisco.models.positional import ConvPositionalEmbedding
from jaxdisco.models.relative_position import PositionBiasGate, RelativePositionBias
from jaxdisco.models.tpu_attention import pallas_attention, target_platform

Array = jax.Array


def attention_implementation(setting: str, dtype: jnp.dtype, dropout_active: bool) -> str:
  """The attention kernel for ModelConfig.attention ("xla", "cudnn" or "pallas").

  "auto" takes a fused flash kernel where one runs: cuDNN's on a GPU (bfloat16), the Pallas
  kernel on a TPU (`models/tpu_attention.py`), neither with dropout on the attention
  probabilities (they have none); else XLA's softmax(QK^T)V. The platform is the one being
  compiled for (a TPU topology under `jaxdisco plan`), not necessarily this machine's.
  """
  if setting != "auto":
    return setting
  if dropout_active:
    return "xla"
  platform = target_platform()
  if platform == "gpu" and dtype == jnp.bfloat16:
    return "cudnn"
  return "pallas" if platform == "tpu" else "xla"


def cudnn_attention(q: Array, k: Array, v: Array, key_valid: Array, multiple: int = 64) -> Array:
  """cuDNN flash attention over [batch, frames, heads, head_dim] with trailing key padding.

  cuDNN takes padding as lengths (padding is a suffix of every row in jaxdisco) and refuses
  training shapes whose length is not a multiple of its tile (781 frames of a 15.6 s crop are
  refused), so frames are zero-padded to a multiple of `multiple` and cut back afterwards: the
  extra keys lie past every row's length and get no weight.
  """
  t = q.shape[1]
  extra = -t % multiple
  pad = lambda y: jnp.pad(y, ((0, 0), (0, extra), (0, 0), (0, 0)))
  lengths = jnp.sum(key_valid, axis=-1, dtype=jnp.int32)
  out = jax.nn.dot_product_attention(
      pad(q), pad(k), pad(v), key_value_seq_lengths=lengths, implementation="cudnn"
  )
  return out[:, :t]


class SelfAttention(nn.Module):
  num_heads: int
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32
  implementation: str = "auto"

  @nn.compact
  def __call__(
      self, x: Array, key_valid: Array, deterministic: bool, position_bias: Optional[Array] = None
  ) -> Array:
    """x: [batch, frames, dim]; key_valid: [batch, frames] bool (False = padding, at the end);
    position_bias: WavLM's ungated relative position bias [heads, frames, frames], gated here
    and added to the scaled logits before the padding mask (as transformers does), or None."""
    b, t, dim = x.shape
    head_dim = dim // self.num_heads
    split = lambda y: y.reshape(b, t, self.num_heads, head_dim)
    q = split(dense(dim, ("embed", "heads"), "query", dtype=self.dtype)(x))
    k = split(dense(dim, ("embed", "heads"), "key", dtype=self.dtype)(x))
    v = split(dense(dim, ("embed", "heads"), "value", dtype=self.dtype)(x))
    dropout_active = not deterministic and self.dropout > 0.0
    project_out = lambda y: dense(dim, ("heads", "embed"), "out", dtype=self.dtype)(
        y.reshape(b, t, dim)
    )
    kernel = attention_implementation(self.implementation, jnp.dtype(self.dtype), dropout_active)
    bias = None
    if position_bias is not None:
      bias = PositionBiasGate(self.num_heads, name="position_gate")(x, position_bias)
      kernel = "xla"  # The fused kernels used here take no additive bias.
    if kernel == "pallas":
      return project_out(pallas_attention(q, k, v, key_valid))
    if kernel == "cudnn":
      try:
        return project_out(cudnn_attention(q, k, v, key_valid))
      except NotImplementedError:
        if self.implementation == "cudnn":
          raise
        # "auto": a shape or version cuDNN's flash kernel refuses at trace time takes XLA's.
    mask = key_valid[:, None, None, :]  # [batch, 1 (heads), 1 (queries), keys]
    if not dropout_active:
      return project_out(
          jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask, implementation="xla")
      )
    # dot_product_attention has no dropout; the reference drops attention probabilities.
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) * head_dim**-0.5
    if bias is not None:
      logits = logits + bias
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1)
    probs = nn.Dropout(self.dropout)(probs, deterministic=False).astype(v.dtype)
    return project_out(jnp.einsum("bhqk,bkhd->bqhd", probs, v))


class EncoderLayer(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(
      self, x: Array, key_valid: Array, deterministic: bool, position_bias: Optional[Array] = None
  ) -> Array:
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    attention = SelfAttention(
        cfg.num_heads, cfg.attention_dropout, dtype, cfg.attention, name="attention"
    )
    attn_norm = LayerNorm(cfg.layer_norm_eps, name="attention_norm")
    ffn_norm = LayerNorm(cfg.layer_norm_eps, name="ffn_norm")
    drop = lambda y: nn.Dropout(cfg.dropout)(y, deterministic=deterministic)

    def feed_forward(y):
      y = gelu(dense(cfg.ffn_dim, ("embed", "mlp"), "ffn_in", dtype=dtype)(y))
      y = nn.Dropout(cfg.activation_dropout)(y, deterministic=deterministic)
      return drop(dense(cfg.embed_dim, ("mlp", "embed"), "ffn_out", dtype=dtype)(y))

    if cfg.layer_norm_first:
      x = x + drop(attention(attn_norm(x), key_valid, deterministic, position_bias))
      return x + feed_forward(ffn_norm(x))
    x = attn_norm(x + drop(attention(x, key_valid, deterministic, position_bias)))
    return ffn_norm(x + feed_forward(x))


# Rematerialisation of each EncoderLayer in the backward pass. A training-time choice, not part
# of ModelConfig (it changes no parameter, so checkpoints stay compatible across it): the trainer
# sets it around tracing with `remat_policy(...)`. Parameter names are unchanged by remat.
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
}
_REMAT = contextvars.ContextVar("jaxdisco_remat", default="none")


@contextlib.contextmanager
def remat_policy(name: str) -> Iterator[None]:
  if name not in REMAT_POLICIES:
    raise ValueError(f"train.remat: expected one of {sorted(REMAT_POLICIES)}, got {name!r}")
  token = _REMAT.set(name)
  try:
    yield
  finally:
    _REMAT.reset(token)


def _layer_class():
  name = _REMAT.get()
  if name == "none":
    return EncoderLayer
  # `deterministic` (argument 3, counting self) is a Python bool: static under remat.
  return nn.remat(EncoderLayer, policy=REMAT_POLICIES[name], static_argnums=(3,))


class TransformerEncoder(nn.Module):
  """Positional conv + L layers.

  Returns (output [batch, frames, dim], hidden_states): hidden_states has L + 1 entries in the
  transformers 5.x `output_hidden_states` convention (fairseq's layer outputs too):
    * entry 0 is the input of layer 0: after the positional conv is added and, for post-LN
      models, after the encoder LayerNorm; for pre-LN models no LayerNorm has been applied yet;
    * entry i (1 <= i <= L) is the output of layer i-1; for pre-LN models the raw residual
      stream, so entry L is taken *before* the final encoder LayerNorm;
    * output is the encoder output: entry L, for pre-LN models after the final LayerNorm.
  transformers 4.x differs in one place: its entry L of a pre-LN model is the output (after the
  final LayerNorm); `hidden_states.hidden_states_in_convention` gives either.
  """

  config: ModelConfig

  @nn.compact
  def __call__(
      self, x: Array, frame_valid: Array, deterministic: bool, num_layers: Optional[int] = None
  ) -> tuple[Array, list[Array]]:
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    # Activations: batch split over the batch mesh axes (a no-op without a mesh).
    constrain = lambda y: nn.with_logical_constraint(y, ("batch", "frames", "activation_embed"))
    x = constrain(jnp.where(frame_valid[..., None], x, 0))  # Padding must not leak into the conv.
    # The grouped positional conv sees the batch split over every mesh axis ("conv_batch"):
    # with rows replicated over tensor ranks, XLA's SPMD partitioner sums the grouped conv's
    # weight gradient over those ranks too (gradients x tensor size; jax 0.10, CPU).
    conv_in = nn.with_logical_constraint(x, ("conv_batch", "frames", "activation_embed"))
    x = x + constrain(
        ConvPositionalEmbedding(cfg.pos_conv_kernel, cfg.pos_conv_groups, dtype, name="pos_conv")(
            conv_in
        ).astype(x.dtype)
    )
    final_norm = LayerNorm(cfg.layer_norm_eps, name="norm")
    if not cfg.layer_norm_first:
      x = final_norm(x)
    x = nn.Dropout(cfg.dropout)(x, deterministic=deterministic)
    hidden_states = []
    position_bias = None
    if cfg.relative_position_buckets:
      # One table for the whole encoder: transformers keeps it in layer 0 and hands layer 0's
      # ungated bias on to the others (each gates it itself), which is the same function.
      # Held here it also survives LayerDrop skipping layer 0.
      position_bias = RelativePositionBias(
          cfg.num_heads,
          cfg.relative_position_buckets,
          cfg.relative_position_max_distance,
          name="relative_position",
      )(x.shape[1])
    layer_class = _layer_class()
    run_layers = cfg.num_layers if num_layers is None else num_layers
    for i in range(cfg.num_layers):
      if i >= run_layers:
        break
      hidden_states.append(x)
      layer = layer_class(cfg, name=f"layer_{i}")
      layer_out = constrain(layer(x, frame_valid, deterministic, position_bias))
      if not deterministic and cfg.layerdrop > 0.0:
        # LayerDrop: the whole layer is skipped for the batch with probability `layerdrop`.
        keep = jax.random.uniform(self.make_rng("dropout")) >= cfg.layerdrop
        layer_out = jnp.where(keep, layer_out, x)
      x = layer_out
    hidden_states.append(x)
    if cfg.layer_norm_first and run_layers == cfg.num_layers:
      x = final_norm(x)
    return x, hidden_states
