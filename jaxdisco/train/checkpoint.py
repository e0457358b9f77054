"""Orbax checkpoints of the train state, data iterator and config, with resume and checks.

Layout of a workdir:
  config.json              the full run config (written at start)
  checkpoints/<step>/      state (params, optimizer, rng, counters), data (iterator), meta
  metrics.jsonl, events.*, curves.png
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, NamedTuple, Optional

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath

from jaxdisco.errors import CheckpointError, MissingFileError
from jaxdisco.train import config_compat
from jaxdisco import methods

log = logging.getLogger("jaxdisco")


class CheckpointMismatchError(CheckpointError):
  pass


def checkpoint_dir(workdir) -> epath.Path:
  return epath.Path(workdir) / "checkpoints"


def make_manager(
    workdir, *, save_every: int, keep: int, async_save: bool = True
) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      save_interval_steps=save_every,
      max_to_keep=keep,
      enable_async_checkpointing=async_save,
      create=True,
  )
  return ocp.CheckpointManager(
      checkpoint_dir(workdir), options=options, item_names=("state", "data", "meta")
  )


def save(
    manager: ocp.CheckpointManager,
    step: int,
    state,
    data_iterator,
    config_dict: dict,
    *,
    force: bool = False,
) -> bool:
  method = config_dict.get("method", "wav2vec2")
  meta = {"step": int(step), "method": method, "config": config_dict}
  return manager.save(
      int(step),
      args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          data=grain.checkpoint.CheckpointSave(data_iterator),
          meta=ocp.args.JsonSave(meta),
      ),
      force=force,
  )


def check_compatible(saved_config: dict, config_dict: dict, where: str) -> None:
  """Raises CheckpointMismatchError naming every field whose value differs among those that
  decide the saved parameters: the method, `model` and the method's `param_fields` (a different
  learning rate can resume). A field absent from either config stands for its default."""
  method = methods.get_method(config_dict.get("method", "wav2vec2"))
  diffs = config_compat.differences(
      config_compat.parameter_config(saved_config, method),
      config_compat.parameter_config(config_dict, method),
      config_compat.schema_defaults(method),
  )
  if diffs:
    raise CheckpointMismatchError(
        f"{where} was written by an incompatible config; mismatched fields:\n  "
        + "\n  ".join(
            f"{d.path}: checkpoint has {d.saved!r}, config has {d.current!r}" for d in diffs
        )
        + "\nUse a fresh --workdir, or match these config values."
    )


def restore_latest(
    manager: ocp.CheckpointManager, abstract_state, data_iterator, config_dict: dict
) -> Optional[tuple[Any, int]]:
  """Restores the newest checkpoint into (state, step), advancing `data_iterator` in place;
  None if the workdir has none. Checks config compatibility before touching arrays."""
  step = manager.latest_step()
  if step is None:
    return None
  where = str(checkpoint_dir(manager.directory.parent) / str(step))
  meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
  check_compatible(meta["config"], config_dict, where)
  restored = manager.restore(
      step,
      args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state),
          data=grain.checkpoint.CheckpointRestore(data_iterator),
      ),
  )
  return restored["state"], step


def find_checkpoint(path: epath.Path) -> tuple[epath.Path, dict]:
  """A workdir (newest step), a checkpoints/ dir, or one step dir -> (step dir, meta)."""
  candidates = [path, path / "checkpoints"]
  for candidate in candidates:
    if (candidate / "meta").exists():
      step_dir = candidate
      break
    steps = (
        sorted((int(p.name) for p in candidate.glob("*") if p.name.isdigit()), reverse=True)
        if candidate.exists()
        else []
    )
    if steps:
      step_dir = candidate / str(steps[0])
      break
  else:
    raise MissingFileError(
        f"{path}: no jaxdisco checkpoint found (expected a workdir with "
        "checkpoints/<step>/ or a checkpoint step directory)"
    )
  meta_file = next(iter((step_dir / "meta").glob("*")), None)
  if meta_file is None:
    raise MissingFileError(f"{step_dir}: checkpoint has no meta item")
  return step_dir, json.loads(meta_file.read_text())


class LoadedCheckpoint(NamedTuple):
  """A training checkpoint's parameters for inference."""

  method: str  # "wav2vec2", "hubert", "vq_wav2vec" (a `jaxdisco.methods` name).
  config: Any  # The method's typed model config (ModelConfig, VqWav2VecConfig).
  params: dict  # {'params': ...} in the pretraining layout.
  step: int


def checkpoint_method(meta: dict, param_names) -> str:
  """The method a checkpoint was trained with: recorded in its meta since checkpoints record
  it; for older ones, inferred from its top-level parameter names (and said so in the log)."""
  if "method" in meta:
    return meta["method"]
  inferred = methods.infer_method(param_names)
  configured = meta.get("config", {}).get("method", inferred)
  if configured != inferred:
    raise CheckpointMismatchError(
        f"checkpoint config says method {configured!r} but its parameters "
        f"{sorted(param_names)} are those of {inferred!r}"
    )
  log.warning(
      "checkpoint written before checkpoints recorded their method: method %r inferred from "
      "its parameters %s",
      inferred,
      sorted(param_names),
  )
  return inferred


def load_pretrained_params(path, *, for_inference: bool = True) -> LoadedCheckpoint:
  """Params of a training checkpoint (a workdir, its checkpoints/ dir or one step dir) for
  inference (in the method's `inference_params` layout; `for_inference=False`: as trained),
  on the default device, with the method that trained them."""
  path = str(path)
  if "://" not in path:
    path = os.path.abspath(path)  # Orbax misreads relative paths.
  step_dir, meta = find_checkpoint(epath.Path(path))
  # Restore every array whole onto the default device, whatever mesh wrote it (a checkpoint
  # from 256 TPU chips loads on one CPU).
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  with ocp.PyTreeCheckpointer() as checkpointer:
    tree = checkpointer.metadata(step_dir / "state")
    tree = getattr(tree, "item_metadata", tree)
    tree = getattr(tree, "tree", tree)
    method = methods.get_method(checkpoint_method(meta, set(tree["params"]["params"])))
    target = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree["params"]
    )
    restored = checkpointer.restore(
        step_dir / "state",
        args=ocp.args.PyTreeRestore(
            item={"params": target},
            partial_restore=True,
            restore_args={"params": ocp.checkpoint_utils.construct_restore_args(target)},
        ),
    )
  config = method.model_config_type.from_dict(meta["config"]["model"])
  params = restored["params"]
  if for_inference and method.inference_params is not None:
    params = method.inference_params(params)
  return LoadedCheckpoint(method.name, config, params, int(meta["step"]))
