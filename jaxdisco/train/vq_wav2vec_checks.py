"""Config checks of a vq-wav2vec run: every error names the field."""

from __future__ import annotations

from jaxdisco.models.vq_wav2vec_config import VqWav2VecConfig
from jaxdisco.train.config_checks import (
    ConfigError,
    _check_parallel,
    _require,
    check_gumbel_temperature,
    check_optim_and_train,
)


def check_vq_wav2vec_config(config, num_devices: int | None = None) -> VqWav2VecConfig:
  """Checks the fields a vq-wav2vec run reads; returns the typed model config."""
  try:
    model = VqWav2VecConfig.from_dict(config.model.to_dict())
  except (TypeError, ValueError) as e:
    raise ConfigError(str(e)) from None
  data, obj = config.data, config.objective
  _require(
      data.batch_size > 0, f"data.batch_size: expected a positive integer, got {data.batch_size}"
  )
  _check_parallel(config, num_devices)
  _require(
      0 <= data.min_samples <= data.crop_samples,
      f"data.min_samples ({data.min_samples}) must be in [0, data.crop_samples="
      f"{data.crop_samples}]",
  )
  _require(
      not data.masks_in_pipeline,
      "data.masks_in_pipeline: vq-wav2vec has no masks (distractors are drawn in the step); "
      "set it to False",
  )
  shortest = max(data.min_samples, model.receptive_field)
  frames = model.num_frames(shortest)
  _require(
      frames >= model.prediction_offset + 2,
      f"data.min_samples ({data.min_samples}) gives {frames} frames: need at least "
      f"model.offset + 2 = {model.prediction_offset + 2} so that some frame has a target and a "
      "distractor. Raise data.min_samples.",
  )
  _require(
      obj.num_negatives >= 1, f"objective.num_negatives: expected >= 1, got {obj.num_negatives}"
  )
  _require(obj.kmeans_gamma >= 0, f"objective.kmeans_gamma: expected >= 0, got {obj.kmeans_gamma}")
  _require(
      obj.quantizer_weight >= 0,
      f"objective.quantizer_weight: expected >= 0, got {obj.quantizer_weight}",
  )
  check_gumbel_temperature(obj)
  check_optim_and_train(config)
  return model
