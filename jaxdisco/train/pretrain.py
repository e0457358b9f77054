"""wav2vec 2.0 pretraining: `train_and_evaluate(config, workdir)`, called by the CLI and Colab."""

from __future__ import annotations

import functools
import json
import logging
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import linen as nn

from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxdisco.data import manifest as manifest_lib
from jaxdisco.data import multihost
from jaxdisco.data import pipeline
from jaxdisco.data import sources as sources_lib
from jaxdisco.data import span_masks
from jaxdisco.models.wav2vec2 import Wav2Vec2ForPretraining
from jaxdisco.objectives.wav2vec2 import pretraining_loss
from jaxdisco.train import checkpoint as ckpt
from jaxdisco.train.config_checks import check_pretrain_config
from jaxdisco.train.metrics import MetricsWriter, Progress
from jaxdisco.train.optimizer import learning_rate_schedule, make_optimizer
from jaxdisco.train.plot import plot_curves
from jaxdisco.train.state import TrainState
from jaxdisco.train.step import make_eval_step, make_train_step

log = logging.getLogger("jaxdisco")


class TrainingStopped(RuntimeError):
  pass


class _StopOnSignal:
  """Turns SIGTERM (preemption) into a flag the loop checks once per step."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
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


_MODEL_INPUTS = ("waveform", "padding_mask", "mask", "negatives", "cross_negatives")


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
      manifest_lib.verify_manifest(manifest_lib.read_manifest(data.valid_manifest),
                                   sample_rate=data.sample_rate)
  return manifest, len(manifest), manifest.total_seconds(data.sample_rate) / 3600


def init_params(model_config, batch_shape: tuple[int, int], seed: int):
  model = Wav2Vec2ForPretraining(model_config)
  frames = model_config.num_frames(batch_shape[1])
  wav = jnp.zeros(batch_shape, jnp.float32)
  mask = jnp.zeros((batch_shape[0], frames), bool)
  init = functools.partial(model.init, temperature=2.0)
  variables = jax.jit(init)({"params": jax.random.key(seed), "dropout": jax.random.key(seed + 1)},
                            wav, None, mask)
  return nn.meta.unbox(variables)


def _mean_metrics(history: list[dict]) -> dict[str, float]:
  stacked = jax.device_get(history)
  return {k: float(np.mean([m[k] for m in stacked])) for k in stacked[0]}


def _evaluate(eval_step, params, data, to_device) -> dict[str, float]:
  """Masked-frame-weighted means over the validation set (fixed masks and argmax codes)."""
  ds = pipeline.make_eval_dataset(
      data.valid_manifest, batch_size=multihost.global_batch_to_local(data.batch_size),
      crop_samples=data.crop_samples, normalize=data.normalize, sample_rate=data.sample_rate,
      process_index=jax.process_index(), process_count=jax.process_count())
  totals, weight = {}, 0.0
  for batch in ds:
    metrics = jax.device_get(eval_step(params, to_device(
        {k: batch[k] for k in ("waveform", "padding_mask")})))
    n = float(metrics["masked_frames"])
    for k, v in metrics.items():
      totals[k] = totals.get(k, 0.0) + float(v) * n
    weight += n
  return {k: v / max(weight, 1.0) for k, v in totals.items()}


def train_and_evaluate(config, workdir, *, stop_after: int | None = None) -> dict[str, Any]:
  """Trains wav2vec 2.0 from `config` in `workdir`, resuming from its latest checkpoint.

  `stop_after` behaves like a preemption (SIGTERM) arriving after that step: save and return.
  Returns a summary: final step, last logged metrics, paths of checkpoints/metrics/plot.
  """
  model_config = check_pretrain_config(config)
  workdir = epath.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  config_dict = json.loads(config.to_json())
  config_file = workdir / "config.json"
  if config_file.exists():
    ckpt.check_compatible(json.loads(config_file.read_text()), config_dict, str(config_file))
  config_file.write_text(json.dumps(config_dict, indent=2))

  data, train, objective = config.data, config.train, config.objective
  train_source, num_utterances, hours = _open_train_data(data)
  masking = (span_masks.MaskingSpec.from_configs(model_config, objective)
             if data.masks_in_pipeline else None)
  dataset = pipeline.make_pretrain_dataset(
      train_source, batch_size=multihost.global_batch_to_local(data.batch_size),
      crop_samples=data.crop_samples, min_samples=data.min_samples, seed=data.seed,
      normalize=data.normalize, sample_rate=data.sample_rate, process_index=jax.process_index(),
      process_count=jax.process_count(), buckets=data.buckets or None, masking=masking)
  iterator = iter(dataset)
  mesh = Mesh(np.asarray(jax.devices()), ("data",))
  to_device = functools.partial(multihost.make_global_batch, mesh_or_sharding=mesh)

  total_steps = train.num_steps
  optimizer = make_optimizer(config.optim, total_steps)
  schedule = learning_rate_schedule(config.optim, total_steps)
  params = init_params(model_config, (data.batch_size, data.crop_samples), train.seed)
  state = TrainState.create(params, optimizer, jax.random.key(train.seed + 2))
  # Data parallel over every device; issue-4 style fsdp/tensor sharding builds on this mesh.
  state = jax.device_put(state, NamedSharding(mesh, PartitionSpec()))
  num_params = sum(x.size for x in jax.tree.leaves(params))

  manager = ckpt.make_manager(workdir, save_every=train.checkpoint_every,
                              keep=train.keep_checkpoints)
  restored = ckpt.restore_latest(manager, jax.eval_shape(lambda: state), iterator, config_dict)
  start = 0
  if restored is not None:
    state, start = restored
    print(f"Resumed from {ckpt.checkpoint_dir(workdir) / str(start)} (step {start})", flush=True)

  loss_fn = functools.partial(pretraining_loss, model_config=model_config, objective=objective)
  loss_fn = lambda p, b, k, s, t, _f=loss_fn: _f(p, b, k, s, train=t)
  train_step = jax.jit(make_train_step(loss_fn, optimizer, schedule), donate_argnums=0)
  eval_step = jax.jit(make_eval_step(loss_fn))

  writer = MetricsWriter(workdir, enabled=jax.process_index() == 0)
  progress = Progress(total_steps, start)
  print(f"wav2vec 2.0 pretraining: {num_params / 1e6:.2f}M params, "
        f"{num_utterances} train utterances ({hours:.2f} h), "
        f"batch {data.batch_size} x {data.crop_samples} samples, steps {start}->{total_steps}, "
        f"workdir {workdir}", flush=True)
  history, last = [], {}
  t_start = time.perf_counter()
  step = start
  with _StopOnSignal() as stop:
    try:
      while step < total_steps:
        batch = next(iterator)
        state, metrics = train_step(state, to_device({k: v for k, v in batch.items()
                                                      if k in _MODEL_INPUTS}))
        history.append(metrics)
        step += 1
        if step % train.log_every == 0 or step == total_steps:
          last = _mean_metrics(history)
          history = []
          line, rate = progress.line(step, last)
          last["steps_per_sec"] = rate
          writer.write(step, last)
          print(line, flush=True)
          if int(state.nonfinite_in_a_row) >= train.max_consecutive_nonfinite:
            manager.wait_until_finished()
            raise TrainingStopped(
                f"stopped at step {step}: {int(state.nonfinite_in_a_row)} consecutive steps had "
                f"non-finite loss or gradients (train.max_consecutive_nonfinite="
                f"{train.max_consecutive_nonfinite}); the last good checkpoint is "
                f"{manager.latest_step()} in {ckpt.checkpoint_dir(workdir)}")
        if data.valid_manifest and (step % train.eval_every == 0 or step == total_steps):
          valid = _evaluate(eval_step, state.params, data, to_device)
          writer.write(step, valid, prefix="valid_")
          print(f"  valid @ {step}: loss {valid['loss']:.3f} | acc {valid['accuracy']:.3f} | "
                f"ppl {valid['code_perplexity']:.1f}", flush=True)
        if stop_after is not None and step >= stop_after:
          stop.requested = True
        if stop.requested:
          ckpt.save(manager, step, state, iterator, config_dict, force=True)
          manager.wait_until_finished()
          print(f"Stop requested: saved checkpoint at step {step}; exiting cleanly.", flush=True)
          break
        ckpt.save(manager, step, state, iterator, config_dict, force=step == total_steps)
    except Exception as e:
      manager.wait_until_finished()
      kept = manager.latest_step()
      if not isinstance(e, TrainingStopped):
        e.add_note(f"jaxdisco: training stopped at step {step}; newest saved checkpoint: "
                   f"{kept if kept is not None else 'none'} in {ckpt.checkpoint_dir(workdir)}")
      raise
    finally:
      manager.wait_until_finished()
      writer.close()
  manager.close()
  wall = time.perf_counter() - t_start
  plot = plot_curves(workdir) if jax.process_index() == 0 else None
  summary = {
      "step": step, "metrics": last, "wall_seconds": wall, "preempted": stop.requested,
      "checkpoints": str(ckpt.checkpoint_dir(workdir)), "metrics_file": str(writer.path),
      "plot": str(plot) if plot else None, "tensorboard": str(workdir),
  }
  print(f"Done in {wall:.0f}s. Checkpoints: {summary['checkpoints']} | metrics: "
        f"{summary['metrics_file']} | TensorBoard: --logdir {workdir} | curves: {summary['plot']}",
        flush=True)
  return summary
