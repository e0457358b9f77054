"""Reading a fairseq checkpoint (`.pt`) without running code from it.

A fairseq checkpoint is a torch pickle of a dict, written by `checkpoint_utils.save_checkpoint`
(`Trainer.state_dict()`): `"model"` is the model's state dict; `"cfg"` the run's config (a plain
dict since fairseq 0.10.x converts it with `OmegaConf.to_container`; an omegaconf `DictConfig` in
some older files), or, in pre-hydra checkpoints, `"args"`, one flat `argparse.Namespace`; then
`"task_state"` (HuBERT: the label `Dictionary` objects), `"optimizer_history"` (with
`num_updates`), `"last_optimizer_state"` and `"extra_state"`.

Unpickling can call any importable function the file names, so the file is read with
`torch.load(weights_only=True)`, whose unpickler builds tensors and plain containers only and
refuses every other global, plus an explicit allow-list of the classes those checkpoints hold
outside the weights (what `torch.serialization.get_unsafe_globals_in_checkpoint` reports for one
written by fairseq 0.12.3: `argparse.Namespace`; omegaconf's containers, nodes and metadata;
`typing.Any`; `collections.defaultdict` and the builtin types it is given; fairseq's
`Dictionary`; numpy scalars in the training state). Apart from `Namespace`, `defaultdict` and
the builtin types, every allowed name is bound to an inert stand-in defined here, never to the
class itself: nothing is imported from omegaconf, fairseq or numpy, and a stand-in's only
behaviour is keeping the state the pickle hands it, which `_plain` turns into dicts and lists.
Any other global (a `__reduce__` naming `os.system`, `builtins.eval`, ...) makes torch refuse the
file, and `read_fairseq_checkpoint` raises a CheckpointError that names it.

torch itself is imported only here, lazily: reading a `.pt` needs it, nothing else does.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import zipfile
from typing import Any, Mapping, NamedTuple, Optional

import numpy as np

from jaxdisco.errors import CheckpointError, MissingFileError


class FairseqCheckpoint(NamedTuple):
  """What a fairseq `.pt` holds that jaxdisco reads, as plain Python and numpy."""

  path: str
  # {"model": {...}, "task": {...}, ...}: the `cfg` dict; for a legacy `args` checkpoint the flat
  # Namespace's fields serve as both "model" and "task" (argparse had one namespace).
  cfg: dict
  config_source: str  # "cfg" or "args": where `cfg` came from.
  state_dict: dict  # name -> float32 numpy array, as in `model.state_dict()`.
  num_updates: Optional[int]  # optimizer_history[-1]["num_updates"], when recorded.
  # HuBERT: the number of symbols of each label Dictionary in task_state, when stored; the model
  # splits `label_embs_concat` into these (the state dict has only their sum).
  label_set_sizes: Optional[tuple[int, ...]]
  # ... and each Dictionary's (symbols, nspecial): its rows are fairseq's special symbols
  # (<s>, <pad>, </s>, <unk>) first, then the units as written in dict.km.txt.
  label_dictionaries: Optional[tuple[tuple[tuple[str, ...], int], ...]] = None


class FairseqModel(NamedTuple):
  """A fairseq checkpoint as a jaxdisco model (`load_fairseq_checkpoint`)."""

  method: str  # "wav2vec2", "hubert" or "vq_wav2vec" (a `jaxdisco.methods` name).
  config: Any  # ModelConfig or VqWav2VecConfig.
  params: dict  # {'params': ...} in the layout of the method's pretraining module.
  step: Optional[int]  # fairseq's num_updates, when recorded.
  run_fields: dict  # Run-config fields the checkpoint fixes (`fairseq_config.FairseqModelSpec`).
  label_set_sizes: Optional[tuple[int, ...]]  # HuBERT: fairseq's rows per label set, if known.
  # HuBERT: True when params' label_embeddings row k is the unit with label id k (see
  # `load_fairseq_checkpoint`); False when the checkpoint does not say which row is which unit.
  label_embeddings_per_unit: bool
  path: str


def load_fairseq_checkpoint(path: str | os.PathLike) -> FairseqModel:
  """A fairseq wav2vec 2.0 / XLS-R, HuBERT or vq-wav2vec `.pt` -> FairseqModel.

  Reads the file safely (`read_fairseq_checkpoint`), maps its config
  (`fairseq_config.spec_from_fairseq`, which refuses options jaxdisco cannot represent, by
  name) and its weights (`fairseq.params_from_fairseq_state_dict`). Raises CheckpointError.

  HuBERT label embeddings: fairseq scores a label set against all rows of its Dictionary, whose
  first `nspecial` (4) are special symbols that are never targets, and its targets are
  Dictionary indices (unit "k" is row 4 + k for the recipe's dict.km.txt). jaxdisco's label ids
  are the k-means ids themselves. With one label set whose units are "0".."K-1" (what the
  recipe writes), `label_embeddings` is therefore the K unit rows in id order and
  `run_fields["labels.num_classes"]` is K, so a run on the same .km labels continues the same
  task (the special rows, which fairseq keeps as extra negatives only, are dropped). Otherwise
  (several label sets, no Dictionary in task_state, other symbols) `label_embeddings` is
  `label_embs_concat` whole and `label_embeddings_per_unit` is False.
  """
  from jaxdisco.export import fairseq as fairseq_params
  from jaxdisco.export import fairseq_config

  checkpoint = read_fairseq_checkpoint(path)
  spec = fairseq_config.spec_from_fairseq(
      checkpoint.cfg,
      checkpoint.state_dict,
      where=checkpoint.path,
      config_source=checkpoint.config_source,
      label_set_sizes=checkpoint.label_set_sizes,
  )
  try:
    params = fairseq_params.params_from_fairseq_state_dict(
        checkpoint.state_dict, spec.method, spec.model_config
    )
  except ValueError as err:
    raise CheckpointError(f"{checkpoint.path}: {err}") from None
  per_unit = False
  run_fields = dict(spec.run_fields)
  rows = _unit_rows(checkpoint.label_dictionaries)
  inner = params["params"]
  if spec.method == "hubert" and rows is not None and "label_embeddings" in inner:
    inner["label_embeddings"] = np.ascontiguousarray(inner["label_embeddings"][rows])
    run_fields["labels.num_classes"] = len(rows)
    per_unit = True
  return FairseqModel(
      method=spec.method,
      config=spec.model_config,
      params=params,
      step=checkpoint.num_updates,
      run_fields=run_fields,
      label_set_sizes=spec.label_set_sizes,
      label_embeddings_per_unit=per_unit,
      path=checkpoint.path,
  )


def _unit_rows(dictionaries) -> Optional[list[int]]:
  """Rows of label_embs_concat for label ids 0..K-1 (one Dictionary of units "0".."K-1"), or
  None when the Dictionary does not say."""
  if not dictionaries or len(dictionaries) != 1:
    return None
  symbols, nspecial = dictionaries[0]
  units = list(symbols[nspecial:])
  if not units or sorted(units) != sorted(str(k) for k in range(len(units))):
    return None
  return [nspecial + units.index(str(k)) for k in range(len(units))]


# ----------------------------------------------------------------------------- stand-ins


class _Pickled:
  """An object the pickle builds for an allow-listed class: holds constructor args and state.

  torch's weights-only unpickler creates allowed classes with `cls(*args)` (REDUCE) or
  `cls.__new__(cls, *args)` (NEWOBJ) and then calls `__setstate__(state)` (BUILD); here these
  only store what they are given.
  """

  def __new__(cls, *args, **kwargs):
    obj = super().__new__(cls)
    obj.args, obj.state = args, None
    return obj

  def __init__(self, *args, **kwargs):
    pass

  def __setstate__(self, state):
    self.state = state


class _OmegaDict(_Pickled):
  """omegaconf.DictConfig: the state holds `_content`, {key: node or container}."""


class _OmegaList(_Pickled):
  """omegaconf.ListConfig: the state holds `_content`, [node or container]."""


class _OmegaNode(_Pickled):
  """An omegaconf value node (AnyNode, StringNode, ...): the state holds `_val`."""


class _FairseqDictionary(_Pickled):
  """fairseq.data.dictionary.Dictionary: the state holds `symbols` (its length is the class
  count the model was built with)."""


class _Ignored(_Pickled):
  """Objects jaxdisco never reads (omegaconf metadata, numpy scalars of the training state)."""


_STAND_INS = {
    "omegaconf.dictconfig.DictConfig": _OmegaDict,
    "omegaconf.listconfig.ListConfig": _OmegaList,
    **{
        f"omegaconf.nodes.{name}": _OmegaNode
        for name in (
            "AnyNode",
            "StringNode",
            "IntegerNode",
            "FloatNode",
            "BooleanNode",
            "EnumNode",
            "BytesNode",
            "PathNode",
            "ValueNode",
        )
    },
    "omegaconf.base.ContainerMetadata": _Ignored,
    "omegaconf.base.Metadata": _Ignored,
    "typing.Any": _Ignored,
    "fairseq.data.dictionary.Dictionary": _FairseqDictionary,
    # numpy 1.x and 2.x names of the numpy values fairseq's meters may leave in extra_state.
    **{
        name: _Ignored
        for name in (
            "numpy.core.multiarray.scalar",
            "numpy._core.multiarray.scalar",
            "numpy.core.multiarray._reconstruct",
            "numpy._core.multiarray._reconstruct",
            "numpy.dtype",
            "numpy.ndarray",
        )
    },
}
# Real classes: building them runs no code beyond storing attributes / items.
_REAL = {
    "argparse.Namespace": argparse.Namespace,
    "collections.defaultdict": collections.defaultdict,
    "builtins.dict": dict,
    "builtins.list": list,
    "builtins.tuple": tuple,
    "builtins.int": int,
    "builtins.float": float,
    "builtins.str": str,
    "builtins.bool": bool,
}
ALLOWED_GLOBALS = tuple(sorted([*_STAND_INS, *_REAL]))


def _safe_globals() -> list:
  return [(stand_in, name) for name, stand_in in _STAND_INS.items()] + [
      (cls, name) for name, cls in _REAL.items()
  ]


# ----------------------------------------------------------------------------- reading


def is_fairseq_checkpoint(path: str | os.PathLike) -> bool:
  """A single file in a torch serialization format (zip, or the legacy pickle stream): what
  fairseq writes. Directories (jaxdisco workdirs, Hugging Face checkpoints) are not."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    return False
  if zipfile.is_zipfile(path):
    return True
  with open(path, "rb") as f:
    return f.read(1) == b"\x80"  # Pickle protocol >= 2: torch's legacy format starts with one.


def read_fairseq_checkpoint(path: str | os.PathLike) -> FairseqCheckpoint:
  """Reads a fairseq `.pt` (see the module docstring) -> FairseqCheckpoint.

  Raises CheckpointError when the file is refused (a global outside the allow-list: it names
  it), is not a checkpoint dict with a "model" state dict, or has neither `cfg` nor `args`.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise MissingFileError(f"fairseq checkpoint {path!r} does not exist or is not a file")
  state = _torch_load(path)
  if not isinstance(state, Mapping) or not isinstance(state.get("model"), Mapping):
    raise CheckpointError(
        f"{path}: not a fairseq checkpoint (expected a dict with a 'model' state dict, as "
        "fairseq's checkpoint_utils writes; got "
        + (f"keys {sorted(map(str, state))})" if isinstance(state, Mapping) else f"{type(state)})")
    )
  cfg, source = _config(state, path)
  state_dict = {str(k): _to_numpy(v, path, k) for k, v in state["model"].items()}
  return FairseqCheckpoint(
      path=path,
      cfg=cfg,
      config_source=source,
      state_dict=state_dict,
      num_updates=_num_updates(state),
      label_set_sizes=_label_set_sizes(state),
      label_dictionaries=_label_dictionaries(state),
  )


def _torch_load(path: str):
  try:
    import torch
  except ImportError:
    raise CheckpointError(
        f"{path}: reading a fairseq checkpoint needs PyTorch (the file is a torch pickle): "
        "pip install torch"
    ) from None
  if zipfile.is_zipfile(path):
    with zipfile.ZipFile(path) as archive:
      if any(name.endswith("constants.pkl") for name in archive.namelist()):
        # torch.load hands TorchScript archives to torch.jit.load, which runs their code.
        raise CheckpointError(f"{path}: a TorchScript archive, not a fairseq checkpoint")
  import pickle

  try:
    with torch.serialization.safe_globals(_safe_globals()):
      return torch.load(path, map_location="cpu", weights_only=True)
  except pickle.UnpicklingError as err:
    found = re.search(r"GLOBAL ([\w.]+)", str(err))
    named = f"it names {found.group(1)}, which" if found else "it holds an object that"
    raise CheckpointError(
        f"{path}: refused to unpickle: {named} is not one of the classes a fairseq checkpoint "
        "holds, and loading it could run code from the file (jaxdisco reads tensors, plain "
        "containers and jaxdisco.export.fairseq_checkpoint.ALLOWED_GLOBALS only)"
    ) from None
  except (RuntimeError, EOFError, ValueError, OSError) as err:
    raise CheckpointError(f"{path}: cannot read it as a torch checkpoint: {err}") from None


def _to_numpy(value, path: str, key) -> np.ndarray:
  if not hasattr(value, "detach"):
    raise CheckpointError(f"{path}: model[{key!r}] is a {type(value).__name__}, not a tensor")
  return np.ascontiguousarray(value.detach().cpu().float().numpy())


def _config(state: Mapping, path: str) -> tuple[dict, str]:
  cfg = state.get("cfg")
  if cfg is not None:
    plain = _plain(cfg)
    if not isinstance(plain, dict) or not isinstance(plain.get("model"), dict):
      raise CheckpointError(f"{path}: its 'cfg' has no 'model' section")
    return _resolve_interpolations(plain), "cfg"
  args = state.get("args")
  if args is not None:
    flat = _plain(args)
    if not isinstance(flat, dict):
      raise CheckpointError(f"{path}: its 'args' is a {type(args).__name__}, not a Namespace")
    # Legacy fairseq parsed model, task and optimizer options into one namespace; the model's
    # name was `arch`.
    return {"model": {"_name": flat.get("arch"), **flat}, "task": flat}, "args"
  raise CheckpointError(f"{path}: the checkpoint has neither 'cfg' nor 'args' (no model config)")


def _plain(obj: Any, depth: int = 0) -> Any:
  """Stand-ins, Namespaces and containers -> plain dicts, lists and scalars."""
  if depth > 64:
    raise CheckpointError("fairseq checkpoint config nests deeper than 64 levels")
  if isinstance(obj, _OmegaNode):
    return _plain((obj.state or {}).get("_val"), depth + 1)
  if isinstance(obj, (_OmegaDict, _OmegaList)):
    content = (obj.state or {}).get("_content")
    # `_content` is None for a None config and a string for "???" (missing) or "${...}".
    return content if content is None or isinstance(content, str) else _plain(content, depth + 1)
  if isinstance(obj, _FairseqDictionary):
    state = obj.state or {}
    symbols = [str(symbol) for symbol in state.get("symbols", [])]
    return {"symbols": symbols, "nspecial": state.get("nspecial")}
  if isinstance(obj, _Ignored):
    return None
  if isinstance(obj, argparse.Namespace):
    return {k: _plain(v, depth + 1) for k, v in vars(obj).items()}
  if isinstance(obj, Mapping):
    return {k: _plain(v, depth + 1) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return type(obj)(_plain(v, depth + 1) for v in obj)
  return obj


_INTERPOLATION = re.compile(r"^\$\{(\w+)\.(\w+)\}$")


def _resolve_interpolations(cfg: dict) -> dict:
  """`${task.label_rate}`-style references (unresolved in a pickled DictConfig) -> their value;
  fairseq's own files store them resolved (`to_container(resolve=True)`)."""

  def resolve(value):
    match = _INTERPOLATION.match(value) if isinstance(value, str) else None
    if match and isinstance(cfg.get(match.group(1)), dict):
      return cfg[match.group(1)].get(match.group(2), value)
    return value

  return {
      block: {k: resolve(v) for k, v in fields.items()} if isinstance(fields, dict) else fields
      for block, fields in cfg.items()
  }


def _num_updates(state: Mapping) -> Optional[int]:
  history = state.get("optimizer_history")
  if isinstance(history, (list, tuple)) and history and isinstance(history[-1], Mapping):
    value = history[-1].get("num_updates")
    if isinstance(value, (int, float)):
      return int(value)
  return None


def _dictionaries(state: Mapping) -> Optional[list[dict]]:
  task_state = _plain(state.get("task_state") or {})
  dictionaries = task_state.get("dictionaries") if isinstance(task_state, dict) else None
  if not isinstance(dictionaries, (list, tuple)) or not dictionaries:
    return None
  if not all(isinstance(d, dict) and "symbols" in d for d in dictionaries):
    return None
  return list(dictionaries)


def _label_set_sizes(state: Mapping) -> Optional[tuple[int, ...]]:
  dictionaries = _dictionaries(state)
  return None if dictionaries is None else tuple(len(d["symbols"]) for d in dictionaries)


def _label_dictionaries(state: Mapping):
  dictionaries = _dictionaries(state)
  if dictionaries is None or not all(isinstance(d.get("nspecial"), int) for d in dictionaries):
    return None
  return tuple((tuple(d["symbols"]), d["nspecial"]) for d in dictionaries)
