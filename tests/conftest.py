"""Shared test set-up: one persistent XLA compilation cache for the whole suite (and for the
subprocesses it starts), and tiny configs built from the shipped ones."""

import os
import pathlib

import pytest

_CACHE = pathlib.Path(
    os.environ.get("JAXDISCO_TEST_CACHE", pathlib.Path(__file__).parent.parent / ".jax_test_cache")
)
# libtpu comes with the [test] extras (tests/test_tpu_plan.py compiles for TPU topologies): on
# a machine without a TPU, jax would probe for one at start-up in every test process and print
# libtpu's warnings into the stderr the CLI tests read. Compile-only TPU devices need no backend.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_CACHE))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax  # noqa: E402

jax.config.update("jax_compilation_cache_dir", str(_CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

REPO = pathlib.Path(__file__).resolve().parent.parent

# A backbone small enough to build and run in a second or two (16 channels, 2 x 16 Transformer).
TINY_MODEL = dict(
    conv_layers="[(16, 10, 5)] + [(16, 3, 2)] * 4 + [(16, 2, 2)] * 2",
    embed_dim=16,
    num_layers=2,
    num_heads=2,
    ffn_dim=32,
    pos_conv_kernel=8,
    pos_conv_groups=4,
)


def tiny_model_config(**overrides):
  """`ModelConfig` of TINY_MODEL with `overrides`."""
  from jaxdisco.models.config import ModelConfig

  return ModelConfig(**{**TINY_MODEL, **overrides})


def load_config(name: str):
  """Loads configs/<name>.py the way the CLI does."""
  from ml_collections import config_flags

  return config_flags.config_flags._LoadConfigModule(  # pylint: disable=protected-access
      name, str(REPO / "configs" / f"{name}.py")
  ).get_config()


def shrink_for_tests(config):
  """Tiny model and run of the same kind, so a test trains in seconds."""
  m = config.model
  m.conv_layers = "[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2"
  if m.get("frontend", "waveform") == "log_mel":  # Conv subsampling over mel frames: 40 ms.
    m.conv_layers = "[(32, 4, 4)]"
  m.embed_dim, m.num_layers, m.num_heads, m.ffn_dim = 32, 2, 2, 64
  m.pos_conv_kernel, m.pos_conv_groups = 8, 4
  m.final_dim, m.latent_vars, m.latent_groups, m.latent_dim = 16, 8, 2, 0
  config.data.crop_samples = 16_000
  config.data.min_samples = 8_000
  config.data.batch_size = 4
  config.objective.num_negatives = 10
  config.optim.warmup_steps = 2
  config.train.num_steps = 6
  config.train.log_every = 1
  config.train.eval_every = 3
  config.train.checkpoint_every = 3
  config.train.keep_checkpoints = 2
  return config


def tiny_run_config(name: str = "demo"):
  """configs/<name>.py of any method shrunk for tests, batch 8, without validation; methods
  trained on pseudo-labels get random-label shapes (K = 8) and no label file is read."""
  if name.startswith("vq_wav2vec"):
    from test_vq_wav2vec import shrink_vq_for_tests  # pylint: disable=g-import-not-at-top

    config = shrink_vq_for_tests(load_config(name))
  else:
    config = shrink_for_tests(load_config(name))
  config.data.batch_size = 8
  config.data.valid_manifest = ""
  if "labels" in config:
    config.labels.train, config.labels.num_classes = "unused.km", 8
  return config


@pytest.fixture
def tiny_demo_config():
  return shrink_for_tests(load_config("demo"))


def run_cli(*args: str, timeout: int = 600):
  """`python -m jaxdisco.cli ARGS...` in a subprocess with this checkout importable; returns the
  CompletedProcess (text output captured)."""
  import subprocess
  import sys

  return subprocess.run(
      [sys.executable, "-m", "jaxdisco.cli", *args],
      capture_output=True,
      text=True,
      timeout=timeout,
      env=dict(os.environ, PYTHONPATH=str(REPO)),
  )
