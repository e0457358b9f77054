"""The virtualenv of the Hugging Face Flax peer (`benchmarks/.venv-hf-flax`, git-ignored).

transformers 4.57 is the last release with `FlaxWav2Vec2ForPreTraining`; it needs an older
jax/flax than jaxdisco's, hence its own environment, created on first use with pip.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Callable

VENV = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".venv-hf-flax")
# A jax/flax pair of transformers 4.57's time (Dec 2024) that its Flax wav2vec 2.0 runs on
# unchanged; jaxdisco's jax 0.10 is far newer than anything that code was written against.
REQUIREMENTS = (
    "transformers==4.57.6",
    "jax==0.4.38",
    "jaxlib==0.4.38",
    "flax==0.10.2",
    "optax==0.2.4",
)


def venv_python() -> str:
  return os.path.join(VENV, "bin", "python")


def ensure_venv(log: Callable[[str], None] = print) -> str:
  """Creates the venv if its python cannot import transformers' Flax wav2vec 2.0; returns it."""
  python = venv_python()
  probe = [python, "-I", "-c", "from transformers import FlaxWav2Vec2ForPreTraining"]
  if os.path.exists(python) and subprocess.run(probe, capture_output=True).returncode == 0:
    return python
  log(f"creating {VENV} ({', '.join(REQUIREMENTS)}); a few minutes, once")
  subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
  subprocess.run([python, "-m", "pip", "install", "-q", *REQUIREMENTS], check=True)
  result = subprocess.run(probe, capture_output=True, text=True)
  if result.returncode != 0:
    raise RuntimeError(f"{VENV}: transformers' Flax wav2vec 2.0 does not import:\n{result.stderr}")
  return python
