"""Whether a config saved with finished work (a checkpoint's, a HuBERT-loop stage's) still holds
under the current config.

A field absent from either side stands for its default in the current code's schema: the
method's default config, and for the `model` block its typed model config. So a field that
jaxdisco adds after a run was saved does not strand the run, as long as the run keeps the
field's default. A field the schema does not know either compares as "<absent>" and is
reported. Compute-only model fields (`models.config.COMPUTE_ONLY_FIELDS`) are never compared.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping

from jaxdisco.models.config import without_compute_only

ABSENT = "<absent>"


@dataclasses.dataclass(frozen=True)
class Difference:
  path: str  # "block.field", or a top-level key.
  saved: Any
  current: Any


def _json(value):
  """Tuples -> lists, as a saved JSON config holds them."""
  return json.loads(json.dumps(value))


def schema_defaults(method) -> dict[str, Any]:
  """Config block -> {field: default} for a `jaxdisco.methods.Method`: its default config, with
  the `model` block from its typed model config (the code that reads that block)."""
  defaults = _json(method.defaults().to_dict())
  defaults["model"] = without_compute_only(_json(method.model_config_type().to_dict()))
  defaults["method"] = "wav2vec2"  # What the trainer reads a config without a method as.
  return defaults


def differences(
    saved: Mapping[str, Any], current: Mapping[str, Any], defaults: Mapping[str, Any]
) -> list[Difference]:
  """What differs between two configs (or parts of them), absent fields read as defaults.

  Top-level keys whose default is a dict are config blocks, compared field by field; other
  keys are compared whole (absent: their entry in `defaults`, if any).
  """
  saved, current = _json(dict(saved)), _json(dict(current))
  out = []
  for key in sorted(set(saved) | set(current)):
    default = defaults.get(key, ABSENT)
    if isinstance(default, dict):
      saved_block, current_block = saved.get(key, {}), current.get(key, {})
      if key == "model":
        saved_block, current_block = map(without_compute_only, (saved_block, current_block))
      for field in sorted(set(saved_block) | set(current_block)):
        fallback = default.get(field, ABSENT)
        s, c = saved_block.get(field, fallback), current_block.get(field, fallback)
        if s != c:
          out.append(Difference(f"{key}.{field}", s, c))
    else:
      s, c = saved.get(key, default), current.get(key, default)
      if s != c:
        out.append(Difference(key, s, c))
  return out


def parameter_config(config: Mapping[str, Any], method) -> dict[str, Any]:
  """The part of a run config that decides the meaning and shapes of saved parameters: the
  method, the `model` block and the method's `param_fields` (each only where present)."""
  out: dict[str, Any] = {"method": config.get("method", ABSENT), "model": config.get("model", {})}
  for path in method.param_fields:
    block, field = path.split(".")
    if field in config.get(block, {}):
      out.setdefault(block, {})[field] = config[block][field]
  return out
