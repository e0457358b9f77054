"""Pretraining of any `jaxdisco.methods` method: `train_and_evaluate(config, workdir)`, called by
the CLI and Colab."""

from __future__ import annotations

import functools
import json
import os
import logging
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import linen as nn

from jax.experimental import multihost_utils

from jaxdisco.data import manifest as manifest_lib
from jaxdisco.data import multihost
from jaxdisco.data import pipeline
from jaxdisco.data import sources as sources_lib
from jaxdisco.data import span_masks
from jaxdisco.parallel import distributed
from jaxdisco.parallel import input_shards
from jaxdisco.parallel import layout as layout_lib
from jaxdisco.parallel import mesh as mesh_lib
from jaxdisco.parallel import rules as rules_lib
from jaxdisco.train import checkpoint as ckpt
from jaxdisco.train import init_from as init_from_lib
from jaxdisco import methods
from jaxdisco.train.metrics import MetricsWriter, Progress
from jaxdisco.train.plot import plot_curves
from jaxdisco.train.state import run_state_factory
from jaxdisco.train.step import jit_steps

log = logging.getLogger("jaxdisco")


class TrainingStopped(RuntimeError):
  pass


class _StopOnSignal:
  """Turns SIGTERM (preemption) into a flag the loop checks once per step."""

  def __init__(self, install: bool = True):
    self.requested = False
    self._previous = None
    self._install = install  # Multi-process runs leave SIGTERM to JAX's preemption notifier.

  def __enter__(self):
    if not self._install:
      return self
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # Not the main thread (e.g. some notebook runners): no handler.
      self._previous = None
    return self

  def _handle(self, signum, frame):
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _open_train_data(data):
  """(source for the pipeline, utterances, hours). A prepared directory (index.json) or a
  manifest; small manifests can be checked file by file first (data.verify_files)."""
  if sources_lib.is_prepared_dir(data.train_manifest):
    source = sources_lib.PreparedSource(data.train_manifest)
    return source, len(source), float(np.sum(source.num_samples)) / data.sample_rate / 3600
  manifest = manifest_lib.read_manifest(data.train_manifest)
  if data.verify_files:
    manifest_lib.verify_manifest(manifest, sample_rate=data.sample_rate)
    if data.valid_manifest and not sources_lib.is_prepared_dir(data.valid_manifest):
      manifest_lib.verify_manifest(
          manifest_lib.read_manifest(data.valid_manifest), sample_rate=data.sample_rate
      )
  return manifest, len(manifest), manifest.total_seconds(data.sample_rate) / 3600


def init_params(model_config, batch_shape: tuple[int, int], seed: int):
  """Unsharded params {'params': ...} on the default device (for notebooks and tools)."""
  return nn.meta.unbox(jax.jit(boxed_init_fn(model_config, batch_shape, seed))())


def boxed_init_fn(model_config, batch_shape: tuple[int, int], seed: int, config=None):
  """() -> {'params': ...} with logically partitioned leaves for `config.method` (default
  wav2vec 2.0); shapes only depend on the crop."""
  method = methods.get_method(config.get("method", "wav2vec2") if config else "wav2vec2")
  return method.boxed_init_fn(model_config, config, batch_shape, seed)


def _mean_metrics(history: list[dict]) -> dict[str, float]:
  stacked = jax.device_get(history)
  return {k: float(np.mean([m[k] for m in stacked])) for k in stacked[0]}


def _evaluate(eval_step, params, config, to_device, method) -> dict[str, float]:
  """Masked-frame-weighted means over the validation set (fixed masks, no dropout)."""
  data = config.data
  labels = config.get("labels") if method.uses_labels else None
  ds = pipeline.make_eval_dataset(
      data.valid_manifest,
      batch_size=multihost.global_batch_to_local(data.batch_size),
      crop_samples=data.crop_samples,
      normalize=data.normalize,
      sample_rate=data.sample_rate,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
      labels=labels.valid if labels else None,
      label_rate=config.objective.label_rate if labels else None,
  )
  totals, weight = {}, 0.0
  for batch in ds:
    metrics = jax.device_get(
        eval_step(
            params,
            to_device(
                {
                    k: v
                    for k, v in batch.items()
                    if k in method.batch_fields and k not in ("mask", "negatives")
                }
            ),
        )
    )
    n = float(metrics["masked_frames"])
    for k, v in metrics.items():
      totals[k] = totals.get(k, 0.0) + float(v) * n
    weight += n
  return {k: v / max(weight, 1.0) for k, v in totals.items()}


