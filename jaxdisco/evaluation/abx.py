"""ABX discriminability of features and units (ZeroSpeech 2021 / libri-light), DTW on device.

For items A and B of two phones and an item X of A's phone, the representation "gets it right"
when X is closer to A than to B. The error of one (A-cell, B-cell, X-cell) triple of item sets is

    e = 1 - θ,   θ = P[d(a, x) < d(b, x)] + ½ P[d(a, x) = d(b, x)]

over every a, b, x of the sets (x ≠ a when X and A are the same set). Items are compared by DTW
over frame-wise distances, the path's total cost divided by its length: the angular distance
`arccos(cos(u, v)) / π` for features, and for discrete units `0` for equal units and `½`
otherwise, which is exactly the angular distance of their one-hot vectors (so unit ABX equals
the reference run on one-hot features).

Conditions, `{speaker}-{context}` as the reference names them:
  * within-within: A, B, X same speaker and context (X drawn from A's set);
  * across-within: A, B of one speaker, X of another, same context;
  * within-any / across-any: the same ignoring the context.
The error is averaged over contexts (and X speakers, across), then over speakers, then over
(phone A, phone B) pairs.

Everything follows `zerospeech-libriabx2` 0.9.8 (the libri-light ABX with any-context added),
which `tests/test_abx.py` runs as the oracle:
  * frames of an item: `[ceil(r onset - ½), floor(r offset - ½))` at r frames/s (frame i
    centred at (i + ½) / r, end exclusive as libri-light slices);
  * at most `max_size_group` (10) items per (context, speaker, phone) cell, drawn afresh with
    Python's `random` for every triple, and at most `max_x_across` (5) X speakers per A cell;
    seed 3459, reseeded per condition; the draws are made in the reference's order, so scores
    agree exactly, not only in expectation;
  * the DTW path is the one a backtrack from the end takes preferring diagonal, then
    left, then up steps, and the cost is divided by that path's length;
  * zero vectors are at distance 1 from every other vector and 0 from each other.

What runs where: the triples are enumerated on the host (cheap: Python over items); the DTW
distances of every distinct (row item, column item) pair they need are computed on the device in
batches of static shape: pairs are grouped into buckets by the padded length of both items, the
DTW runs as a `lax.scan` over anti-diagonals (each a vector op over the batch), and each item's
true length picks its cell.
"""

from __future__ import annotations

import collections
import functools
import math
import os
import random
from typing import Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxdisco.evaluation import abx_items
from jaxdisco.evaluation.abx_items import Item
from jaxdisco.errors import UserError

CONDITIONS = ("within-within", "across-within", "within-any", "across-any")
MAX_SIZE_GROUP = 10
MAX_X_ACROSS = 5
SEED = 3459
_MIN_PADDED_LENGTH = 16  # Items are padded to powers of two frames, at least this many.
_SMALL_BATCH = 256  # Pairs of one device batch when a length bucket has few pairs...
_LARGE_BATCH = 4096  # ... and at most this many otherwise,
_PAIR_BYTES = 1 << 26  # or as many as fit in this many bytes of features (rows and columns).


class ABXError(UserError, ValueError):
  """Features and items do not fit together (no items left, no pairs to compare)."""


# ---------------------------------------------------------------------------------------------
# Device part: frame distances and path-averaged DTW.


def angular_distances(rows: jax.Array, cols: jax.Array) -> jax.Array:
  """`arccos(cos) / π` of every frame pair: [batch, n, dim] x [batch, m, dim] -> [batch, n, m].

  Zero frames are at distance 1 from non-zero frames and 0 from each other (the reference
  appends a coordinate that makes it so).
  """
  rows, cols = rows.astype(jnp.float32), cols.astype(jnp.float32)
  row_norm = jnp.sqrt(jnp.sum(rows * rows, -1, keepdims=True))
  col_norm = jnp.sqrt(jnp.sum(cols * cols, -1, keepdims=True))
  row_zero, col_zero = row_norm[..., 0] == 0, col_norm[..., 0] == 0
  rows = rows / jnp.where(row_norm == 0, 1.0, row_norm)
  cols = cols / jnp.where(col_norm == 0, 1.0, col_norm)
  cos = jnp.einsum("bid,bjd->bij", rows, cols, precision=jax.lax.Precision.HIGHEST)
  d = jnp.arccos(jnp.clip(cos, -1.0, 1.0)) / jnp.float32(math.pi)
  one_zero = row_zero[:, :, None] != col_zero[:, None, :]
  both_zero = row_zero[:, :, None] & col_zero[:, None, :]
  return jnp.where(one_zero, 1.0, jnp.where(both_zero, 0.0, d))


