"""A host's share of the input: one or more data shards, concatenated row-wise.

By default each process reads one shard (`process_index` of `process_count`). With
`data.input_shards = S` (a multiple of the process count) the stream is cut into S shards
whatever the number of hosts, and process p reads shards [p*S/P, (p+1)*S/P): the global batch,
and so the training run, is then the same on 1 host or on P hosts. The multi-process test uses
this to compare a 2-process run with a 1-process one.
"""

from __future__ import annotations

import json
from typing import Callable

import numpy as np


class ShardedBatchIterator:
  """Concatenates the next batch of several grain iterators along the batch axis.

  Checkpointable by grain's Orbax handler (`get_state` / `set_state` with bytes).
  """

  def __init__(self, iterators: list):
    self._iterators = iterators

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    batches = [next(it) for it in self._iterators]
    if len(batches) == 1:
      return batches[0]
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}

  def get_state(self) -> bytes:
    return json.dumps({"shards": [it.get_state() for it in self._iterators]}).encode()

  def set_state(self, state: bytes) -> None:
    shards = json.loads(state)["shards"]
    if len(shards) != len(self._iterators):
      raise ValueError(
          f"data iterator checkpoint has {len(shards)} shards, this process reads "
          f"{len(self._iterators)}: keep data.input_shards / the process count"
      )
    for it, s in zip(self._iterators, shards):
      it.set_state(s)

  def start_prefetch(self) -> None:
    for it in self._iterators:
      if hasattr(it, "start_prefetch"):
        it.start_prefetch()


def shards_of_process(input_shards: int, process_index: int, process_count: int) -> range:
  shards = input_shards or process_count
  if shards % process_count:
    raise ValueError(
        f"data.input_shards ({input_shards}) must be a multiple of the number of "
        f"processes ({process_count})"
    )
  per = shards // process_count
  return range(process_index * per, (process_index + 1) * per)


def make_sharded_iterator(
    make_dataset: Callable[[int, int], object],
    input_shards: int,
    process_index: int,
    process_count: int,
) -> ShardedBatchIterator:
  """`make_dataset(shard_index, shard_count)` builds one shard's dataset."""
  shards = input_shards or process_count
  return ShardedBatchIterator(
      [
          iter(make_dataset(i, shards))
          for i in shards_of_process(input_shards, process_index, process_count)
      ]
  )
