r"""Is the input pipeline ever the bottleneck? Audio seconds per second, per host.

  python benchmarks/input_pipeline.py [--batches 60] [--train_steps 5] [--workers 0]

Measures, on this machine, for the demo corpus with the demo config's data
settings (batch 8 x 2 s crops, min 1 s):
  * prepare-data throughput (FLAC files -> int16 ArrayRecord shards);
  * the pretraining pipeline reading the FLAC files straight through the manifest;
  * the same pipeline reading the prepared shards, with and without length buckets;
  * the demo model's jitted train step (configs/demo.py), compiled first, then timed;
and prints each rate in seconds of audio (valid samples, padding excluded)
delivered per second, and its ratio to the train step's consumption rate.
The requirement: every pipeline >= 3x the train step on the same machine.

The pipeline is timed alone (not overlapped with the step), which is the
worst case for it: in training, grain's reader threads run while the device
computes.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import pathlib
import sys
import tempfile
import time

import jax
import numpy as np

from jaxdisco.assets import demo_corpus_dir
from jaxdisco.data import pipeline
from jaxdisco.data import prepare
from jaxdisco.data import sources

REPO = pathlib.Path(__file__).resolve().parent.parent
SR = 16000


def load_demo_config():
  spec = importlib.util.spec_from_file_location('demo_config', REPO / 'configs' / 'demo.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def time_pipeline(data, config, num_batches: int, **kwargs) -> tuple[float, float]:
  """(audio seconds per second, seconds per batch) over `num_batches` after 2 warm-up."""
  ds = pipeline.make_pretrain_dataset(
      data,
      batch_size=config.data.batch_size,
      crop_samples=config.data.crop_samples,
      min_samples=config.data.min_samples,
      seed=0,
      **kwargs,
  )
  iterator = iter(ds)
  for _ in range(2):  # Thread pool start-up, first file opens.
    next(iterator)
  start = time.perf_counter()
  samples = 0
  for _ in range(num_batches):
    samples += int(next(iterator)['lengths'].sum())
  wall = time.perf_counter() - start
  return samples / SR / wall, wall / num_batches


def time_train_step(config, num_steps: int, mean_valid_samples: float) -> tuple[float, float]:
  """(audio seconds per second the step consumes, seconds per step)."""
  from jaxdisco.objectives.wav2vec2 import pretraining_loss
  from jaxdisco.methods import check_config
  from jaxdisco.train.optimizer import learning_rate_schedule, make_optimizer
  from jaxdisco.train.pretrain import init_params
  from jaxdisco.train.state import TrainState
  from jaxdisco.train.step import make_train_step

  model_config = check_config(config)
  batch_shape = (config.data.batch_size, config.data.crop_samples)
  optimizer = make_optimizer(config.optim, config.train.num_steps)
  schedule = learning_rate_schedule(config.optim, config.train.num_steps)
  params = init_params(model_config, batch_shape, 0)
  state = TrainState.create(params, optimizer, jax.random.key(2))
  loss_fn = functools.partial(
      pretraining_loss, model_config=model_config, objective=config.objective
  )
  loss_fn = lambda p, b, k, s, t, _f=loss_fn: _f(p, b, k, s, train=t)
  step = jax.jit(make_train_step(loss_fn, optimizer, schedule), donate_argnums=0)
  rng = np.random.default_rng(0)
  batch = {
      'waveform': rng.normal(0, 0.1, batch_shape).astype(np.float32),
      'padding_mask': np.zeros(batch_shape, bool),
  }
  state, metrics = step(state, batch)  # Compile.
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(num_steps):
    state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  per_step = (time.perf_counter() - start) / num_steps
  return mean_valid_samples / SR / per_step, per_step


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batches', type=int, default=60, help='batches timed per pipeline')
  parser.add_argument('--train_steps', type=int, default=5, help='train steps timed')
  parser.add_argument(
      '--workers',
      type=int,
      default=0,
      help='also time grain worker processes (mp_prefetch) with this many',
  )
  args = parser.parse_args()
  config = load_demo_config()
  manifest = demo_corpus_dir() / 'train.tsv'

  with tempfile.TemporaryDirectory() as tmp:
    start = time.perf_counter()
    summary = prepare.prepare(
        sources.open_source(manifest),
        pathlib.Path(tmp) / 'prepared',
        num_shards=4,
        progress=lambda _: None,
    )
    prepare_wall = time.perf_counter() - start
    prepared = pathlib.Path(tmp) / 'prepared'

    rows = [
        ('prepare-data (demo train, 4 shards, all cores)', summary['seconds'] / prepare_wall, None)
    ]
    crop = config.data.crop_samples
    runs = [
        ('pipeline: FLAC via manifest', manifest, {}),
        ('pipeline: prepared ArrayRecord', prepared, {}),
        ('pipeline: prepared + 3 buckets', prepared, {'buckets': (crop // 2, crop * 3 // 4)}),
    ]
    if args.workers:
      from absl import flags

      flags.FLAGS.mark_as_parsed()  # grain's worker processes read absl flags.
      runs.append(
          (
              f'pipeline: prepared, {args.workers} worker procs',
              prepared,
              {'num_workers': args.workers},
          )
      )
    measured = []
    for name, data, kwargs in runs:
      rate, per_batch = time_pipeline(data, config, args.batches, **kwargs)
      measured.append((name, rate, per_batch))
    # The step's consumption, in the same unit: valid samples of an average batch.
    mean_valid = measured[0][1] * SR * measured[0][2]
    train_rate, per_step = time_train_step(config, args.train_steps, mean_valid)

  print(
      f'\nInput pipeline vs train step, demo corpus, {os.cpu_count()} CPU cores, '
      f'jax backend {jax.default_backend()} ({jax.devices()[0].device_kind})'
  )
  print(
      f'batch {config.data.batch_size} x {crop} samples; rates are seconds of audio '
      'delivered per second on this host'
  )
  print(f'{"":48s} {"audio s/s":>10s} {"ms/batch":>9s} {"x train":>8s}')
  for name, rate, _ in rows:
    print(f'{name:48s} {rate:10.1f} {"":>9s} {"":>8s}')
  for name, rate, per_batch in measured:
    print(f'{name:48s} {rate:10.1f} {per_batch * 1e3:9.1f} {rate / train_rate:7.1f}x')
  print(
      f'{"train step (configs/demo.py, jit)":48s} {train_rate:10.1f} {per_step * 1e3:9.1f} '
      f'{1.0:7.1f}x'
  )
  slowest = min(rate for _, rate, _ in measured) / train_rate
  verdict = 'OK' if slowest >= 3 else 'BOTTLENECK'
  print(f'slowest pipeline / train step = {slowest:.1f}x (need >= 3x): {verdict}')
  return 0 if slowest >= 3 else 1


if __name__ == '__main__':
  sys.exit(main())
