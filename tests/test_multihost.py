"""Two local processes x 4 CPU devices (launch/local_multiprocess.py) train the demo config at
tiny size, are preempted (SIGTERM) mid-run and restarted, and reach the same per-step losses and
parameters as one uninterrupted process with 8 devices."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxdisco.train.checkpoint import load_pretrained_params
from jaxdisco.train.metrics import read_metrics

HERE = pathlib.Path(__file__).resolve().parent
LAUNCHER = HERE.parent / "launch" / "local_multiprocess.py"

CONFIG = f"""
import sys
sys.path.insert(0, {str(HERE)!r})
from conftest import load_config, shrink_for_tests

def get_config():
  c = shrink_for_tests(load_config("demo"))
  c.data.batch_size = 8
  c.data.valid_manifest = ""
  c.data.input_shards = 2  # the same data order on 1 or 2 hosts
  c.parallel.data, c.parallel.fsdp = 2, 4
  c.train.num_steps = 12
  c.train.checkpoint_every = 1000  # only the preemption save and the final one
  return c
"""


def _command(tmp_path, processes: int, devices: int, workdir) -> list[str]:
  return [
      sys.executable,
      str(LAUNCHER),
      "--num_processes",
      str(processes),
      "--devices_per_process",
      str(devices),
      "--timeout",
      "540",
      "--",
      sys.executable,
      "-m",
      "jaxdisco.cli",
      "pretrain",
      "--config",
      str(tmp_path / "tiny.py"),
      "--workdir",
      str(workdir),
  ]


_ENV = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}


def _losses(workdir):
  return {r["step"]: r["loss"] for r in read_metrics(workdir) if "loss" in r}


def _launch(tmp_path, processes: int, devices: int, workdir) -> str:
  proc = subprocess.run(
      _command(tmp_path, processes, devices, workdir),
      capture_output=True,
      text=True,
      timeout=600,
      env=_ENV,
  )
  assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
  return proc.stdout


# Before each new program's first run the processes compile and then meet at a coordination-
# service barrier (`distributed.run_in_lockstep`): without it, gloo's fixed 30 s connect timeout
# failed this test whenever one process compiled or restored much longer than the other.
def test_two_processes_preempted_and_resumed_match_one(tmp_path):
  (tmp_path / "tiny.py").write_text(CONFIG)
  two = tmp_path / "two"
  proc = subprocess.Popen(
      _command(tmp_path, 2, 4, two),
      env=_ENV,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
  )
  deadline = time.monotonic() + 420
  while time.monotonic() < deadline and proc.poll() is None:
    if (two / "metrics.jsonl").exists() and len(_losses(two)) >= 2:
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)  # the launcher forwards it to both processes
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0, out[-6000:]
  # Both processes agree on the save step (JAX's preemption sync point), save their own
  # shards and iterator state, and exit cleanly; logs come from process 0 only.
  assert "[0] Stop requested: saved checkpoint at step" in out, out[-4000:]
  assert "over 2 process(es)" in out and "[1] step" not in out
  stopped_at = max(_losses(two))
  assert stopped_at < 12
  data_files = sorted(p.name for p in (two / f"checkpoints/{stopped_at}/data").glob("process_*"))
  assert data_files == ["process_0-of-2.json", "process_1-of-2.json"]

  assert f"(step {stopped_at})" in _launch(tmp_path, 2, 4, two)  # resumes
  _launch(tmp_path, 1, 8, tmp_path / "one")
  losses_two, losses_one = _losses(two), _losses(tmp_path / "one")
  assert list(losses_two) == list(range(1, 13)) and list(losses_one) == list(range(1, 13))
  np.testing.assert_allclose(
      [losses_two[s] for s in losses_two], [losses_one[s] for s in losses_one], rtol=1e-5
  )
  p_two = load_pretrained_params(two).params
  p_one = load_pretrained_params(tmp_path / "one").params
  for a, b in zip(jax.tree.leaves(p_two), jax.tree.leaves(p_one)):
    np.testing.assert_allclose(a, b, atol=1e-5)