def unit_distances(rows: jax.Array, cols: jax.Array) -> jax.Array:
  """½ where units differ, 0 where equal: [batch, n] x [batch, m] int -> [batch, n, m]."""
  return jnp.where(rows[:, :, None] == cols[:, None, :], 0.0, 0.5).astype(jnp.float32)


def dtw_path_mean(distances: jax.Array, row_lengths: jax.Array, col_lengths: jax.Array):
  """DTW cost divided by the length of the backtracked path, for each of a batch of matrices.

  Args:
    distances: [batch, n, m] float32 frame distances; entries past each pair's lengths are
      ignored.
    row_lengths, col_lengths: [batch] int, in 1..n and 1..m.

  Returns:
    [batch] float32.

  The recursion is cost(i, j) = d(i, j) + min(up, left, diagonal); cells of one anti-diagonal
  i + j = k depend only on the two diagonals before, so a scan over k updates whole diagonals
  (indexed by row i) at once. The path length follows the same cells: each cell adds one step to
  the predecessor a backtrack from it would take (diagonal if no greater than both others, else
  left if no greater than up, else up), which is the reference's tie order.
  """
  batch, n, m = distances.shape
  rows = jnp.arange(n)
  diagonals = jnp.arange(n + m - 1)
  cols = diagonals[:, None] - rows[None, :]  # [K, n]: column of row i on diagonal k.
  inside = (cols >= 0) & (cols < m)
  skewed = distances[:, rows[None, :], jnp.clip(cols, 0, m - 1)]  # [batch, K, n]
  skewed = jnp.where(inside[None], skewed, jnp.inf).transpose(1, 0, 2)
  target = row_lengths + col_lengths - 2  # The diagonal of each pair's end cell.
  end_row = jax.nn.one_hot(row_lengths - 1, n, dtype=bool)  # [batch, n]

  def shift(x, fill):  # Value of row i - 1 at row i.
    return jnp.concatenate([jnp.full((batch, 1), fill, x.dtype), x[:, :-1]], axis=1)

  def step(carry, inputs):
    cost1, cost2, len1, len2, result = carry  # Diagonals k - 1 and k - 2.
    k, d = inputs
    up, left, diag = shift(cost1, jnp.inf), cost1, shift(cost2, jnp.inf)
    up_len, left_len, diag_len = shift(len1, 0), len1, shift(len2, 0)
    take_diag = (diag <= left) & (diag <= up)
    take_left = ~take_diag & (left <= up)
    best = jnp.where(take_diag, diag, jnp.where(take_left, left, up))
    best_len = jnp.where(take_diag, diag_len, jnp.where(take_left, left_len, up_len))
    first = k == 0
    cost = d + jnp.where(first, 0.0, best)
    length = 1 + jnp.where(first, 0, best_len)
    mean = jnp.sum(jnp.where(end_row, cost / length.astype(jnp.float32), 0.0), axis=1)
    result = jnp.where(target == k, mean, result)
    return (cost, cost1, length, len1, result), None

  inf = jnp.full((batch, n), jnp.inf, jnp.float32)
  zeros = jnp.zeros((batch, n), jnp.int32)
  init = (inf, inf, zeros, zeros, jnp.zeros(batch, jnp.float32))
  (_, _, _, _, result), _ = jax.lax.scan(step, init, (diagonals, skewed))
  return result


@functools.partial(jax.jit, static_argnames=("distance",))
def dtw_distances(rows, cols, row_lengths, col_lengths, *, distance: str):
  """Path-averaged DTW distance of each (row, column) sequence pair.

  Args:
    rows: [batch, n, dim] float features or [batch, n] int units.
    cols: [batch, m, dim] or [batch, m].
    row_lengths, col_lengths: [batch] int true lengths.
    distance: "cosine" (angular, features) or "identity" (units).

  Returns:
    [batch] float32.
  """
  frame = angular_distances if distance == "cosine" else unit_distances
  return dtw_path_mean(frame(rows, cols), row_lengths, col_lengths)


