"""Typed, hashable configuration of the wav2vec 2.0 / HuBERT backbone.

The trainer's configs are `ml_collections.ConfigDict`s (overridable from the command line);
`ModelConfig.from_dict` turns their `model` block into this frozen dataclass so that modules get
a hashable, validated object and a misspelt field fails loudly instead of being ignored.
"""

from __future__ import annotations

import ast
import dataclasses
from typing import Any, Mapping

from jaxdisco.errors import ConfigError

ConvSpec = tuple[tuple[int, int, int], ...]

DEFAULT_CONV_LAYERS = "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2"

# The log-mel front end (`model.frontend = "log_mel"`, `jaxdisco/models/log_mel.py`): Kaldi
# frames of 25 ms every 10 ms at 16 kHz (`snip_edges`), i.e. a stage (bins, 400, 160) in front
# of `conv_layers` for every frame count and stride.
MEL_WINDOW = 400
MEL_HOP = 160
FRONTENDS = ("waveform", "log_mel")


def parse_conv_layers(spec: str | ConvSpec) -> ConvSpec:
  """Parses the reference's layer spec string, e.g. "[(512,10,5)] + [(512,3,2)]*4".

  Only list/tuple literals, `+` and `*` are accepted (no eval of arbitrary code).
  Returns ((channels, kernel, stride), ...).
  """
  if not isinstance(spec, str):
    layers = tuple(tuple(int(v) for v in layer) for layer in spec)
  else:
    layers = _eval_spec(ast.parse(spec, mode="eval").body, spec)
    layers = tuple(tuple(int(v) for v in layer) for layer in layers)
  if not layers or any(len(layer) != 3 or min(layer) < 1 for layer in layers):
    raise ConfigError(
        f"model.conv_layers: expected a non-empty list of (channels, kernel, stride) with "
        f"positive integers, got {spec!r}"
    )
  return layers


def _eval_spec(node: ast.AST, text: str) -> Any:
  if isinstance(node, ast.Constant) and isinstance(node.value, int):
    return node.value
  if isinstance(node, (ast.List, ast.Tuple)):
    items = [_eval_spec(e, text) for e in node.elts]
    return items if isinstance(node, ast.List) else tuple(items)
  if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
    left, right = _eval_spec(node.left, text), _eval_spec(node.right, text)
    return left + right if isinstance(node.op, ast.Add) else left * right
  raise ConfigError(
      f"model.conv_layers: unsupported expression in {text!r}; use lists of "
      "(channels, kernel, stride) tuples combined with + and *"
  )


# Fields that choose how the model is computed, not what it holds or computes: a checkpoint
# or a finished HuBERT-loop stage stays valid across them (and across their absence in ones
# written before they existed).
COMPUTE_ONLY_FIELDS = ("attention",)


