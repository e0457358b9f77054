"""Config checks shared by the methods: every error names the field.

`check_run` holds what every method's run reads (mesh, batch, optimizer, train loop); the
others are pieces that several methods' `check` functions call (masked prediction, labels,
gumbel temperature).
"""

from __future__ import annotations

import math

from jaxdisco.errors import ConfigError


def require(condition: bool, message: str) -> None:
  if not condition:
    raise ConfigError(message)


def typed_model_config(config, model_config_type):
  """The `model` block as the method's typed config; a bad field is a ConfigError."""
  try:
    return model_config_type.from_dict(config.model.to_dict())
  except (TypeError, ValueError) as e:
    raise ConfigError(str(e)) from None


def check_run(config, num_devices: int | None = None) -> None:
  """The fields every method's run reads. `num_devices` overrides the device count the mesh is
  checked against (compiling for a pod from a machine without one)."""
  data = config.data
  require(
      data.batch_size > 0, f"data.batch_size: expected a positive integer, got {data.batch_size}"
  )
  require(
      0 <= data.min_samples <= data.crop_samples,
      f"data.min_samples ({data.min_samples}) must be in [0, data.crop_samples="
      f"{data.crop_samples}]",
  )
  check_parallel(config, num_devices)
  check_optim_and_train(config)


def check_masked_prediction(config, model) -> None:
  """Crops and span masks of the masked-prediction methods (wav2vec 2.0, HuBERT, WavLM)."""
  data, obj = config.data, config.objective
  require(
      data.crop_samples >= model.frame_stride * 2,
      f"data.crop_samples ({data.crop_samples}) must cover at least two frames "
      f"({model.frame_stride * 2} samples)",
  )
  require(0.0 < obj.mask_prob < 1.0, f"objective.mask_prob: expected (0, 1), got {obj.mask_prob}")
  require(obj.mask_length >= 1, f"objective.mask_length: expected >= 1, got {obj.mask_length}")
  shortest = max(data.min_samples, model.frame_stride * 2)
  shortest_frames = model.num_frames(shortest)
  require(
      obj.mask_length < shortest_frames,
      f"objective.mask_length ({obj.mask_length} frames) must be shorter than the shortest "
      f"crop: data.min_samples={data.min_samples} samples gives {shortest_frames} frames. "
      "Raise data.min_samples or lower objective.mask_length.",
  )


def check_labels(config) -> None:
  """The pseudo-label fields of methods with `uses_labels` (HuBERT, WavLM)."""
  data, obj = config.data, config.objective
  require(
      bool(config.labels.train),
      f"labels.train: method {config.method!r} needs a .km label file for data.train_manifest "
      "(or a prepared directory with labels)",
  )
  require(
      config.labels.num_classes >= 2,
      f"labels.num_classes: expected >= 2, got {config.labels.num_classes}",
  )
  samples_per_label = data.sample_rate / obj.label_rate
  require(
      samples_per_label == int(samples_per_label)
      and data.crop_samples % int(samples_per_label) == 0,
      f"objective.label_rate ({obj.label_rate} Hz) must divide data.sample_rate "
      f"({data.sample_rate}) and data.crop_samples ({data.crop_samples}) into whole labels",
  )


def check_gumbel_temperature(obj) -> None:
  start, end, decay = obj.gumbel_temperature
  require(
      start >= end > 0 and 0 < decay <= 1,
      f"objective.gumbel_temperature: expected (start >= end > 0, 0 < decay <= 1), got "
      f"{tuple(obj.gumbel_temperature)}",
  )


def check_optim_and_train(config) -> None:
  """The optimizer and train-loop fields, common to every method."""
  optim, train = config.optim, config.train
  require(optim.lr > 0, f"optim.lr: expected > 0, got {optim.lr}")
  require(
      0 <= optim.warmup_steps <= train.num_steps,
      f"optim.warmup_steps ({optim.warmup_steps}) must be in [0, train.num_steps="
      f"{train.num_steps}]",
  )
  require(train.num_steps > 0, f"train.num_steps: expected > 0, got {train.num_steps}")
  for name in ("log_every", "checkpoint_every", "eval_every"):
    require(train[name] > 0, f"train.{name}: expected > 0, got {train[name]}")
  require(
      train.checkpoint_every_seconds >= 0,
      f"train.checkpoint_every_seconds: expected >= 0, got {train.checkpoint_every_seconds}",
  )
  from jaxdisco.models.transformer import REMAT_POLICIES

  require(
      train.remat in REMAT_POLICIES,
      f"train.remat: expected one of {sorted(REMAT_POLICIES)}, got {train.remat!r}",
  )


def check_parallel(config, num_devices: int | None) -> None:
  """Mesh sizes fit the devices; the batch (and each micro-batch) splits evenly over the batch
  axes; the input shards split evenly over the processes."""
  import jax  # Local: config checks stay importable without touching devices.
  from jaxdisco.parallel import mesh as mesh_lib
  from jaxdisco.parallel import rules as rules_lib

  data, train = config.data, config.train
  if num_devices is None:
    num_devices = jax.device_count()
    slices = len({getattr(d, "slice_index", 0) for d in jax.devices()})
  else:
    slices = 1
  try:
    ici, dcn = mesh_lib.mesh_shapes(config.parallel, num_devices, slices)
  except mesh_lib.MeshError as e:
    raise ConfigError(str(e)) from None
  sizes = {axis: i * d for axis, i, d in zip(mesh_lib.MESH_AXES, ici, dcn)}
  batch_axes = rules_lib.batch_mesh_axes(rules_lib.rules_from_config(config.parallel))
  batch_ways = math.prod(sizes[a] for a in batch_axes)
  accum = train.grad_accum_steps
  require(accum >= 1, f"train.grad_accum_steps: expected >= 1, got {accum}")
  require(
      data.batch_size % (batch_ways * accum) == 0,
      f"data.batch_size ({data.batch_size}) must be a multiple of train.grad_accum_steps "
      f"({accum}) x the devices the batch is split over ({' x '.join(batch_axes) or 'none'} "
      f"= {batch_ways} of {num_devices} devices): each micro-batch is split evenly over them",
  )
  shards = data.input_shards or jax.process_count()
  require(
      data.input_shards >= 0 and shards % jax.process_count() == 0,
      f"data.input_shards ({data.input_shards}) must be 0 or a multiple of the number of "
      f"processes ({jax.process_count()})",
  )
  require(
      data.batch_size % shards == 0,
      f"data.batch_size ({data.batch_size}) must be a multiple of the input shards ({shards})",
  )
