"""Typed, hashable configuration of vq-wav2vec (wav2vec 1.0 encoder/aggregator + quantizer).

Defaults follow the reference's published vq-wav2vec recipe (fairseq `wav2vec` model,
examples/wav2vec README): 8-layer encoder of total stride 160 (100 frames/s), 12-layer causal
conv aggregator with skip connections scaled by sqrt(0.5), GELU, prediction of 12 future steps,
offset "auto" (= ceil(receptive field / stride) = 3), quantizer 2 groups x 320 with one shared
codebook (`--combine-groups`) and a depth-2 logit projection for the gumbel variant.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from jaxdisco.errors import ConfigError
from jaxdisco.models.config import ConvSpec, conv_output_length, parse_conv_layers

ENCODER_LAYERS = (
    "[(512, 10, 5), (512, 8, 4), (512, 4, 2), (512, 4, 2), (512, 4, 2), (512, 1, 1), (512, 1, 1),"
    " (512, 1, 1)]"
)
# (512, 2, 1), (512, 3, 1), ..., (512, 13, 1).
AGGREGATOR_LAYERS = "[" + ", ".join(f"(512, {k}, 1)" for k in range(2, 14)) + "]"


@dataclasses.dataclass(frozen=True)
class VqWav2VecConfig:
  """vq-wav2vec hyperparameters; defaults are the reference's LibriSpeech recipe."""

  encoder_layers: str = ENCODER_LAYERS  # (channels, kernel, stride) per encoder conv.
  aggregator_layers: str = AGGREGATOR_LAYERS  # Causal convs, stride 1.
  # log(|z| + 1) after the encoder. wav2vec 1.0 used it; the vq-wav2vec command line does not
  # pass `--log-compression` (an opt-in flag when it was written), so it is off here.
  log_compression: bool = False
  residual_scale: float = 0.5  # Aggregator skip connections: (x + residual) * sqrt(0.5).
  aggregator_bias: bool = (
      True  # The reference's `no_conv_bias` is False: aggregator convs have bias.
  )
  activation: str = "gelu"  # "gelu" (vq-wav2vec) or "relu" (wav2vec 1.0).
  vq_type: str = "gumbel"  # "gumbel" or "kmeans".
  vq_vars: int = 320  # V entries per group.
  vq_groups: int = 2  # G groups.
  vq_dim: int = 0  # Quantized vector size (0: the encoder's channels); each group gives vq_dim/G.
  vq_depth: int = 2  # Gumbel logit projection: (depth - 1) hidden Dense(2 * in) + GELU layers.
  combine_groups: bool = True  # One codebook of V vectors shared by the G groups.
  prediction_steps: int = 12  # K future steps predicted from each context frame.
  offset: int = -1  # Step k predicts frame t + offset + k (k = 0..K-1); -1: "auto".
  dtype: str = "float32"  # Compute dtype of convs; norms, quantizer and losses stay fp32.

  def __post_init__(self):
    for name in ("encoder_layers", "aggregator_layers"):
      try:
        parse_conv_layers(getattr(self, name))
      except ValueError as e:
        raise ConfigError(str(e).replace("model.conv_layers", f"model.{name}")) from None
    if any(stride != 1 for _, _, stride in self.aggregator_spec):
      raise ConfigError(f"model.aggregator_layers: strides must be 1, got {self.aggregator_layers}")
    checks = (
        (
            self.activation in ("gelu", "relu"),
            f"model.activation: expected 'gelu' or 'relu', got {self.activation!r}",
        ),
        (
            self.vq_type in ("gumbel", "kmeans"),
            f"model.vq_type: expected 'gumbel' or 'kmeans', got {self.vq_type!r}",
        ),
        (self.vq_vars >= 2, f"model.vq_vars: expected >= 2, got {self.vq_vars}"),
        (self.vq_groups >= 1, f"model.vq_groups: expected >= 1, got {self.vq_groups}"),
        (
            self.codevector_dim % self.vq_groups == 0,
            f"model.vq_dim ({self.codevector_dim}) must be "
            f"divisible by model.vq_groups ({self.vq_groups})",
        ),
        (
            self.vq_type == "gumbel" or self.codevector_dim == self.encoder_dim,
            f"model.vq_dim "
            f"({self.vq_dim}): k-means VQ quantizes the encoder output itself, so it must be 0 or "
            f"{self.encoder_dim}",
        ),
        (
            self.encoder_dim % self.vq_groups == 0,
            f"model.encoder_layers: channels "
            f"({self.encoder_dim}) must be divisible by model.vq_groups ({self.vq_groups})",
        ),
        (self.vq_depth >= 1, f"model.vq_depth: expected >= 1, got {self.vq_depth}"),
        (
            self.prediction_steps >= 1,
            f"model.prediction_steps: expected >= 1, got {self.prediction_steps}",
        ),
        (
            self.offset == -1 or self.offset >= 1,
            f"model.offset: expected -1 (auto) or >= 1, got {self.offset}",
        ),
        (
            self.dtype in ("float32", "bfloat16"),
            f"model.dtype: expected 'float32' or 'bfloat16', got {self.dtype!r}",
        ),
    )
    for ok, message in checks:
      if not ok:
        raise ConfigError(message)

  @property
  def conv_spec(self) -> ConvSpec:
    """The encoder's layers (the name the trainer's frame-length helpers use)."""
    return parse_conv_layers(self.encoder_layers)

  @property
  def geometry_spec(self) -> ConvSpec:
    """The stages that decide frame counts (`ModelConfig.geometry_spec`): the encoder's."""
    return self.conv_spec

  @property
  def aggregator_spec(self) -> ConvSpec:
    return parse_conv_layers(self.aggregator_layers)

  @property
  def encoder_dim(self) -> int:
    return self.conv_spec[-1][0]

  @property
  def codevector_dim(self) -> int:
    return self.vq_dim or self.encoder_dim

  @property
  def frame_stride(self) -> int:
    return math.prod(stride for _, _, stride in self.conv_spec)

  @property
  def frame_rate(self) -> float:
    return 16000 / self.frame_stride

  @property
  def receptive_field(self) -> int:
    """Samples seen by one encoder frame (465 for the default encoder)."""
    field, jump = 1, 1
    for _, kernel, stride in self.conv_spec:
      field += (kernel - 1) * jump
      jump *= stride
    return field

  @property
  def prediction_offset(self) -> int:
    """The reference's offset "auto": ceil(receptive field / stride), so that the first target
    frame shares no samples with the context frame (3 for the default encoder)."""
    if self.offset > 0:
      return self.offset
    return math.ceil(self.receptive_field / self.frame_stride)

  def num_frames(self, num_samples: int) -> int:
    return int(conv_output_length(num_samples, self.conv_spec))

  @classmethod
  def from_dict(cls, values: Mapping[str, Any]) -> "VqWav2VecConfig":
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ConfigError(f"model: unknown field(s) {unknown}; known fields: {sorted(known)}")
    return cls(**dict(values))

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)