def _make_train_iterator(data, masking, labels=None, label_rate=None):
  """This process's batches: `data.input_shards` shards (default one per process)."""
  shards = data.input_shards or jax.process_count()

  def make_dataset(shard, count):
    return pipeline.make_pretrain_dataset(
        data_source,
        batch_size=data.batch_size // count,
        crop_samples=data.crop_samples,
        min_samples=data.min_samples,
        seed=data.seed,
        normalize=data.normalize,
        sample_rate=data.sample_rate,
        process_index=shard,
        process_count=count,
        buckets=data.buckets or None,
        masking=masking,
        labels=labels,
        label_rate=label_rate,
    )

  data_source, num_utterances, hours = _open_train_data(data)
  multihost.global_batch_to_local(data.batch_size, shards)  # Checks divisibility.
  iterator = input_shards.make_sharded_iterator(
      make_dataset, data.input_shards, jax.process_index(), jax.process_count()
  )
  return iterator, num_utterances, hours


def _log(*args):
  if distributed.is_main_process():
    print(*args, flush=True)


def _agree(flag: bool) -> bool:
  """Process 0's decision, on every process (time-based choices differ between hosts)."""
  if jax.process_count() == 1:
    return flag
  return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag)))


def _preempted(step: int, signal_flag: bool) -> bool:
  """Single process: our SIGTERM flag. Several: JAX's preemption sync point, which turns one
  host's SIGTERM into the same save step on every host."""
  if jax.process_count() == 1:
    return signal_flag
  return multihost_utils.reached_preemption_sync_point(step)


def _hbm_check(config, name: str):
  """On an accelerator, `jaxdisco plan`'s check of each compiled program before it first runs
  (a program that needs more memory than the chip gives stops with the plan's advice: batch,
  remat, fsdp); None on CPU, whose devices state no memory limit, or with train.check_hbm off."""
  if jax.default_backend() == "cpu" or not config.train.get("check_hbm", True):
    return None
  from jaxdisco.parallel import plan as plan_lib  # pylint: disable=g-import-not-at-top

  return lambda compiled: plan_lib.check_compiled_fits(compiled, config, name=name)