def without_compute_only(model_fields: Mapping[str, Any]) -> dict[str, Any]:
  return {k: v for k, v in model_fields.items() if k not in COMPUTE_ONLY_FIELDS}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Backbone hyperparameters; defaults are wav2vec 2.0 BASE."""

  # Convolutional waveform encoder.
  conv_layers: str = DEFAULT_CONV_LAYERS
  extractor_mode: str = (
      "default"  # "default": group norm on layer 0 only; "layer_norm": every layer.
  )
  conv_bias: bool = False
  feature_grad_mult: float = 0.1  # Scales gradients flowing into the conv encoder.
  # Transformer.
  embed_dim: int = 768
  num_layers: int = 12
  num_heads: int = 12
  ffn_dim: int = 3072
  layer_norm_first: bool = False  # False: post-LN (BASE); True: pre-LN (LARGE).
  pos_conv_kernel: int = 128
  pos_conv_groups: int = 16
  layer_norm_eps: float = 1e-5
  # Gated relative position bias of WavLM (see models/relative_position.py): the number of
  # learned bias buckets per head, 0 = none (wav2vec 2.0, HuBERT). Half are for keys after
  # the query, half for keys at or before it; offsets below a quarter of the count get a
  # bucket each, larger ones log-spaced buckets up to `relative_position_max_distance`
  # frames, beyond which they share the last. Published WavLM: 320 and 800.
  relative_position_buckets: int = 0
  relative_position_max_distance: int = 800
  # Regularisation.
  dropout: float = 0.1
  attention_dropout: float = 0.1
  activation_dropout: float = 0.0
  dropout_input: float = 0.1
  dropout_features: float = 0.1
  layerdrop: float = 0.05
  # Pretraining heads (wav2vec 2.0).
  final_dim: int = 256
  latent_vars: int = 320  # V entries per codebook group.
  latent_groups: int = 2  # G groups.
  latent_dim: int = 0  # Total codevector size; 0 means final_dim.
  # Std of the quantizer's logit projection init. The reference's 1.0 makes the per-frame
  # softmax nearly one-hot at the start, so the straight-through gradient is ~0 until the
  # diversity loss flattens it: a long initial plateau that large batches sit out. Smaller
  # values shorten it (the demo uses one); pretrained checkpoints are unaffected.
  quantizer_init_std: float = 1.0
  # HuBERT-only heads (ignored by wav2vec 2.0).
  feature_projection_layer_norm: bool = True
  # Front end: "waveform" (the conv encoder on raw samples) or "log_mel" (`mel_bins` log-mel
  # filterbanks at 10 ms, normalised per utterance and bin, then `conv_layers` as a conv
  # subsampling over mel frames: e.g. one stage (D, 4, 4) = 4 stacked frames projected, 40 ms).
  frontend: str = "waveform"
  mel_bins: int = 80
  # > 0 (log-mel front end only): masked frames' input features are replaced by N(0, std^2)
  # noise before the conv stages (BEST-RQ) instead of the learned mask embedding after them.
  mask_noise_std: float = 0.0
  # Numerics.
  dtype: str = "float32"  # Compute dtype of matmuls; norms, gumbel softmax and losses stay fp32.
  # Attention kernel: "xla" (any backend), "cudnn" (fused flash attention: GPU, bfloat16, no
  # attention dropout), "pallas" (Pallas flash attention on TPU, no attention dropout) or
  # "auto" (the fused kernel of the platform where it applies, else xla). Changes no parameter.
  attention: str = "auto"

  def __post_init__(self):
    parse_conv_layers(self.conv_layers)
    if self.extractor_mode not in ("default", "layer_norm"):
      raise ConfigError(
          f"model.extractor_mode: expected 'default' or 'layer_norm', got "
          f"{self.extractor_mode!r}"
      )
    if self.embed_dim % self.num_heads:
      raise ConfigError(
          f"model.embed_dim ({self.embed_dim}) must be divisible by "
          f"model.num_heads ({self.num_heads})"
      )
    if self.embed_dim % self.pos_conv_groups:
      raise ConfigError(
          f"model.embed_dim ({self.embed_dim}) must be divisible by "
          f"model.pos_conv_groups ({self.pos_conv_groups})"
      )
    if self.codevector_dim % self.latent_groups:
      raise ConfigError(
          f"model.latent_dim/final_dim ({self.codevector_dim}) must be divisible "
          f"by model.latent_groups ({self.latent_groups})"
      )
    for name in (
        "dropout",
        "attention_dropout",
        "activation_dropout",
        "dropout_input",
        "dropout_features",
        "layerdrop",
    ):
      value = getattr(self, name)
      if not 0.0 <= value < 1.0:
        raise ConfigError(f"model.{name}: expected a probability in [0, 1), got {value}")
    if self.relative_position_buckets and (
        self.relative_position_buckets < 4
        or self.relative_position_max_distance <= self.relative_position_buckets // 4
    ):
      raise ConfigError(
          "model.relative_position_buckets: expected 0 (off) or at least 4, with "
          "model.relative_position_max_distance above a quarter of it (the exact range); got "
          f"{self.relative_position_buckets} and {self.relative_position_max_distance}"
      )
    if self.frontend not in FRONTENDS:
      raise ConfigError(f"model.frontend: expected one of {FRONTENDS}, got {self.frontend!r}")
    if self.mel_bins < 1:
      raise ConfigError(f"model.mel_bins: expected >= 1, got {self.mel_bins}")
    if self.mask_noise_std < 0 or (self.mask_noise_std > 0 and self.frontend != "log_mel"):
      raise ConfigError(
          f"model.mask_noise_std: expected 0 (learned mask embedding) or > 0 with "
          f"model.frontend='log_mel' (noise on masked log-mel frames), got "
          f"{self.mask_noise_std} with model.frontend={self.frontend!r}"
      )
    if self.dtype not in ("float32", "bfloat16"):
      raise ConfigError(f"model.dtype: expected 'float32' or 'bfloat16', got {self.dtype!r}")
    if self.attention not in ("auto", "xla", "cudnn", "pallas"):
      raise ConfigError(
          f"model.attention: expected 'auto', 'xla', 'cudnn' or 'pallas', got {self.attention!r}"
      )
    if self.attention == "pallas" and (self.attention_dropout or self.relative_position_buckets):
      raise ConfigError(
          "model.attention='pallas' has no attention dropout and takes no position bias: it needs "
          f"model.attention_dropout=0 and model.relative_position_buckets=0 (got "
          f"{self.attention_dropout}, {self.relative_position_buckets}); use 'auto'"
      )
    if self.attention == "cudnn" and (self.dtype != "bfloat16" or self.attention_dropout):
      raise ConfigError(
          "model.attention='cudnn' needs model.dtype='bfloat16' and model.attention_dropout=0 "
          f"(got {self.dtype!r}, {self.attention_dropout}); use 'auto' to fall back to xla"
      )
    if self.attention == "cudnn" and self.relative_position_buckets:
      raise ConfigError(
          "model.attention='cudnn' takes no attention bias and "
          "model.relative_position_buckets adds one; use 'auto' or 'xla'"
      )

  @property
  def conv_spec(self) -> ConvSpec:
    return parse_conv_layers(self.conv_layers)

  @property
  def geometry_spec(self) -> ConvSpec:
    """The stages that decide frame counts and strides, in samples: `conv_spec`, behind the
    log-mel framing (bins, 400, 160) for the log-mel front end. Pass this, not `conv_spec`, to
    `conv_output_length` / `valid_frame_lengths`."""
    if self.frontend == "log_mel":
      return ((self.mel_bins, MEL_WINDOW, MEL_HOP),) + self.conv_spec
    return self.conv_spec

  @property
  def conv_dim(self) -> int:
    return self.conv_spec[-1][0]

  @property
  def codevector_dim(self) -> int:
    return self.latent_dim or self.final_dim

  @property
  def frame_stride(self) -> int:
    """Samples per frame (the log-mel hop times the conv strides for the log-mel front end)."""
    stride = 1
    for _, _, s in self.geometry_spec:
      stride *= s
    return stride

  def num_frames(self, num_samples: int) -> int:
    """Frames the front end produces from `num_samples` samples (static)."""
    return int(conv_output_length(num_samples, self.geometry_spec))

  @classmethod
  def from_dict(cls, values: Mapping[str, Any]) -> "ModelConfig":
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ConfigError(f"model: unknown field(s) {unknown}; known fields: {sorted(known)}")
    return cls(**dict(values))

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def conv_output_length(num_samples, conv_spec: ConvSpec):
  """Output frames of the conv stack for inputs of `num_samples` (int or int array)."""
  length = num_samples
  for _, kernel, stride in conv_spec:
    length = (length - kernel) // stride + 1
  return length


def valid_frame_lengths(padding_mask, conv_spec: ConvSpec):
  """Sample padding mask [batch, samples] (True = pad, at the end) -> valid frames [batch].
  `conv_spec`: the model's `geometry_spec` (which includes the log-mel framing)."""
  import jax.numpy as jnp  # Local: the config module stays importable without touching jax.

  return conv_output_length(jnp.sum(~padding_mask, axis=-1), conv_spec)
