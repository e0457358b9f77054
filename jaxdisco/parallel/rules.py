"""Logical axis names -> mesh axes, and the shardings of a train state that follow from them.

Models name the axes of every parameter and of the few activations worth constraining (see
`models/layers.py`); `config.parallel.rules` is the one table that maps those names onto the
mesh. A name missing from the table, or mapped to None, is not split. A mesh axis is used at
most once per array (flax takes the first rule that applies), and a dimension that the mesh
axes do not divide evenly stays whole: both show up in the layout report (`layout.py`).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
from flax import linen as nn
from jax.sharding import NamedSharding, PartitionSpec

# (logical name, mesh axis or axes or None). Order matters: the first rule that names an
# array's axis and whose mesh axis is still free wins.
DEFAULT_RULES = (
    # Activations.
    ("batch", ("data", "fsdp")),
    ("conv_batch", ("data", "fsdp", "tensor")),  # See models/transformer.py (positional conv).
    ("frames", None),
    ("activation_embed", None),  # The residual stream is replicated over tensor ranks.
    # Parameters: fsdp splits the model dimension, tensor splits heads and the FFN.
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("position_buckets", None),  # WavLM's bias table [buckets, heads]: split by heads only.
    ("conv_out", "fsdp"),
    ("conv_in", "tensor"),
    ("vocab", "tensor"),
    ("codevector", "fsdp"),
    ("final", "tensor"),
)

Rules = Sequence[tuple[str, Any]]


def rules_from_config(parallel) -> tuple[tuple[str, Any], ...]:
  """The rules table as hashable tuples (configs and JSON turn tuples into lists)."""
  out = []
  for logical, mesh_axes in parallel.rules:
    if isinstance(mesh_axes, (list, tuple)):
      mesh_axes = tuple(mesh_axes)
    out.append((str(logical), mesh_axes))
  return tuple(out)


def _axis_size(mesh, axes) -> int:
  if axes is None:
    return 1
  if isinstance(axes, str):
    axes = (axes,)
  return math.prod(mesh.shape[a] for a in axes)


def mesh_spec(logical: PartitionSpec, shape: Sequence[int], mesh, rules: Rules) -> PartitionSpec:
  """Mesh PartitionSpec for an array with logical axis names `logical` and `shape`.

  Dimensions the mapped mesh axes do not divide stay unsplit (jit refuses uneven shards).
  """
  mapped = nn.logical_to_mesh_axes(tuple(logical), rules) if len(logical) else PartitionSpec()
  mapped = tuple(mapped) + (None,) * (len(shape) - len(tuple(mapped)))
  fixed = [
      axes if axes is not None and dim % _axis_size(mesh, axes) == 0 else None
      for axes, dim in zip(mapped, shape)
  ]
  while fixed and fixed[-1] is None:
    fixed.pop()
  return PartitionSpec(*fixed)


def _is_spec(x) -> bool:
  return isinstance(x, PartitionSpec)


def unbox_shapes(tree):
  """Strips logical-partitioning boxes without adding sharding constraints (shapes only)."""
  is_box = lambda x: isinstance(x, nn.meta.Partitioned)
  return jax.tree.map(lambda x: x.value if is_box(x) else x, tree, is_leaf=is_box)


def tree_shardings(abstract_boxed, mesh, rules: Rules):
  """NamedShardings for every leaf of a tree of (possibly logically boxed) shapes.

  `abstract_boxed` is what `jax.eval_shape` returns for a function that builds params with
  `nn.with_logical_partitioning`; the result has the structure of the *unboxed* tree.
  Unboxed leaves (step counters, rng) are replicated.
  """
  logical = nn.get_partition_spec(abstract_boxed)
  shapes = unbox_shapes(abstract_boxed)
  # A box may hold an empty node instead of an array: optax's MaskedNode, where
  # `multi_transform` keeps no state for a frozen parameter (`Method.frozen_params`). It stays.
  return jax.tree.map(
      lambda spec, shape: (
          NamedSharding(mesh, mesh_spec(spec, shape.shape, mesh, rules))
          if hasattr(shape, "shape")
          else shape
      ),
      logical,
      shapes,
      is_leaf=_is_spec,
  )


def batch_mesh_axes(rules: Rules) -> tuple[str, ...]:
  """The mesh axes the batch dimension is split over: the table's 'batch' rule, the one place
  that says so (the config checks, the trainer's batch sharding and per-host input read it)."""
  for logical, mesh_axes in rules:
    if logical == "batch":
      if mesh_axes is None:
        return ()
      return (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes)
  return ()


def batch_sharding(mesh, rules: Rules) -> NamedSharding:
  """Leading (batch) dimension split like the logical 'batch' axis (over those of its mesh
  axes that `mesh` has)."""
  axes = tuple(a for a in batch_mesh_axes(rules) if a in mesh.axis_names)
  return NamedSharding(mesh, PartitionSpec(axes or None))
