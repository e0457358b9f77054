"""Where the parameter and optimizer bytes live: a start-up report and a replication check.

Works on shapes and shardings only (`jax.ShapeDtypeStruct`s or arrays), so the same code
reports a real run and an ahead-of-time lowering on an abstract pod-sized mesh (`aot.py`).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np
from jax.sharding import NamedSharding

from jaxdisco.errors import UserError


class ReplicationError(UserError, ValueError):
  pass


@dataclasses.dataclass(frozen=True)
class LeafLayout:
  path: str
  shape: tuple[int, ...]
  spec: str
  global_bytes: int
  device_bytes: int  # Bytes of this leaf on each device (its shard).

  @property
  def replicated(self) -> bool:
    return self.global_bytes > 0 and self.device_bytes == self.global_bytes


@dataclasses.dataclass(frozen=True)
class Layout:
  mesh_shape: dict
  params: list[LeafLayout]
  optimizer: list[LeafLayout]

  @staticmethod
  def _sum(leaves, attr):
    return sum(getattr(x, attr) for x in leaves)

  @property
  def param_bytes(self) -> int:
    return self._sum(self.params, "global_bytes")

  @property
  def param_bytes_per_device(self) -> int:
    return self._sum(self.params, "device_bytes")

  @property
  def optimizer_bytes_per_device(self) -> int:
    return self._sum(self.optimizer, "device_bytes")

  @property
  def replicated_param_bytes(self) -> int:
    return sum(x.global_bytes for x in self.params if x.replicated)

  @property
  def replicated_fraction(self) -> float:
    return self.replicated_param_bytes / max(self.param_bytes, 1)

  def report(self, top: int = 5) -> str:
    mib = lambda b: f"{b / 2**20:,.1f} MiB"
    largest = sorted((x for x in self.params if x.replicated), key=lambda x: -x.global_bytes)
    lines = [
        f"Parameter layout on mesh {self.mesh_shape}: params {mib(self.param_bytes)} total, "
        f"{mib(self.param_bytes_per_device)} per device; optimizer state "
        f"{mib(self.optimizer_bytes_per_device)} per device; replicated params "
        f"{mib(self.replicated_param_bytes)} ({100 * self.replicated_fraction:.1f}%)"
    ]
    if largest and any(size > 1 for size in self.mesh_shape.values()):
      lines.append(
          "  largest replicated: "
          + ", ".join(f"{x.path} {list(x.shape)} {mib(x.global_bytes)}" for x in largest[:top])
      )
    return "\n".join(lines)


def _shard_bytes(x, sharding) -> int:
  itemsize = np.dtype(x.dtype).itemsize
  if sharding is None:
    return int(math.prod(x.shape)) * itemsize
  return int(math.prod(sharding.shard_shape(tuple(x.shape)))) * itemsize


def _leaves(tree, shardings) -> list[LeafLayout]:
  out = []
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  flat_shardings = jax.tree.leaves(shardings, is_leaf=lambda s: isinstance(s, NamedSharding))
  for (path, x), sharding in zip(flat, flat_shardings, strict=True):
    out.append(
        LeafLayout(
            path=jax.tree_util.keystr(path, simple=True, separator="/"),
            shape=tuple(x.shape),
            spec=str(sharding.spec) if isinstance(sharding, NamedSharding) else "",
            global_bytes=int(math.prod(x.shape)) * np.dtype(x.dtype).itemsize,
            device_bytes=_shard_bytes(x, sharding),
        )
    )
  return out


def state_layout(abstract_state, shardings) -> Layout:
  """Layout of a TrainState (shapes) under its shardings (a TrainState of NamedShardings)."""
  mesh = jax.tree.leaves(shardings, is_leaf=lambda s: isinstance(s, NamedSharding))[0].mesh
  return Layout(
      dict(mesh.shape),
      _leaves(abstract_state.params, shardings.params),
      _leaves(abstract_state.opt_state, shardings.opt_state),
  )


def check_replication(layout: Layout, max_fraction: float) -> None:
  """Fails when, with fsdp > 1, more than `max_fraction` of parameter bytes are replicated:
  the run would pay for fsdp's all-gathers and still hold whole copies on every device."""
  if layout.mesh_shape.get("fsdp", 1) <= 1 or layout.replicated_fraction <= max_fraction:
    return
  largest = sorted((x for x in layout.params if x.replicated), key=lambda x: -x.global_bytes)
  raise ReplicationError(
      f"{100 * layout.replicated_fraction:.1f}% of parameter bytes are replicated on every "
      f"device although parallel.fsdp={layout.mesh_shape['fsdp']} (limit: "
      f"parallel.max_replicated_fraction={max_fraction}). Largest replicated parameters: "
      + ", ".join(f"{x.path} {list(x.shape)}" for x in largest[:5])
      + ". Map their logical axes to 'fsdp' in parallel.rules, pick sizes that divide them, or "
      "raise parallel.max_replicated_fraction."
  )
