"""The device mesh: three axes (data, fsdp, tensor), sized from `config.parallel`.

  data    plain data parallelism: parameters replicated, batch split.
  fsdp    fully sharded data parallelism: batch split *and* parameters/optimizer state split;
          weights are all-gathered layer by layer inside the step.
  tensor  Megatron-style tensor parallelism of attention heads and the FFN.

Sizes are per slice (ICI); `dcn_*` sizes split the same axes across slices (multi-slice TPU
pods talk over the data-center network, so put `data` there). One size per group may be -1,
meaning "whatever fills the devices". The axis types are Auto: jit propagates shardings and the
model code only ever names logical axes (see `rules.py`).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AbstractMesh, AxisType, Mesh

from jaxdisco.errors import UserError
from jaxdisco.parallel.rules import batch_mesh_axes

MESH_AXES = ("data", "fsdp", "tensor")


class MeshError(UserError, ValueError):
  pass


def fill_shape(sizes: Sequence[int], total: int, what: str) -> tuple[int, ...]:
  """Replaces the one -1 in `sizes` so that their product is `total`."""
  sizes = [int(s) for s in sizes]
  free = [i for i, s in enumerate(sizes) if s == -1]
  if len(free) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise MeshError(f"{what}: sizes {tuple(sizes)} must be positive, with at most one -1")
  known = math.prod(s for s in sizes if s != -1)
  if free:
    if total % known:
      raise MeshError(
          f"{what}: {total} devices cannot be split as {tuple(sizes)} "
          f"({total} is not a multiple of {known})"
      )
    sizes[free[0]] = total // known
  if math.prod(sizes) != total:
    raise MeshError(
        f"{what}: sizes {tuple(sizes)} use {math.prod(sizes)} devices but there are "
        f"{total}; set one size to -1 to fill"
    )
  return tuple(sizes)


def mesh_shapes(
    parallel, num_devices: int, num_slices: int = 1
) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """(per-slice ICI shape, DCN shape), both ordered like MESH_AXES."""
  dcn = fill_shape(
      [parallel.dcn_data, parallel.dcn_fsdp, parallel.dcn_tensor],
      num_slices,
      "parallel.dcn_{data,fsdp,tensor}",
  )
  if num_devices % num_slices:
    raise MeshError(f"{num_devices} devices do not split into {num_slices} equal slices")
  ici = fill_shape(
      [parallel.data, parallel.fsdp, parallel.tensor],
      num_devices // num_slices,
      "parallel.{data,fsdp,tensor}",
  )
  return ici, dcn


def _num_slices(devices) -> int:
  return len({getattr(d, "slice_index", 0) for d in devices})


def make_mesh(parallel, devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A physical mesh over `devices` (default: all), axes MESH_AXES, Auto axis types.

  On a multi-slice TPU job (devices carry `slice_index`) the DCN sizes split the slices and
  `create_hybrid_device_mesh` keeps every ICI group within one slice.
  """
  devices = list(jax.devices() if devices is None else devices)
  slices = _num_slices(devices)
  ici, dcn = mesh_shapes(parallel, len(devices), slices)
  if slices > 1:
    grid = mesh_utils.create_hybrid_device_mesh(ici, dcn, devices)
  else:
    try:
      grid = mesh_utils.create_device_mesh(ici, devices)
    except (ValueError, NotImplementedError, AssertionError):
      # Topology-aware placement only exists for TPUs/GPUs; elsewhere any order will do.
      grid = np.asarray(devices).reshape(ici)
  return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def abstract_mesh(parallel, num_devices: int) -> AbstractMesh:
  """A device-less mesh of `num_devices` (for lowering at pod scale on a laptop)."""
  ici, dcn = mesh_shapes(parallel, num_devices)
  shape = tuple(i * d for i, d in zip(ici, dcn))
  return AbstractMesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def batch_parallelism(mesh, rules) -> int:
  """How many ways the batch is split: the product of the sizes of the mesh axes that the
  rules table's 'batch' rule names."""
  return math.prod(mesh.shape[a] for a in batch_mesh_axes(rules) if a in mesh.shape)