# ---------------------------------------------------------------------------------------------
# Host part: items, the reference's triples, aggregation.


def item_frames(onset: float, offset: float, frame_rate: float, num_frames: int):
  """The reference's frame range `[start, end)` of an item (see the module doc)."""
  start = max(0, int(math.ceil(frame_rate * onset - 0.5)))
  end = int(min(num_frames, int(math.floor(frame_rate * offset - 0.5))))
  return start, end


class _Dataset:
  """Items that have frames, in the reference's order, with its integer ids."""

  def __init__(self, features, items, frame_rate):
    # Ids in order of first appearance in the item file, as the reference numbers them: the
    # order decides how cells are sorted and so the order of the random draws.
    phone_ids, context_ids, speaker_ids = {}, {}, {}
    by_file = collections.defaultdict(list)
    for item in items:
      phone = phone_ids.setdefault(item.phone, len(phone_ids))
      context = context_ids.setdefault(f"{item.prev}+{item.next}", len(context_ids))
      speaker = speaker_ids.setdefault(item.speaker, len(speaker_ids))
      by_file[item.file].append((item.onset, item.offset, context, phone, speaker))
    self.segments, self.keys = [], []  # (file, start, end); (context, phone, speaker).
    for file, array in features.items():  # Files in the order the caller gives them.
      for onset, offset, context, phone, speaker in by_file.get(file, ()):
        start, end = item_frames(onset, offset, frame_rate, len(array))
        if start >= len(array) or end <= start:
          continue
        self.segments.append((file, start, end))
        self.keys.append((context, phone, speaker))
    if not self.segments:
      raise ABXError("no item has frames: do the item file's ids match the features' ids?")
    self.lengths = np.asarray([e - s for _, s, e in self.segments], np.int64)


def _groups(keys, levels):
  """The reference's nested cells: item positions sorted by `levels` (indices into a key),
  split at every change of a level. Returns (order, nested lists of (start, end) ranges)."""
  order = sorted(range(len(keys)), key=lambda i: [keys[i][lv] for lv in levels])
  sorted_keys = [tuple(keys[i][lv] for lv in levels) for i in order]

  def split(lo, hi, depth):
    out, start = [], lo
    for i in range(lo + 1, hi + 1):
      if i == hi or sorted_keys[i][depth] != sorted_keys[start][depth]:
        out.append((start, i) if depth == len(levels) - 1 else split(start, i, depth + 1))
        start = i
    return out

  return order, split(0, len(order), 0)


_CONTEXT, _PHONE, _SPEAKER = 0, 1, 2


def _triples(dataset: _Dataset, speaker_mode, context_mode, max_size_group, max_x, seed):
  """(coords, a items, b items, x items, symmetric) in the reference iterator's order, with its
  random draws. Coords: (speaker A, phone A, phone B, context[, speaker X]) for within context,
  (speaker A, phone A, phone B[, speaker X]) for any context."""
  rng = random.Random(seed)
  keys = dataset.keys
  levels = [_CONTEXT, _SPEAKER, _PHONE] if context_mode == "within" else [_SPEAKER, _PHONE]
  order, nested = _groups(keys, levels)
  speaker_groups = [g for c in nested for g in c] if context_mode == "within" else nested

  def draw(cell):
    start, end = cell
    take = list(range(start, end))
    if end - start > max_size_group:
      take = rng.sample(take, k=max_size_group)
    return [order[i] for i in take]

  def ids(cell):
    return keys[order[cell[0]]]

  out = []
  if speaker_mode == "within":
    for group in speaker_groups:
      if len(group) == 1:
        continue
      for i_a, cell_a in enumerate(group):
        if cell_a[1] - cell_a[0] == 1:
          continue
        for i_b, cell_b in enumerate(group):
          if i_b == i_a:
            continue
          b, a = draw(cell_b), draw(cell_a)
          c, p_a, s = ids(cell_a)
          coords = (s, p_a, ids(cell_b)[_PHONE]) + ((c,) if context_mode == "within" else ())
          out.append((coords, a, b, a, True))
    return out
  # Across: the X cells of the same (context,) phone and another speaker, speakers in id order.
  others = collections.defaultdict(dict)
  for group in speaker_groups:
    for cell in group:
      c, p, s = ids(cell)
      others[(c, p) if context_mode == "within" else p][s] = cell
  for group in speaker_groups:
    if len(group) == 1:
      continue
    for i_a, cell_a in enumerate(group):
      c, p_a, s = ids(cell_a)
      ref = [v for k, v in others[(c, p_a) if context_mode == "within" else p_a].items() if k != s]
      speakers_x = rng.sample(ref, k=max_x) if len(ref) > max_x else ref
      for cell_x in speakers_x:
        for i_b, cell_b in enumerate(group):
          if i_b == i_a:
            continue
          a, b, x = draw(cell_a), draw(cell_b), draw(cell_x)
          coords = (s, p_a, ids(cell_b)[_PHONE])
          coords += ((c,) if context_mode == "within" else ()) + (ids(cell_x)[_SPEAKER],)
          out.append((coords, a, b, x, False))
  return out


