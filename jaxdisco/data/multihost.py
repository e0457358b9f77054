"""Per-host input: local batch sizes and global arrays from process-local batches.

Each process reads a disjoint slice of the data and builds a local batch of
`global_batch_size / process_count` rows; the trainer turns the local batches
of all processes into one global `jax.Array` sharded over the batch axes,
without any process sending data to another
(`jax.make_array_from_process_local_data`).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Union

import jax
import numpy as np
from jax.sharding import Mesh

from jaxdisco.parallel import rules as rules_lib

def global_batch_to_local(global_batch_size: int, process_count: Optional[int] = None) -> int:
  """Rows of the batch each process builds.

  Raises:
    ValueError: `global_batch_size` is not a positive multiple of the number
      of processes (the hosts would build batches of different sizes).
  """
  process_count = jax.process_count() if process_count is None else process_count
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise ValueError(
        f'global batch size {global_batch_size} must be a positive multiple of the number of '
        f'processes ({process_count}), so every host reads the same number of rows; use e.g. '
        f'{max(1, round(global_batch_size / process_count)) * process_count}'
    )
  return global_batch_size // process_count


def make_global_batch(
    local_batch: Mapping[str, np.ndarray],
    mesh_or_sharding: Union[Mesh, jax.sharding.Sharding],
    process_count: Optional[int] = None,
) -> dict[str, Any]:
  """Global arrays `[local_rows * process_count, ...]` from this process's batch.

  Every leaf's leading axis is the batch axis. With a `Mesh`, batch rows are
  split as the default rules table's 'batch' rule says; pass a `Sharding` to choose (the
  trainer passes the one its config's rules give, `parallel.rules.batch_sharding`).
  """
  sharding = mesh_or_sharding
  if isinstance(sharding, Mesh):
    sharding = rules_lib.batch_sharding(sharding, rules_lib.DEFAULT_RULES)
  process_count = jax.process_count() if process_count is None else process_count

  def to_global(x):
    x = np.asarray(x)
    global_shape = (x.shape[0] * process_count, *x.shape[1:])
    return jax.make_array_from_process_local_data(sharding, x, global_shape)

  return {k: to_global(v) for k, v in local_batch.items()}
