"""The pretraining methods, one module each, and their registry.

Adding a method: write `jaxdisco/methods/<name>.py` with its `defaults()` (starting from
`run_defaults`), its `check(config) -> model config` and `METHOD = Method(...)` naming its
model, loss, batch fields, unit kinds and checkpoint facts (`base.Method` documents each
field); add its loader to `METHODS` below; add its configs to `configs/` and tests. Models, losses and quantizers stay
in `jaxdisco/models`, `objectives`, `quantizers`; the trainer, the config checks, the HuBERT
loop, the plan path and the exporters read only the declaration.

Layering: `methods` imports models, objectives, quantizers and parallel rules; `train`,
`export` and the commands import `methods`, never the other way round.
"""

from __future__ import annotations

from typing import Callable, Iterable

from jaxdisco.errors import CheckpointError, ConfigError
from jaxdisco.methods.base import Method



# Each module loads on first use, so reading the registry (e.g. a checkpoint's meta) does not
# import every model family.
def _wav2vec2() -> Method:
  from jaxdisco.methods import wav2vec2

  return wav2vec2.METHOD


def _hubert() -> Method:
  from jaxdisco.methods import hubert

  return hubert.METHOD


def _vq_wav2vec() -> Method:
  from jaxdisco.methods import vq_wav2vec

  return vq_wav2vec.METHOD


def _wavlm() -> Method:
  from jaxdisco.methods import wavlm

  return wavlm.METHOD


def _dinosr() -> Method:
  from jaxdisco.methods import dinosr

  return dinosr.METHOD


def _best_rq() -> Method:
  from jaxdisco.methods import best_rq

  return best_rq.METHOD


METHODS: dict[str, Callable[[], Method]] = {
    "wav2vec2": _wav2vec2,
    "hubert": _hubert,
    "vq_wav2vec": _vq_wav2vec,
    "wavlm": _wavlm,
    "dinosr": _dinosr,
    "best_rq": _best_rq,
}


def get_method(name: str) -> Method:
  if name not in METHODS:
    raise ConfigError(f"method: expected one of {sorted(METHODS)}, got {name!r}")
  return METHODS[name]()


def infer_method(param_names: Iterable[str]) -> str:
  """The method whose model has these top-level parameters (the keys under `params`): for
  checkpoints written before checkpoints recorded their method."""
  names = set(param_names)
  found = [
      name
      for name in METHODS
      if get_method(name).param_keys is not None and get_method(name).param_keys <= names
  ]
  if len(found) != 1:
    raise CheckpointError(
        f"cannot tell the method from the checkpoint's parameters {sorted(names)}: "
        f"matches {found or 'none'} of {sorted(METHODS)}"
    )
  return found[0]


def check_config(config, num_devices: int | None = None):
  """Checks a run config before anything expensive: the method's own checks, then those every
  method shares (`checks.check_run`); returns the typed model config. `num_devices` overrides
  the device count the mesh is checked against (compiling for a pod from a machine without
  one)."""
  method = get_method(config.get("method", "wav2vec2"))
  model = method.check(config)
  from jaxdisco.methods import checks

  checks.check_run(config, num_devices)
  return model
