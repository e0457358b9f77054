"""`launch/create_tpu.sh --plan`: nothing is reserved (gcloud is never called) unless
`jaxdisco plan` says the config fits the slice. gcloud is a stub that records its calls."""

import os
import pathlib
import subprocess
import sys

import pytest

from conftest import REPO
from jaxdisco.parallel import tpu

TINY = [
    "--config.model.num_layers=1",
    "--config.model.embed_dim=32",
    "--config.model.ffn_dim=64",
    "--config.model.num_heads=2",
    "--config.model.conv_layers=[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2",
    "--config.data.min_samples=8000",
    "--config.data.batch_size=8",
    "--programs=train",
]


def _create(tmp_path: pathlib.Path, *args: str):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir(exist_ok=True)
  calls = tmp_path / "gcloud_calls"
  gcloud = bin_dir / "gcloud"
  gcloud.write_text(f'#!/usr/bin/env bash\necho "$@" >> {calls}\n')
  gcloud.chmod(0o755)
  env = dict(
      os.environ,
      PATH=f"{bin_dir}:{os.environ['PATH']}",
      PYTHON=sys.executable,
      PYTHONPATH=str(REPO),
  )
  run = subprocess.run(
      ["bash", str(REPO / "launch" / "create_tpu.sh"), "--name", "t", "--zone", "z", *args],
      capture_output=True,
      text=True,
      cwd=tmp_path,
      env=env,
      timeout=600,
  )
  return run, (calls.read_text() if calls.exists() else "")


def _plan_args(*overrides: str) -> list[str]:
  out = []
  for a in (*TINY, *overrides):
    out += ["--plan-arg", a]
  return out


def test_a_slice_is_reserved_only_after_the_plan_passes(tmp_path):
  if not tpu.libtpu_available():
    pytest.skip("libtpu is not installed (pip install 'jaxdisco[tpu]')")
  run, calls = _create(
      tmp_path, "--type", "v5litepod-4", "--plan", str(REPO / "configs/demo.py"), *_plan_args()
  )
  assert run.returncode == 0, run.stderr[-3000:]
  assert "fits" in run.stdout and (tmp_path / "plan-t.json").exists()
  assert "tpu-vm create t" in calls and "--accelerator-type=v5litepod-4" in calls


def test_a_config_that_does_not_fit_reserves_nothing(tmp_path):
  if not tpu.libtpu_available():
    pytest.skip("libtpu is not installed (pip install 'jaxdisco[tpu]')")
  run, calls = _create(
      tmp_path,
      "--type",
      "v5litepod-4",
      "--plan",
      str(REPO / "configs/demo.py"),
      *_plan_args("--config.data.crop_samples=16000000"),
  )
  assert run.returncode == 3, (run.returncode, run.stderr[-3000:])
  assert "not reserving v5litepod-4" in run.stderr and "does not fit" in run.stderr
  assert calls == ""


def test_create_asks_for_a_plan_or_an_explicit_no_plan(tmp_path):
  run, calls = _create(tmp_path, "--type", "v5p-8")
  assert run.returncode == 2 and "--plan CONFIG" in run.stderr and calls == ""
  run, calls = _create(tmp_path, "--type", "v5p-8", "--no-plan")
  assert run.returncode == 0 and "--accelerator-type=v5p-8" in calls
