"""Orbax checkpoints of the train state, data iterator and config, with resume and checks.

Layout of a workdir:
  config.json              the full run config (written at start)
  checkpoints/<step>/      state (params, optimizer, rng, counters), data (iterator), meta
  metrics.jsonl, events.*, curves.png
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath

from jaxdisco.models.config import ModelConfig, without_compute_only

# Config blocks that decide the shapes and meaning of saved parameters: a checkpoint written
# under different values cannot be resumed (a different learning rate can).
_COMPATIBILITY_BLOCKS = ("model",)


class CheckpointMismatchError(ValueError):
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
  meta = {"step": int(step), "config": config_dict}
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
  """Raises CheckpointMismatchError naming every field whose value differs."""
  diffs = []
  for block in _COMPATIBILITY_BLOCKS:
    saved = without_compute_only(saved_config.get(block, {}))
    current = without_compute_only(config_dict.get(block, {}))
    for field in sorted(set(saved) | set(current)):
      if saved.get(field, "<absent>") != current.get(field, "<absent>"):
        diffs.append(
            f"{block}.{field}: checkpoint has {saved.get(field, '<absent>')!r}, "
            f"config has {current.get(field, '<absent>')!r}"
        )
  if diffs:
    raise CheckpointMismatchError(
        f"{where} was written by an incompatible config; mismatched fields:\n  "
        + "\n  ".join(diffs)
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
    raise FileNotFoundError(
        f"{path}: no jaxdisco checkpoint found (expected a workdir with "
        "checkpoints/<step>/ or a checkpoint step directory)"
    )
  meta_file = next(iter((step_dir / "meta").glob("*")), None)
  if meta_file is None:
    raise FileNotFoundError(f"{step_dir}: checkpoint has no meta item")
  return step_dir, json.loads(meta_file.read_text())


def load_pretrained_params(path) -> tuple[ModelConfig, dict, int]:
  """Params of a training checkpoint for inference, on the default device.

  Returns (ModelConfig, or VqWav2VecConfig for a vq-wav2vec run; {'params': ...} in the
  pretraining layout; step).
  """
  path = str(path)
  if "://" not in path:
    path = os.path.abspath(path)  # Orbax misreads relative paths.
  step_dir, meta = find_checkpoint(epath.Path(path))
  if meta["config"].get("method") == "vq_wav2vec":
    from jaxdisco.models.vq_wav2vec_config import VqWav2VecConfig

    config = VqWav2VecConfig.from_dict(meta["config"]["model"])
  else:
    config = ModelConfig.from_dict(meta["config"]["model"])
  # Restore every array whole onto the default device, whatever mesh wrote it (a checkpoint
  # from 256 TPU chips loads on one CPU).
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  with ocp.PyTreeCheckpointer() as checkpointer:
    tree = checkpointer.metadata(step_dir / "state")
    tree = getattr(tree, "item_metadata", tree)
    tree = getattr(tree, "tree", tree)
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
  return config, restored["params"], int(meta["step"])
