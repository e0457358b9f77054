"""Length bucketing: a handful of crop lengths, so jit compiles a handful of programs.

Each utterance goes to the longest bucket that is not longer than it and is
randomly cropped to that length (fairseq's pretraining crops every utterance
of a batch to the batch's shortest one; fixed buckets keep that "no padding"
property while bounding the number of shapes). Utterances shorter than the
smallest bucket are zero-padded up to it, and ones longer than the largest are
cropped to it.

Batches are planned per epoch for the *global* batch: every process computes
the same plan from the same seed and takes rows `process_index::process_count`
of each global batch. So at every step all processes hold the same bucket
(the global array has one shape), while their rows stay disjoint.

A plan is a pure function of (lengths, buckets, batch size, seed, epoch): the
pipeline needs no state beyond the step number to resume.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np


def bucket_lengths(
    min_samples: int, max_samples: int, num_buckets: int, multiple: int = 320
) -> tuple[int, ...]:
  """`num_buckets` lengths spaced geometrically from `min_samples` to `max_samples`.

  Lengths are rounded down to a multiple of `multiple` (the conv encoder's
  stride, 320 for wav2vec 2.0, so no bucket wastes a partial frame), except
  that `max_samples` itself is always the largest bucket.
  """
  if not 0 < min_samples <= max_samples or num_buckets < 1:
    raise ValueError(f'need 0 < {min_samples=} <= {max_samples=} and {num_buckets=} >= 1')
  raw = np.geomspace(min_samples, max_samples, num_buckets)
  lengths = {max(multiple, int(x) // multiple * multiple) for x in raw[:-1]}
  lengths.add(int(max_samples))
  return tuple(sorted(lengths))


def assign_buckets(num_samples: np.ndarray, buckets: Sequence[int]) -> np.ndarray:
  """Bucket index of each utterance: the longest bucket <= its length (else 0)."""
  buckets = np.asarray(buckets)
  return np.maximum(np.searchsorted(buckets, num_samples, side='right') - 1, 0)


class BucketPlan:
  """Global batches per epoch, each from a single bucket.

  Args:
    num_samples: `[num_utterances]` lengths.
    buckets: sorted crop lengths.
    global_batch_size: rows of a global batch (all processes together).
    seed: the plan's seed.
    shuffle: if False, utterances keep their order within each bucket and
      batches go bucket by bucket (for tests and eval-like use).

  `len(plan)` is the number of batches per epoch; it is the same in every
  epoch, because bucket membership depends only on length: each bucket's
  utterances that do not fill a last batch are left out of that epoch (a
  different subset every epoch when shuffled).
  """

  def __init__(
      self,
      num_samples,
      buckets: Sequence[int],
      global_batch_size: int,
      *,
      seed: int = 0,
      shuffle: bool = True,
  ):
    self.buckets = tuple(int(b) for b in buckets)
    if list(self.buckets) != sorted(set(self.buckets)):
      raise ValueError(f'buckets must be strictly increasing, got {self.buckets}')
    self.num_samples = np.asarray(num_samples, np.int64)
    self.global_batch_size = global_batch_size
    self.seed, self.shuffle = seed, shuffle
    self.assignment = assign_buckets(self.num_samples, self.buckets)
    self.batches_per_bucket = (
        np.bincount(self.assignment, minlength=len(self.buckets)) // global_batch_size
    )
    if not self.batches_per_bucket.sum():
      raise ValueError(
          f'no bucket holds a full global batch of {global_batch_size} '
          f'({len(self.num_samples)} utterances over buckets {self.buckets})'
      )

  def __len__(self) -> int:
    return int(self.batches_per_bucket.sum())

  @functools.lru_cache(maxsize=2)
  def epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """`(rows [batches, global_batch_size] utterance indices, bucket [batches])`."""
    rng = np.random.default_rng([self.seed, epoch])
    order = (
        rng.permutation(len(self.num_samples)) if self.shuffle else np.arange(len(self.num_samples))
    )
    rows, bucket_of = [], []
    for b, count in enumerate(self.batches_per_bucket):
      members = order[self.assignment[order] == b][: count * self.global_batch_size]
      rows.append(members.reshape(count, self.global_batch_size))
      bucket_of.append(np.full(count, b))
    rows, bucket_of = np.concatenate(rows), np.concatenate(bucket_of)
    if self.shuffle:
      batch_order = rng.permutation(len(rows))
      rows, bucket_of = rows[batch_order], bucket_of[batch_order]
    return rows, bucket_of

  def batch(
      self, step: int, process_index: int = 0, process_count: int = 1
  ) -> tuple[np.ndarray, int]:
    """This process's `(utterance indices [local batch], crop length)` at global `step`."""
    rows, bucket_of = self.epoch(step // len(self))
    k = step % len(self)
    return rows[k, process_index::process_count], self.buckets[bucket_of[k]]
