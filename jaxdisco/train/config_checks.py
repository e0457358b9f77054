"""Validation of a run config before anything expensive happens: every error names the field."""

from __future__ import annotations

from jaxdisco.models.config import ModelConfig


class ConfigError(ValueError):
  pass


def _require(condition: bool, message: str) -> None:
  if not condition:
    raise ConfigError(message)


def check_pretrain_config(config) -> ModelConfig:
  """Checks the fields the wav2vec 2.0 trainer reads; returns the typed model config."""
  try:
    model = ModelConfig.from_dict(config.model.to_dict())
  except (TypeError, ValueError) as e:
    raise ConfigError(str(e)) from None
  data, obj, optim, train = config.data, config.objective, config.optim, config.train
  _require(data.batch_size > 0, f"data.batch_size: expected a positive integer, got {data.batch_size}")
  import jax  # Local: config checks stay importable without touching devices.
  _require(data.batch_size % jax.device_count() == 0,
           f"data.batch_size ({data.batch_size}) must be a multiple of the number of devices "
           f"({jax.device_count()}): the batch is split evenly over them")
  _require(data.crop_samples >= model.frame_stride * 2,
           f"data.crop_samples ({data.crop_samples}) must cover at least two frames "
           f"({model.frame_stride * 2} samples)")
  _require(0 <= data.min_samples <= data.crop_samples,
           f"data.min_samples ({data.min_samples}) must be in [0, data.crop_samples="
           f"{data.crop_samples}]")
  _require(0.0 < obj.mask_prob < 1.0, f"objective.mask_prob: expected (0, 1), got {obj.mask_prob}")
  _require(obj.mask_length >= 1, f"objective.mask_length: expected >= 1, got {obj.mask_length}")
  shortest = max(data.min_samples, model.frame_stride * 2)
  shortest_frames = model.num_frames(shortest)
  _require(obj.mask_length < shortest_frames,
           f"objective.mask_length ({obj.mask_length} frames) must be shorter than the shortest "
           f"crop: data.min_samples={data.min_samples} samples gives {shortest_frames} frames. "
           "Raise data.min_samples or lower objective.mask_length.")
  _require(obj.num_negatives >= 1, f"objective.num_negatives: expected >= 1, got {obj.num_negatives}")
  start, end, decay = obj.gumbel_temperature
  _require(start >= end > 0 and 0 < decay <= 1,
           f"objective.gumbel_temperature: expected (start >= end > 0, 0 < decay <= 1), got "
           f"{tuple(obj.gumbel_temperature)}")
  _require(optim.lr > 0, f"optim.lr: expected > 0, got {optim.lr}")
  _require(0 <= optim.warmup_steps <= train.num_steps,
           f"optim.warmup_steps ({optim.warmup_steps}) must be in [0, train.num_steps="
           f"{train.num_steps}]")
  _require(train.num_steps > 0, f"train.num_steps: expected > 0, got {train.num_steps}")
  for name in ("log_every", "checkpoint_every", "eval_every"):
    _require(train[name] > 0, f"train.{name}: expected > 0, got {train[name]}")
  return model