def train_and_evaluate(config, workdir, *, stop_after: int | None = None) -> dict[str, Any]:
  """Trains `config.method` from `config` in `workdir`, resuming from its latest checkpoint.

  `stop_after` behaves like a preemption (SIGTERM) arriving after that step: save and return.
  Returns a summary: final step, last logged metrics, paths of checkpoints/metrics/plot.
  """
  distributed.initialize_from_env()
  model_config = methods.check_config(config)
  workdir = epath.Path(workdir)
  if "://" not in str(workdir):
    workdir = epath.Path(os.path.abspath(workdir))  # Orbax needs absolute paths.
  config_dict = json.loads(config.to_json())
  if distributed.is_main_process():
    workdir.mkdir(parents=True, exist_ok=True)
    config_file = workdir / "config.json"
    if config_file.exists():
      ckpt.check_compatible(json.loads(config_file.read_text()), config_dict, str(config_file))
    config_file.write_text(json.dumps(config_dict, indent=2))
  if jax.process_count() > 1:
    distributed.barrier("config_checked")

  data, train, objective = config.data, config.train, config.objective
  masking = (
      span_masks.MaskingSpec.from_configs(model_config, objective)
      if data.masks_in_pipeline
      else None
  )
  method = methods.get_method(config.get("method", "wav2vec2"))
  iterator, num_utterances, hours = _make_train_iterator(
      data,
      masking,
      config.labels.train if method.uses_labels else None,
      objective.label_rate if method.uses_labels else None,
  )

  mesh = mesh_lib.make_mesh(config.parallel)
  rules = rules_lib.rules_from_config(config.parallel)
  batch_sharding = rules_lib.batch_sharding(mesh, rules)
  to_device = functools.partial(multihost.make_global_batch, mesh_or_sharding=batch_sharding)

  total_steps = train.num_steps
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    optimizer, schedule, create_state, abstract_state, state_sharding = run_state_factory(
        config, method, model_config, mesh, rules
    )
  layout = layout_lib.state_layout(abstract_state, state_sharding)
  _log(layout.report())
  layout_lib.check_replication(layout, config.parallel.max_replicated_fraction)
  num_params = sum(x.size for x in jax.tree.leaves(abstract_state.params))

  manager = ckpt.make_manager(
      workdir, save_every=train.checkpoint_every, keep=train.keep_checkpoints
  )
  restored = ckpt.restore_latest(manager, abstract_state, iterator, config_dict)
  start = 0
  init_from = train.get("init_from", "")
  if restored is not None:
    state, start = restored
    _log(f"Resumed from {ckpt.checkpoint_dir(workdir) / str(start)} (step {start})")
    if init_from:
      _log(f"train.init_from={init_from} not used: the workdir's checkpoint takes precedence")
  else:
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      state = create_state()
    if init_from:
      state = init_from_lib.initialize_from(init_from, state, method, model_config, say=_log)

  loss_fn = method.loss_fn(model_config, config)
  train_step, eval_step = jit_steps(
      loss_fn,
      optimizer,
      schedule,
      train,
      state_sharding,
      batch_sharding,
      method.param_update_fn(model_config, config),
  )
  train_step = distributed.run_in_lockstep(
      train_step, "train_step", _hbm_check(config, "train step")
  )
  eval_step = distributed.run_in_lockstep(eval_step, "eval_step", _hbm_check(config, "eval step"))

  writer = MetricsWriter(workdir, enabled=distributed.is_main_process())
  progress = Progress(total_steps, start)
  _log(
      f"{method.name} pretraining: {num_params / 1e6:.2f}M params, "
      f"{num_utterances} train utterances ({hours:.2f} h), "
      f"batch {data.batch_size} x {data.crop_samples} samples, steps {start}->{total_steps}, "
      f"mesh {dict(mesh.shape)} over {jax.process_count()} process(es), workdir {workdir}"
  )
  history, last = [], {}
  t_start = time.perf_counter()
  last_save_time = time.monotonic()
  step = start
  with (
      _StopOnSignal(install=jax.process_count() == 1) as stop,
      jax.set_mesh(mesh),
      nn.logical_axis_rules(rules),
  ):
    try:
      while step < total_steps:
        batch = next(iterator)
        state, metrics = train_step(
            state, to_device({k: v for k, v in batch.items() if k in method.batch_fields})
        )
        history.append(metrics)
        step += 1
        time_due = False
        if step % train.log_every == 0 or step == total_steps:
          last = _mean_metrics(history)
          history = []
          line, rate = progress.line(step, last)
          last["steps_per_sec"] = rate
          writer.write(step, last)
          _log(line)
          if train.checkpoint_every_seconds > 0:
            time_due = _agree(time.monotonic() - last_save_time >= train.checkpoint_every_seconds)
          if int(state.nonfinite_in_a_row) >= train.max_consecutive_nonfinite:
            manager.wait_until_finished()
            raise TrainingStopped(
                f"stopped at step {step}: {int(state.nonfinite_in_a_row)} consecutive steps had "
                f"non-finite loss or gradients (train.max_consecutive_nonfinite="
                f"{train.max_consecutive_nonfinite}); the last good checkpoint is "
                f"{manager.latest_step()} in {ckpt.checkpoint_dir(workdir)}"
            )
        if data.valid_manifest and (step % train.eval_every == 0 or step == total_steps):
          valid = _evaluate(eval_step, state.params, config, to_device, method)
          writer.write(step, valid, prefix="valid_")
          _log(
              f"  valid @ {step}: loss {valid['loss']:.3f} | acc {valid['accuracy']:.3f}"
              + (f" | ppl {valid['code_perplexity']:.1f}" if "code_perplexity" in valid else "")
          )
        if stop_after is not None and step >= stop_after:
          stop.requested = True
        if _preempted(step, stop.requested):
          stop.requested = True
          ckpt.save(manager, step, state, iterator, config_dict, force=True)
          manager.wait_until_finished()
          _log(f"Stop requested: saved checkpoint at step {step}; exiting cleanly.")
          break
        if ckpt.save(
            manager, step, state, iterator, config_dict, force=step == total_steps or time_due
        ):
          last_save_time = time.monotonic()
    except Exception as e:
      manager.wait_until_finished()
      kept = manager.latest_step()
      if not isinstance(e, TrainingStopped):
        e.add_note(
            f"jaxdisco: training stopped at step {step}; newest saved checkpoint: "
            f"{kept if kept is not None else 'none'} in {ckpt.checkpoint_dir(workdir)}"
        )
      raise
    finally:
      manager.wait_until_finished()
      writer.close()
  manager.close()
  wall = time.perf_counter() - t_start
  plot = plot_curves(workdir) if distributed.is_main_process() else None
  summary = {
      "step": step,
      "metrics": last,
      "wall_seconds": wall,
      "preempted": stop.requested,
      "checkpoints": str(ckpt.checkpoint_dir(workdir)),
      "metrics_file": str(writer.path),
      "plot": str(plot) if plot else None,
      "tensorboard": str(workdir),
  }
  _log(
      f"Done in {wall:.0f}s. Checkpoints: {summary['checkpoints']} | metrics: "
      f"{summary['metrics_file']} | TensorBoard: --logdir {workdir} | curves: {summary['plot']}"
  )
  return summary
