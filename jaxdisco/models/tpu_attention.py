"""Flash attention on TPU: jax's Pallas kernel (`jax.experimental.pallas.ops.tpu.flash_attention`)
for jaxdisco's padded batches, inside the trainer's mesh.

Padding is expressed as segment ids: valid frames are segment 1, padded frames segment 0, so a
valid query attends to the valid keys of its row only, and a padded query to padded keys (its
output is never read: every loss and unit masks padded frames). Frames are padded to the
kernel's block (128) with segment 0 and cut back afterwards. Mosaic kernels cannot be
partitioned automatically, so under a mesh the kernel runs per shard (`jax.shard_map`): rows
split as the `batch` logical axis is mapped, heads as `heads` is (when they divide). The kernel
has no dropout on attention probabilities and no additive bias here, so `SelfAttention` keeps
XLA's attention for training with attention dropout and for WavLM's position bias.

On CPU the same kernel runs in Pallas' TPU interpret mode (`pltpu.force_tpu_interpret_mode`),
which is how tests/test_tpu_attention.py checks values and gradients against XLA's attention.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax.sharding import PartitionSpec

BLOCK = 128  # The kernel's block size along frames (its minimum, and a lane multiple).

Array = jax.Array


def target_platform() -> str:
  """The platform being compiled for: the context mesh's devices (a TPU topology's
  compile-only devices under `jaxdisco plan`), else the default backend."""
  mesh = jax.sharding.get_abstract_mesh()
  device = getattr(mesh, "abstract_device", None)
  platform = getattr(device, "platform", None)
  return platform or jax.default_backend()


def _flash(q: Array, k: Array, v: Array, segments: Array, scale: float) -> Array:
  """[batch, heads, frames, head_dim] inputs whose frames are a multiple of BLOCK."""
  from jax.experimental.pallas.ops.tpu import flash_attention as fa  # pylint: disable=g-import-not-at-top

  b = BLOCK
  sizes = fa.BlockSizes(
      block_q=b,
      block_k_major=b,
      block_k=b,
      block_b=1,
      block_q_major_dkv=b,
      block_k_major_dkv=b,
      block_k_dkv=b,
      block_q_dkv=b,
      block_k_major_dq=b,
      block_k_dq=b,
      block_q_dq=b,
  )
  ids = fa.SegmentIds(q=segments, kv=segments)
  return fa.flash_attention(q, k, v, segment_ids=ids, sm_scale=scale, block_sizes=sizes)


def _dividing(mesh, axes, size: int):
  """`axes` (a mesh axis name, a tuple of them or None) if their product divides `size`, else
  None: a dimension that does not divide stays whole on every shard (e.g. a 1-row init)."""
  if axes is None:
    return None
  ways = 1
  for name in axes if isinstance(axes, tuple) else (axes,):
    ways *= mesh.shape[name]
  return axes if size % ways == 0 else None


def _mesh_specs(batch: int, num_heads: int):
  """(mesh, spec of [batch, heads, frames, dim], spec of [batch, frames]) for shard_map, or
  None outside a mesh of more than one device."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh is None or mesh.empty or mesh.size == 1:
    return None
  rows = _dividing(mesh, nn.logical_to_mesh_axes(("batch",))[0], batch)
  heads = _dividing(mesh, nn.logical_to_mesh_axes(("heads",))[0], num_heads)
  return mesh, PartitionSpec(rows, heads, None, None), PartitionSpec(rows, None)


def pallas_attention(q: Array, k: Array, v: Array, key_valid: Array) -> Array:
  """softmax(q k^T / sqrt(d)) v over [batch, frames, heads, head_dim], keys where `key_valid`
  [batch, frames] (padding at the end of each row), with the Pallas TPU flash kernel."""
  batch, t, heads, head_dim = q.shape
  extra = -t % BLOCK
  to_kernel = lambda y: jnp.pad(y, ((0, 0), (0, extra), (0, 0), (0, 0))).transpose(0, 2, 1, 3)
  segments = jnp.pad(key_valid.astype(jnp.int32), ((0, 0), (0, extra)))
  kernel = functools.partial(_flash, scale=head_dim**-0.5)
  specs = _mesh_specs(batch, heads)
  if specs is not None:
    mesh, spec, segment_spec = specs
    kernel = jax.shard_map(
        kernel,
        mesh=mesh,
        in_specs=(spec, spec, spec, segment_spec),
        out_specs=spec,
        check_vma=False,
    )
  out = kernel(to_kernel(q), to_kernel(k), to_kernel(v), segments)
  return out.transpose(0, 2, 1, 3)[:, :t]
