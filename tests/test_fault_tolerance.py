"""Preemption and bad steps: a real SIGTERM mid-run, then a restart, gives the uninterrupted
run's losses and parameters; non-finite steps are skipped and counted."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdisco.train.checkpoint import load_pretrained_params
from jaxdisco.train.metrics import read_metrics
from jaxdisco.train.pretrain import train_and_evaluate
from jaxdisco.train.state import TrainState
from jaxdisco.train.step import make_train_step

HERE = pathlib.Path(__file__).resolve().parent

CONFIG = f"""
import sys
sys.path.insert(0, {str(HERE)!r})
from conftest import load_config, shrink_for_tests

def get_config():
  return tiny()

def tiny():
  c = shrink_for_tests(load_config("demo"))
  c.data.valid_manifest = ""
  c.train.num_steps = 40
  c.train.checkpoint_every = 1000  # only the preemption save and the final one
  return c
"""


def _losses(workdir):
  return {r["step"]: r["loss"] for r in read_metrics(workdir) if "loss" in r}


def test_sigterm_then_restart_equals_uninterrupted_run(tmp_path):
  (tmp_path / "tiny.py").write_text(CONFIG)
  sys.path.insert(0, str(tmp_path))
  import tiny  # noqa: E402

  train_and_evaluate(tiny.tiny(), tmp_path / "full")

  workdir = tmp_path / "preempted"
  command = [
      sys.executable,
      "-m",
      "jaxdisco.cli",
      "pretrain",
      "--config",
      str(tmp_path / "tiny.py"),
      "--workdir",
      str(workdir),
  ]
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  proc = subprocess.Popen(
      command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
  )
  deadline = time.monotonic() + 240
  while time.monotonic() < deadline and proc.poll() is None:
    if (workdir / "metrics.jsonl").exists() and len(_losses(workdir)) >= 3:
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0, out[-4000:]
  assert "Stop requested: saved checkpoint at step" in out, out[-3000:]
  stopped_at = max(_losses(workdir))
  assert 3 <= stopped_at < 40
  assert (workdir / "checkpoints" / str(stopped_at)).exists()

  proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
  assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
  assert f"Resumed from" in proc.stdout and f"(step {stopped_at})" in proc.stdout
  full, resumed = _losses(tmp_path / "full"), _losses(workdir)
  assert list(resumed) == list(range(1, 41))
  np.testing.assert_allclose([resumed[s] for s in resumed], [full[s] for s in full], rtol=1e-6)
  p_full = load_pretrained_params(tmp_path / "full").params
  p_resumed = load_pretrained_params(workdir).params
  for a, b in zip(jax.tree.leaves(p_full), jax.tree.leaves(p_resumed)):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_nonfinite_steps_are_skipped_and_counted():
  params = {"w": jnp.ones(3)}
  optimizer = optax.adam(0.1)
  poison = lambda p, b, k, s, t: (jnp.sum(p["w"] * b["x"]), {"loss": jnp.sum(p["w"] * b["x"])})
  step = jax.jit(make_train_step(poison, optimizer, optax.constant_schedule(0.1)))
  state = TrainState.create(params, optimizer, jax.random.key(0))
  good, bad = {"x": jnp.ones(3)}, {"x": jnp.array([1.0, jnp.nan, 1.0])}
  state, _ = step(state, good)
  kept = state.params["w"]
  for _ in range(2):
    state, metrics = step(state, bad)
    assert float(metrics["skipped"]) == 1.0
  np.testing.assert_array_equal(state.params["w"], kept)  # no update from a bad step
  assert (int(state.step), int(state.nonfinite_in_a_row), int(state.nonfinite_total)) == (1, 2, 2)
  state, _ = step(state, good)
  assert (int(state.step), int(state.nonfinite_in_a_row), int(state.nonfinite_total)) == (2, 0, 2)


def test_time_interval_checkpoints_and_keep_k(tiny_demo_config, tmp_path):
  c = tiny_demo_config
  c.data.valid_manifest = ""
  c.train.num_steps = 4
  c.train.checkpoint_every = 1000  # never by step count
  c.train.checkpoint_every_seconds = 1e-6  # always due at a log step (every step here)
  c.train.keep_checkpoints = 2
  train_and_evaluate(c, tmp_path)
  kept = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  assert kept == [3, 4]


def test_consecutive_nonfinite_steps_stop_the_run_and_keep_the_last_good_checkpoint(
    tiny_demo_config, tmp_path
):
  """Audio that turns to NaN while the job is down: every later step is skipped, and after
  train.max_consecutive_nonfinite of them the run stops with a message naming the kept step."""
  import soundfile as sf
  from jaxdisco.train.pretrain import TrainingStopped

  rng = np.random.default_rng(0)
  (tmp_path / "audio").mkdir()
  lines = ["audio"]
  for i in range(8):
    sf.write(
        tmp_path / "audio" / f"u{i}.wav", 0.1 * rng.standard_normal(16000), 16000, subtype="FLOAT"
    )
    lines.append(f"u{i}.wav\t16000")
  (tmp_path / "train.tsv").write_text("\n".join(lines) + "\n")
  c = tiny_demo_config
  c.data.train_manifest = str(tmp_path / "train.tsv")
  c.data.valid_manifest = ""
  c.train.num_steps = 12
  c.train.max_consecutive_nonfinite = 3
  train_and_evaluate(c, tmp_path / "run", stop_after=3)
  for i in range(8):
    sf.write(tmp_path / "audio" / f"u{i}.wav", np.full(16000, np.nan), 16000, subtype="FLOAT")
  with pytest.raises(
      TrainingStopped, match=r"3 consecutive steps had non-finite.*good checkpoint is 3"
  ):
    train_and_evaluate(c, tmp_path / "run")
  _, _, params, step = load_pretrained_params(tmp_path / "run")
  assert step == 3
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))