def _pair_keys(a, b, x, symmetric, num_items):
  """DTW pairs one triple needs, as `row * num_items + col` keys: ([x, a] with -1 where x is a,
  [x, b]). Rows are X items, as in the reference; for a symmetric set (X = A) only the pair
  with the earlier position as row is computed, and used both ways, as the reference does."""
  a, b, x = (np.asarray(v, np.int64) for v in (a, b, x))
  xb = x[:, None] * num_items + b[None, :]
  if symmetric:
    pos = np.arange(len(a))
    lo, hi = np.minimum.outer(pos, pos), np.maximum.outer(pos, pos)
    xa = np.where(lo == hi, -1, a[lo] * num_items + a[hi])
  else:
    xa = x[:, None] * num_items + a[None, :]
  return xa, xb


def _padded_length(n: int) -> int:
  return max(_MIN_PADDED_LENGTH, 1 << (int(n) - 1).bit_length())


def _pair_distances(dataset, features, rows, cols, distance) -> np.ndarray:
  """DTW distance of every pair, in device batches of a few static shapes.

  Compilation, not the DTW, dominates small evaluations (about a second per shape on a CPU), so
  both items of a pair are padded to one square length, a power of two, and a batch has one of
  two sizes: `_SMALL_BATCH` or as many pairs as fit in `_PAIR_BYTES`.
  """
  out = np.empty(len(rows), np.float32)
  first = next(iter(features.values()))
  dim = 1 if distance == "identity" else int(np.asarray(first).shape[-1])
  longest = np.maximum(dataset.lengths[rows], dataset.lengths[cols])
  bucket = np.asarray([_padded_length(n) for n in longest])

  def table(items, width):  # Padded frames of `items`: [items, width(, dim)].
    shape = (len(items), width) if distance == "identity" else (len(items), width, dim)
    batch = np.zeros(shape, np.int32 if distance == "identity" else np.float32)
    for row, item in enumerate(items):
      file, start, end = dataset.segments[item]
      batch[row, : end - start] = features[file][start:end]
    return batch

  lengths = dataset.lengths.astype(np.int32)
  for width in sorted(set(bucket.tolist())):
    where = np.flatnonzero(bucket == width)
    needed = np.unique(np.concatenate([rows[where], cols[where]]))
    frames = table(needed, width)
    fits = max(1, _PAIR_BYTES // (2 * width * dim * 4))
    size = min(1 << (fits.bit_length() - 1), _LARGE_BATCH)
    if len(where) <= _SMALL_BATCH:
      size = min(size, _SMALL_BATCH)
    for start in range(0, len(where), size):
      chunk = where[start : start + size]
      padded = np.concatenate([chunk, np.full(size - len(chunk), chunk[0])])
      r, c = rows[padded], cols[padded]
      result = dtw_distances(
          frames[np.searchsorted(needed, r)],
          frames[np.searchsorted(needed, c)],
          lengths[r],
          lengths[c],
          distance=distance,
      )
      out[chunk] = np.asarray(result)[: len(chunk)]
  return out


def _theta(d_xa: np.ndarray, d_xb: np.ndarray, symmetric: bool) -> float:
  """θ of one triple from its distances [x, a] (NaN where x is a) and [x, b]."""
  valid = ~np.isnan(d_xa)[:, :, None]  # The reference excludes x = a the same way.
  less = (d_xa[:, :, None] < d_xb[:, None, :]) & valid
  ties = (d_xa[:, :, None] == d_xb[:, None, :]) & valid
  n_a, n_x, n_b = d_xa.shape[1], d_xa.shape[0], d_xb.shape[1]
  n_pos = n_a * (n_a - 1) if symmetric else n_a * n_x
  return (less.sum() + 0.5 * ties.sum()) / (n_pos * n_b)


def _aggregate(errors: Mapping[tuple, float]) -> float:
  """Mean over the trailing coords (context, X speaker), then speakers, then phone pairs."""
  by_speaker = collections.defaultdict(list)
  for coords, e in errors.items():
    by_speaker[coords[:3]].append(e)
  by_pair = collections.defaultdict(list)
  for (s, p_a, p_b), values in by_speaker.items():
    by_pair[(p_a, p_b)].append(np.mean(values))
  return float(np.mean([np.mean(v) for v in by_pair.values()]))


def abx_error_rates(
    features: Mapping[str, np.ndarray],
    items: Union[Sequence[Item], str],
    *,
    frame_rate: float,
    distance: Optional[str] = None,
    conditions: Sequence[str] = CONDITIONS,
    max_size_group: int = MAX_SIZE_GROUP,
    max_x_across: int = MAX_X_ACROSS,
    seed: int = SEED,
) -> dict[str, float]:
  """ABX error rates (0..1; the field reports them ×100 as %) of per-utterance representations.

  Args:
    features: utterance id -> `[frames, dim]` float features or `[frames]` int units, at
      `frame_rate`. Their iteration order is the reference's file order (it matters only for
      which items a capped cell draws).
    items: `abx_items.Item`s or an item file path.
    frame_rate: frames per second.
    distance: "cosine" or "identity"; default: identity for integer arrays, cosine otherwise.
    conditions: any of `CONDITIONS` ("{speaker mode}-{context mode}").
    max_size_group, max_x_across, seed: the reference's subsampling (see the module doc).

  Returns:
    condition -> error rate, for the conditions that have at least one triple.
  """
  if isinstance(items, (str, os.PathLike)):
    items = abx_items.read_item_file(items)
  features = {k: np.asarray(v) for k, v in features.items()}
  if distance is None:
    first = next(iter(features.values()))
    distance = "identity" if np.issubdtype(first.dtype, np.integer) else "cosine"
  if distance not in ("cosine", "identity"):
    raise ValueError(f"distance must be 'cosine' or 'identity', got {distance!r}")
  unknown = [c for c in conditions if c not in CONDITIONS]
  if unknown:
    raise ValueError(f"unknown ABX conditions {unknown}; choose from {CONDITIONS}")
  dataset = _Dataset(features, items, frame_rate)
  per_condition = {}
  for condition in conditions:
    speaker_mode, context_mode = condition.split("-")
    per_condition[condition] = _triples(
        dataset, speaker_mode, context_mode, max_size_group, max_x_across, seed
    )
  # One set of DTW pairs for all conditions: most are shared.
  num_items = len(dataset.segments)
  keys = {
      condition: [_pair_keys(a, b, x, sym, num_items) for _, a, b, x, sym in triples]
      for condition, triples in per_condition.items()
  }
  flat = [k.ravel() for pairs in keys.values() for xa, xb in pairs for k in (xa, xb)]
  unique = np.unique(np.concatenate(flat)) if flat else np.zeros(0, np.int64)
  unique = unique[unique >= 0]
  if not unique.size:
    raise ABXError("no ABX triple: every (context, speaker) cell has a single phone")
  values = _pair_distances(
      dataset, features, unique // num_items, unique % num_items, distance
  )

  def lookup(k):
    d = values[np.searchsorted(unique, np.maximum(k, 0))]
    return np.where(k < 0, np.nan, d).astype(np.float32)

  scores = {}
  for condition, triples in per_condition.items():
    if not triples:
      continue
    errors = {}
    for (coords, _, _, _, symmetric), (xa, xb) in zip(triples, keys[condition]):
      errors[coords] = 1.0 - _theta(lookup(xa), lookup(xb), symmetric)
    scores[condition] = _aggregate(errors)
  return scores


def format_scores(scores: Mapping[str, float]) -> str:
  """`within-within 12.34%  across-within ...`: error rates as percentages, as the field
  reports them."""
  return "  ".join(f"{c} {100 * scores[c]:.2f}%" for c in CONDITIONS if c in scores)
