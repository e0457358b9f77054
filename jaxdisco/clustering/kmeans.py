"""k-means in JAX for discrete speech units: k-means++, mini-batch and Lloyd, data-parallel.

What the HuBERT reference does (fairseq `examples/hubert/simple_kmeans/learn_kmeans.py`):
scikit-learn `MiniBatchKMeans(init="k-means++", batch_size=10000, max_iter=100, n_init=20,
max_no_improvement=100, reassignment_ratio=0.0, tol=0.0, init_size=None)`, fitted on ~10% of
the frames. `KMeans()`'s defaults are those settings, and the algorithm follows scikit-learn's:

- Initialization: `n_init` candidates, each greedy k-means++ (2 + ln k local trials per centre,
  the candidate that lowers the potential most wins) on a random subsample of `init_size`
  frames (default 3 x batch_size, scikit-learn's); the candidate with the lowest inertia on a
  separate validation subsample of the same size is kept, and only it is optimized.
- Mini-batch steps (`batch_size` set): each step draws `batch_size` frames with replacement,
  assigns them to the nearest centre, and moves each centre to `(c n + sum of its new frames) /
  (n + m)`, where n is the centre's running count and m its frames in the batch: the
  per-sample learning rate 1/count of scikit-learn's `MiniBatchKMeans`. At most
  `max_iter * frames // batch_size` steps; early stop when the exponentially averaged batch
  inertia has not improved for `max_no_improvement` steps, or (tol > 0) when the squared centre
  shift falls under `tol` x the mean feature variance.
- Full-batch Lloyd (`batch_size=None`): centres become the mean of their frames; stops after
  `max_iter` passes or when the squared centre shift <= `tol` x mean variance (so with tol=0,
  when nothing moves).
- Empty clusters (`reseed_empty`): Lloyd moves a centre that got no frames to the frame
  farthest from its centre (scikit-learn's KMeans does the same); mini-batch moves a centre
  whose running count is still 0 to the batch frame farthest from its centre. The reference
  (reassignment_ratio=0) never moves dead centres; set `reseed_empty=False` for exactly that.
- `inertia` is the sum over all frames of the squared distance to the nearest centre
  (scikit-learn's `inertia_`; fairseq logs it divided by the number of frames).

Distances are `||x||^2 - 2 x.c + ||c||^2` over fixed-size chunks of `chunk_size` frames, so
memory is `chunk_size x k` floats whatever the number of frames (millions x 768 x k=2000 fit).
The dot products run at `precision="highest"` by default: TPUs otherwise multiply float32 in
bfloat16, which flips assignments between close centres.

Parallelism: the frames are laid out as `[lanes, rows, dim]` with the lanes axis sharded over a
1-D mesh of all devices (axis "data"), centres replicated. Every pass and step works on all
lanes at once (a chunk is `chunk_size / lanes` rows of every lane; a mini-batch draws
`batch_size / lanes` frames from every lane), so each device computes the sums and counts of
its own frames and `jax.jit`'s partitioner inserts the all-reduce. Frame i goes to lane
`i % lanes`. Results depend on `lanes` and the seed, not on the number of devices (up to float
summation order): fix `lanes` to reproduce a fit on another topology. By default `lanes` is the
number of devices.

Multi-host: each process passes its own frames to `shard_features` (same call on every
process); it lays them out as the process's lanes and builds the global array with
`jax.make_array_from_process_local_data`, padding every process to the largest local count
(found with `multihost_utils.process_allgather`). `fit_kmeans` then runs unchanged: two
processes fit the centroids one process fits on the same lane layout
(`tests/test_kmeans_multihost.py`).

The `.npy` + `.json` format (`save_centroids`) keeps what is needed to use the centroids
correctly later: which features, which layer and which layer-output convention they were fit
on. `import_sklearn_kmeans` reads the joblib files of fairseq / textlesslib.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from typing import Any, Callable, Mapping, Optional, Union

from etils import epath
import jax
from jax import lax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import numpy as np

from jaxdisco.errors import MissingFileError
from jaxdisco.progress import ProgressMeter

PathLike = Union[str, os.PathLike, epath.Path]

MESH_AXIS = "data"
_PRECISIONS = {
    "highest": lax.Precision.HIGHEST,
    "high": lax.Precision.HIGH,
    "default": lax.Precision.DEFAULT,
}
# Mini-batch fits run in this many host calls at most (one compiled loop), to report progress.
_PROGRESS_SEGMENTS = 20


@dataclasses.dataclass(frozen=True)
class KMeans:
  """k-means settings; the defaults are the HuBERT reference's MiniBatchKMeans settings.

  Attributes:
    k: number of clusters.
    max_iter: Lloyd passes, or mini-batch steps = max_iter * frames // batch_size.
    batch_size: frames per mini-batch step (rounded down to a multiple of `lanes`); None for
      full-batch Lloyd.
    tol: relative tolerance on the squared centre shift (scaled by the mean feature
      variance, as scikit-learn does); 0 disables it for mini-batch.
    n_init: k-means++ initializations tried; the best on a validation subsample is kept.
    seed: all randomness derives from `jax.random.key(seed)`.
    init: "k-means++" (greedy, 2 + ln k trials) or "random" (k distinct-index frames).
    init_size: frames in the initialization and validation subsamples; None means
      3 x batch_size (mini-batch) or 3 x k, at least 10000 (Lloyd); capped at the frame count.
    max_no_improvement: mini-batch early stop after this many steps without improvement of
      the smoothed batch inertia; None disables it.
    reseed_empty: move empty / never-used centres to far frames (see module doc).
    chunk_size: frames per distance chunk (memory ~ chunk_size x k floats).
    lanes: data layout width (a multiple of the device count); None means the device count.
    precision: matmul precision for distances: "highest", "high" or "default".
  """

  k: int
  max_iter: int = 100
  batch_size: Optional[int] = 10_000
  tol: float = 0.0
  n_init: int = 20
  seed: int = 0
  init: str = "k-means++"
  init_size: Optional[int] = None
  max_no_improvement: Optional[int] = 100
  reseed_empty: bool = True
  chunk_size: int = 8192
  lanes: Optional[int] = None
  precision: str = "highest"


@dataclasses.dataclass(frozen=True)
class KMeansResult:
  """Outcome of `fit_kmeans`.

  Attributes:
    centroids: float32 `[k, dim]`.
    inertia: sum over all frames of the squared distance to the nearest centroid.
    n_iter: Lloyd passes, or for mini-batch the passes' worth of frames drawn (as
      scikit-learn's `n_iter_`).
    n_steps: mini-batch steps taken (equal to n_iter for Lloyd).
    num_frames: frames fitted on.
  """

  centroids: np.ndarray
  inertia: float
  n_iter: int
  n_steps: int
  num_frames: int

  @property
  def mean_inertia(self) -> float:
    """Inertia per frame (what fairseq's learn_kmeans.py logs)."""
    return self.inertia / self.num_frames


@dataclasses.dataclass(frozen=True)
class LaneFeatures:
  """Frames laid out for data-parallel k-means (see module doc).

  Attributes:
    x: float32 `[lanes, rows, dim]`, lanes sharded over the mesh; rows past `valid` are padding.
    valid: int32 `[lanes]`, valid rows of each lane (a prefix of the lane).
    num_frames: total valid frames.
    mesh: the 1-D mesh `x` lives on.
  """

  x: jax.Array
  valid: jax.Array
  num_frames: int
  mesh: Mesh

  @property
  def lanes(self) -> int:
    return self.x.shape[0]


def data_mesh(devices=None) -> Mesh:
  """A 1-D mesh (axis "data") over `devices` (default: all devices)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (MESH_AXIS,))


def shard_features(
    features: np.ndarray,
    *,
    lanes: Optional[int] = None,
    chunk_size: int = 8192,
    mesh: Optional[Mesh] = None,
) -> LaneFeatures:
  """Lays out this process's frames `[frames, dim]` as lanes sharded over `mesh`.

  Args:
    features: `[frames, dim]` frames held by this process (all frames if single-process).
    lanes: layout width, a multiple of the mesh size; default the mesh size.
    chunk_size: rows per lane are padded to a multiple of `chunk_size // lanes`.
    mesh: default `data_mesh()`.

  Returns:
    `LaneFeatures` whose global array holds every process's frames.
  """
  mesh = data_mesh() if mesh is None else mesh
  lanes = mesh.size if lanes is None else lanes
  if lanes % mesh.size:
    raise ValueError(f"lanes={lanes} must be a multiple of the number of devices ({mesh.size})")
  features = np.asarray(features, np.float32)
  if features.ndim != 2:
    raise ValueError(f"expected features [frames, dim], got shape {features.shape}")
  processes = jax.process_count()
  if lanes % processes:
    raise ValueError(f"lanes={lanes} must be a multiple of the process count ({processes})")
  local_lanes = lanes // processes
  local_frames = features.shape[0]
  if processes > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    counts = np.asarray(multihost_utils.process_allgather(np.int64(local_frames))).reshape(-1)
  else:
    counts = np.asarray([local_frames])
  per_lane = max(1, chunk_size // lanes)
  rows = -(-int(counts.max()) // local_lanes)
  rows = max(per_lane, -(-rows // per_lane) * per_lane)

  padded = np.zeros((rows * local_lanes, features.shape[1]), np.float32)
  padded[:local_frames] = features
  # Round-robin: frame i -> lane i % lanes, row i // lanes; lanes differ by at most one frame.
  local = np.ascontiguousarray(padded.reshape(rows, local_lanes, -1).transpose(1, 0, 2))
  lane_ids = np.arange(local_lanes)
  local_valid = np.maximum(0, (local_frames - lane_ids + local_lanes - 1) // local_lanes)

  sharding = NamedSharding(mesh, PartitionSpec(MESH_AXIS))
  x = jax.make_array_from_process_local_data(sharding, local, (lanes, rows, features.shape[1]))
  valid = jax.make_array_from_process_local_data(sharding, local_valid.astype(np.int32), (lanes,))
  return LaneFeatures(x=x, valid=valid, num_frames=int(counts.sum()), mesh=mesh)


# ---------------------------------------------------------------------------------------------
# Distance kernels (pure functions; shapes static under jit).


def _sq_distances(x, centers, centers_sq, precision):
  """`[n, dim]`, `[k, dim]`, `[k]` → `[n, k]` squared distances, clamped at 0."""
  x_sq = jnp.sum(x * x, axis=1, keepdims=True)
  dots = jnp.dot(x, centers.T, precision=precision)
  return jnp.maximum(x_sq - 2.0 * dots + centers_sq[None, :], 0.0)


def nearest_centroids(x, centers, precision):
  """`[n, dim]` → (int32 labels `[n]`, squared distances `[n]`)."""
  d = _sq_distances(x, centers, jnp.sum(centers * centers, axis=1), precision)
  labels = jnp.argmin(d, axis=1).astype(jnp.int32)
  return labels, jnp.take_along_axis(d, labels[:, None], axis=1)[:, 0]


def _lane_chunk(x, valid, i, per_lane):
  """Rows [i*per_lane, (i+1)*per_lane) of every lane → (`[lanes*per_lane, dim]`, weights)."""
  lanes, _, dim = x.shape
  xs = lax.dynamic_slice_in_dim(x, i * per_lane, per_lane, axis=1)
  rows = i * per_lane + jnp.arange(per_lane)
  ws = (rows[None, :] < valid[:, None]).astype(x.dtype)
  return xs.reshape(lanes * per_lane, dim), ws.reshape(-1)


def _full_pass(x, valid, centers, *, per_lane, precision):
  """One pass over all frames: per-centre sums `[k, dim]`, counts `[k]`, total inertia."""
  k = centers.shape[0]
  num_chunks = x.shape[1] // per_lane

  def body(i, carry):
    sums, counts, inertia = carry
    xs, ws = _lane_chunk(x, valid, i, per_lane)
    labels, d = nearest_centroids(xs, centers, precision)
    sums = sums + jax.ops.segment_sum(xs * ws[:, None], labels, k)
    counts = counts + jax.ops.segment_sum(ws, labels, k)
    return sums, counts, inertia + jnp.sum(d * ws)

  init = (jnp.zeros_like(centers), jnp.zeros((k,), x.dtype), jnp.zeros((), x.dtype))
  return lax.fori_loop(0, num_chunks, body, init)


def _farthest(x, valid, centers, *, per_lane, precision):
  """The k frames farthest from their nearest centre, farthest first: `[k, dim]`."""
  k, dim = centers.shape
  num_chunks = x.shape[1] // per_lane

  def body(i, carry):
    best_d, best_x = carry
    xs, ws = _lane_chunk(x, valid, i, per_lane)
    _, d = nearest_centroids(xs, centers, precision)
    d = jnp.where(ws > 0, d, -1.0)
    all_d = jnp.concatenate([best_d, d])
    top_d, top_i = lax.top_k(all_d, k)
    return top_d, jnp.concatenate([best_x, xs])[top_i]

  init = (jnp.full((k,), -2.0, x.dtype), jnp.zeros((k, dim), x.dtype))
  return lax.fori_loop(0, num_chunks, body, init)[1]


def _moments(x, valid, *, per_lane):
  """Mean feature variance over valid frames (scikit-learn's tol scale)."""
  num_chunks = x.shape[1] // per_lane

  def body(i, carry):
    s, s2, n = carry
    xs, ws = _lane_chunk(x, valid, i, per_lane)
    dot = functools.partial(jnp.dot, precision=lax.Precision.HIGHEST)
    return s + dot(ws, xs), s2 + dot(ws, xs * xs), n + ws.sum()

  dim = x.shape[2]
  zeros = jnp.zeros((dim,), x.dtype)
  s, s2, n = lax.fori_loop(0, num_chunks, body, (zeros, zeros, jnp.zeros((), x.dtype)))
  mean = s / n
  return jnp.mean(s2 / n - mean * mean)


def _sample_rows(key, x, valid, per_lane):
  """`per_lane` frames drawn with replacement from every lane → (`[lanes*per_lane, dim]`, w)."""
  lanes, _, dim = x.shape
  idx = jax.random.randint(key, (lanes, per_lane), 0, jnp.maximum(valid, 1)[:, None])
  rows = jnp.take_along_axis(x, idx[:, :, None], axis=1).reshape(lanes * per_lane, dim)
  ws = jnp.broadcast_to((valid > 0)[:, None], (lanes, per_lane)).reshape(-1)
  return rows, ws.astype(x.dtype)


# ---------------------------------------------------------------------------------------------
# Initialization.


def _kmeans_plus_plus(key, x, k, n_trials, precision):
  """Greedy k-means++ on replicated `[n, dim]` frames → `[k, dim]` centres."""
  n, dim = x.shape
  x_sq = jnp.sum(x * x, axis=1)

  def dists_from(points):  # [t, dim] → [t, n]
    dots = jnp.dot(points, x.T, precision=precision)
    return jnp.maximum(jnp.sum(points * points, 1)[:, None] - 2.0 * dots + x_sq[None], 0.0)

  key, first_key = jax.random.split(key)
  first = jax.random.randint(first_key, (), 0, n)
  centers = jnp.zeros((k, dim), x.dtype).at[0].set(x[first])
  closest = dists_from(x[first][None])[0]

  def body(c, carry):
    centers, closest, key = carry
    key, sub = jax.random.split(key)
    cumulative = jnp.cumsum(closest)
    targets = jax.random.uniform(sub, (n_trials,)) * cumulative[-1]
    candidates = jnp.minimum(jnp.searchsorted(cumulative, targets), n - 1)
    trial = jnp.minimum(closest[None], dists_from(x[candidates]))
    best = jnp.argmin(jnp.sum(trial, axis=1))
    return centers.at[c].set(x[candidates[best]]), trial[best], key

  return lax.fori_loop(1, k, body, (centers, closest, key))[0]


def _random_init(key, x, k):
  return x[jax.random.choice(key, x.shape[0], (k,), replace=False)]


def _init_candidate(key, x, valid, val_x, val_w, *, k, init, per_lane, chunk_size, precision):
  """One initialization on a fresh subsample, scored by inertia on the validation sample."""
  sample_key, init_key = jax.random.split(key)
  sample, _ = _sample_rows(sample_key, x, valid, per_lane)
  if init == "k-means++":
    centers = _kmeans_plus_plus(init_key, sample, k, 2 + int(math.log(k)), precision)
  else:
    centers = _random_init(init_key, sample, k)
  return centers, _chunked_inertia(val_x, val_w, centers, chunk_size, precision)


def _chunked_inertia(x, w, centers, chunk_size, precision):
  """Weighted inertia of `[n, dim]` frames, `chunk_size` frames at a time."""
  n, dim = x.shape
  chunk_size = min(chunk_size, n)
  pad = -n % chunk_size
  x = jnp.concatenate([x, jnp.zeros((pad, dim), x.dtype)])
  w = jnp.concatenate([w, jnp.zeros((pad,), w.dtype)])
  _, d = lax.map(
      lambda xs: nearest_centroids(xs, centers, precision), x.reshape(-1, chunk_size, dim)
  )
  return jnp.sum(d.reshape(-1) * w)


# ---------------------------------------------------------------------------------------------
# Mini-batch optimization, entirely on device (no host round trip per step).


def _minibatch_start(centers, key):
  """The mini-batch loop's state before step 0: (step, centres, running counts, key, averaged
  inertia, its minimum, steps without improvement, stopped)."""
  inf = jnp.asarray(jnp.inf, centers.dtype)
  k = centers.shape[0]
  return (
      jnp.int32(0),
      centers,
      jnp.zeros((k,), centers.dtype),
      key,
      inf,
      inf,
      jnp.int32(0),
      jnp.asarray(False),
  )


def _minibatch(
    x,
    valid,
    state,
    stop_at,
    tol_scaled,
    *,
    per_lane,
    num_frames,
    max_no_improvement,
    reseed_empty,
    precision,
):
  """Runs mini-batch steps from `state` (`_minibatch_start`) until step `stop_at` or an early
  stop; returns the state. The host calls it for successive `stop_at` to report progress: the
  steps are the same as in one call."""
  k = state[1].shape[0]
  batch = x.shape[0] * per_lane
  alpha = min(batch * 2.0 / (num_frames + 1), 1.0)
  patience = max_no_improvement if max_no_improvement is not None else -1

  def cond(state):
    step, *_, stop = state
    return jnp.logical_and(step < stop_at, jnp.logical_not(stop))

  def body(state):
    step, centers, counts, key, ewa, ewa_min, stale, _ = state
    key, sub = jax.random.split(key)
    xb, wb = _sample_rows(sub, x, valid, per_lane)
    labels, d = nearest_centroids(xb, centers, precision)
    batch_inertia = jnp.sum(d * wb) / jnp.sum(wb)
    batch_sums = jax.ops.segment_sum(xb * wb[:, None], labels, k)
    batch_counts = jax.ops.segment_sum(wb, labels, k)
    new_counts = counts + batch_counts
    moved = (centers * counts[:, None] + batch_sums) / jnp.maximum(new_counts, 1.0)[:, None]
    new_centers = jnp.where((batch_counts > 0)[:, None], moved, centers)
    if reseed_empty:
      dead = new_counts == 0

      def reseed(c):
        far = lax.top_k(jnp.where(wb > 0, d, -1.0), min(k, batch))[1]
        rank = jnp.clip(jnp.cumsum(dead) - 1, 0, far.shape[0] - 1)
        return jnp.where(dead[:, None], xb[far[rank]], c)

      new_centers = lax.cond(jnp.any(dead), reseed, lambda c: c, new_centers)

    # scikit-learn's convergence test: the first step only measures the initialization.
    first = step == 0
    ewa = jnp.where(
        first,
        ewa,
        jnp.where(jnp.isinf(ewa), batch_inertia, ewa * (1 - alpha) + batch_inertia * alpha),
    )
    shift = jnp.sum((new_centers - centers) ** 2)
    improved = ewa < ewa_min
    ewa_min = jnp.where(first | ~improved, ewa_min, ewa)
    stale = jnp.where(first, stale, jnp.where(improved, 0, stale + 1))
    stop = jnp.logical_not(first) & (
        ((tol_scaled > 0) & (shift <= tol_scaled)) | ((patience >= 0) & (stale >= patience))
    )
    return step + 1, new_centers, new_counts, key, ewa, ewa_min, stale, stop

  return lax.while_loop(cond, body, state)


# ---------------------------------------------------------------------------------------------
# Public API.


def _replicated(mesh):
  return NamedSharding(mesh, PartitionSpec())


def fit_kmeans(
    features: Union[np.ndarray, LaneFeatures],
    config: KMeans,
    *,
    mesh: Optional[Mesh] = None,
    init_centroids: Optional[np.ndarray] = None,
    progress: Optional[Callable[[str], None]] = None,
) -> KMeansResult:
  """Fits k-means (see the module doc for the algorithm and the parallel layout).

  Args:
    features: `[frames, dim]` float frames, or `LaneFeatures` from `shard_features` (needed
      for multi-host).
    config: settings.
    mesh: 1-D device mesh for a numpy input (default all devices); ignored for LaneFeatures.
    init_centroids: optional `[k, dim]` starting centres (e.g. a warm start); replaces the
      `n_init` initializations.
    progress: print-like callable for lines with rate and ETA (initializations, then steps or
      passes), at most every 10 s; None (default) for silence.

  Returns:
    `KMeansResult` with float32 `[k, dim]` centroids.
  """
  if config.init not in ("k-means++", "random"):
    raise ValueError(f"init must be 'k-means++' or 'random', got {config.init!r}")
  if config.precision not in _PRECISIONS:
    raise ValueError(f"precision must be one of {sorted(_PRECISIONS)}, got {config.precision!r}")
  data = (
      features
      if isinstance(features, LaneFeatures)
      else shard_features(features, lanes=config.lanes, chunk_size=config.chunk_size, mesh=mesh)
  )
  lanes, rows, dim = data.x.shape
  n, k = data.num_frames, config.k
  if n < max(k, lanes):
    raise ValueError(f"need at least max(k={k}, lanes={lanes}) frames, got {n}")
  precision = _PRECISIONS[config.precision]
  per_lane = math.gcd(rows, max(1, config.chunk_size // lanes))
  replicated = _replicated(data.mesh)

  if config.batch_size is not None:
    default_init = 3 * config.batch_size
  else:
    default_init = max(3 * k, 10_000)
  init_size = min(n, config.init_size or default_init)
  init_size = max(init_size, k)
  init_per_lane = -(-init_size // lanes)
  val_key, init_root, run_key = jax.random.split(jax.random.key(config.seed), 3)

  sample = jax.jit(_sample_rows, static_argnums=3, out_shardings=replicated)
  val_x, val_w = sample(val_key, data.x, data.valid, init_per_lane)
  init_fn = jax.jit(
      lambda key, x, valid, vx, vw: _init_candidate(
          key,
          x,
          valid,
          vx,
          vw,
          k=k,
          init=config.init,
          per_lane=init_per_lane,
          chunk_size=config.chunk_size,
          precision=precision,
      ),
      out_shardings=replicated,
  )
  best, best_inertia = None, np.inf
  if init_centroids is not None:
    if np.shape(init_centroids) != (k, dim):
      raise ValueError(f"init_centroids must be [{k}, {dim}], got {np.shape(init_centroids)}")
    best = jax.device_put(np.asarray(init_centroids, np.float32), replicated)
  num_inits = config.n_init if best is None else 0
  init_meter = ProgressMeter(f"k-means init ({config.init})", num_inits, report=progress)
  for init_key in jax.random.split(init_root, num_inits):
    centers, inertia = init_fn(init_key, data.x, data.valid, val_x, val_w)
    if float(inertia) < best_inertia:
      best, best_inertia = centers, float(inertia)
    init_meter.advance()

  tol_scaled = 0.0
  if config.tol > 0:
    moments = jax.jit(lambda x, v: _moments(x, v, per_lane=per_lane), out_shardings=replicated)
    tol_scaled = float(moments(data.x, data.valid)) * config.tol

  full_pass = jax.jit(
      lambda x, v, c: _full_pass(x, v, c, per_lane=per_lane, precision=precision),
      out_shardings=replicated,
  )
  centers = best
  if config.batch_size is not None:
    batch_per_lane = max(1, config.batch_size // lanes)
    batch = batch_per_lane * lanes
    num_steps = (config.max_iter * n) // batch
    run = jax.jit(
        lambda x, v, state, stop_at, tol: _minibatch(
            x,
            v,
            state,
            stop_at,
            tol,
            per_lane=batch_per_lane,
            num_frames=n,
            max_no_improvement=config.max_no_improvement,
            reseed_empty=config.reseed_empty,
            precision=precision,
        ),
        out_shardings=replicated,
    )
    meter = ProgressMeter("k-means mini-batch", num_steps, unit="steps", report=progress)
    segment = max(1, -(-num_steps // _PROGRESS_SEGMENTS))
    state = _minibatch_start(centers, run_key)
    for stop_at in range(segment, num_steps + segment, segment):
      state = run(
          data.x, data.valid, state, jnp.int32(min(stop_at, num_steps)), jnp.float32(tol_scaled)
      )
      meter.advance(int(state[0]) - meter.done)
      if bool(state[-1]):
        meter.finish("converged")
        break
    n_steps = int(state[0])
    centers = state[1]
    n_iter = int(math.ceil(n_steps * batch / n))
  else:
    farthest = jax.jit(
        lambda x, v, c: _farthest(x, v, c, per_lane=per_lane, precision=precision),
        out_shardings=replicated,
    )
    n_steps = 0
    meter = ProgressMeter("k-means Lloyd", config.max_iter, unit="passes", report=progress)
    for _ in range(config.max_iter):
      sums, counts, _ = full_pass(data.x, data.valid, centers)
      counts = np.asarray(counts)
      new = np.where(
          counts[:, None] > 0,
          np.asarray(sums) / np.maximum(counts, 1)[:, None],
          np.asarray(centers),
      )
      empty = np.flatnonzero(counts == 0)
      if config.reseed_empty and empty.size:
        far = np.asarray(farthest(data.x, data.valid, centers))
        new[empty] = far[: empty.size]
      shift = float(np.sum((new - np.asarray(centers)) ** 2))
      centers = jax.device_put(new.astype(np.float32), replicated)
      n_steps += 1
      meter.advance()
      if shift <= tol_scaled:
        meter.finish("converged")
        break
    n_iter = n_steps

  _, _, inertia = full_pass(data.x, data.valid, centers)
  return KMeansResult(
      centroids=np.asarray(centers, np.float32),
      inertia=float(inertia),
      n_iter=n_iter,
      n_steps=n_steps,
      num_frames=n,
  )


@functools.partial(jax.jit, static_argnames=("chunk_size", "precision"))
def _assign_block(x, centroids, chunk_size, precision):
  labels, d = lax.map(
      lambda xs: nearest_centroids(xs, centroids, _PRECISIONS[precision]),
      x.reshape(-1, chunk_size, x.shape[1]),
  )
  return labels.reshape(-1), d.reshape(-1)


def assign(
    features,
    centroids,
    chunk_size: int = 8192,
    *,
    block_chunks: int = 16,
    precision: str = "highest",
) -> tuple[np.ndarray, np.ndarray]:
  """Nearest centroid of every frame, in fixed-size blocks (one compilation per shape).

  Args:
    features: `[frames, dim]`.
    centroids: `[k, dim]`.
    chunk_size: frames per distance computation (memory ~ chunk_size x k floats).
    block_chunks: chunks per device call.
    precision: matmul precision ("highest", "high", "default").

  Returns:
    (int32 labels `[frames]`, float32 squared distances `[frames]`).
  """
  features = np.asarray(features, np.float32)
  centroids = jnp.asarray(centroids, jnp.float32)
  if features.ndim != 2 or features.shape[1] != centroids.shape[1]:
    raise ValueError(f"features {features.shape} do not match centroids {centroids.shape}")
  n = features.shape[0]
  chunk_size = max(1, min(chunk_size, n))
  block = chunk_size * max(1, min(block_chunks, -(-n // chunk_size)))
  labels, dists = np.zeros(n, np.int32), np.zeros(n, np.float32)
  for start in range(0, n, block):
    x = features[start : start + block]
    if x.shape[0] < block:
      x = np.concatenate([x, np.zeros((block - x.shape[0], x.shape[1]), np.float32)])
    lab, d = _assign_block(x, centroids, chunk_size, precision)
    stop = min(start + block, n)
    labels[start:stop] = np.asarray(lab)[: stop - start]
    dists[start:stop] = np.asarray(d)[: stop - start]
  return labels, dists


# ---------------------------------------------------------------------------------------------
# Files.


def save_centroids(path_prefix: PathLike, centroids, meta: Mapping[str, Any]) -> None:
  """Writes `{prefix}.npy` (float32 `[k, dim]`) and `{prefix}.json`.

  Args:
    path_prefix: local path or `gs://` URL without extension.
    centroids: `[k, dim]`.
    meta: should name `feature_source` (e.g. "mfcc", "hubert_base_it1"), `layer` (int, or
      None for MFCC) and `layer_output` (which tensor of that layer: e.g. "mfcc_39",
      "transformer_block_output"), and for hidden states `hidden_states_convention` (the
      feature dump's meta.json has it; `export_tokenizer` follows it); `created_by` defaults
      to "jaxdisco.clustering.kmeans".
      Any other JSON-serializable keys (k-means settings, inertia) are kept. `k` and `dim`
      are written from the array.
  """
  centroids = np.asarray(centroids, np.float32)
  if centroids.ndim != 2:
    raise ValueError(f"centroids must be [k, dim], got shape {centroids.shape}")
  record = {
      "feature_source": None,
      "layer": None,
      "layer_output": None,
      "created_by": "jaxdisco.clustering.kmeans",
      **dict(meta),
  }
  for name, value in (("k", centroids.shape[0]), ("dim", centroids.shape[1])):
    if name in record and record[name] != value:
      raise ValueError(f"meta says {name}={record[name]} but centroids have {name}={value}")
    record[name] = int(value)
  prefix = epath.Path(path_prefix)
  prefix.parent.mkdir(parents=True, exist_ok=True)
  with epath.Path(f"{prefix}.npy").open("wb") as f:
    np.save(f, centroids)
  epath.Path(f"{prefix}.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def load_centroids(path_prefix: PathLike) -> tuple[np.ndarray, dict[str, Any]]:
  """Reads what `save_centroids` wrote → (float32 `[k, dim]`, meta dict)."""
  prefix = epath.Path(path_prefix)
  npy, meta_path = epath.Path(f"{prefix}.npy"), epath.Path(f"{prefix}.json")
  for path in (npy, meta_path):
    if not path.exists():
      raise MissingFileError(f"{path}: centroid file not found (written by save_centroids)")
  with npy.open("rb") as f:
    centroids = np.load(f).astype(np.float32)
  meta = json.loads(meta_path.read_text())
  if centroids.ndim != 2 or (meta.get("k"), meta.get("dim")) != centroids.shape:
    raise ValueError(
        f"{npy}: shape {centroids.shape} disagrees with {meta_path} "
        f"(k={meta.get('k')}, dim={meta.get('dim')})"
    )
  return centroids, meta


def import_sklearn_kmeans(joblib_path: PathLike) -> np.ndarray:
  """Centroids `[k, dim]` float32 from a scikit-learn KMeans / MiniBatchKMeans joblib file.

  This is the format of fairseq's learn_kmeans.py and textlesslib's tokenizers. Unpickling
  runs code from the file: only load files you trust. Needs scikit-learn and joblib.
  """
  try:
    import joblib  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "import_sklearn_kmeans needs joblib and scikit-learn " "(pip install scikit-learn)"
    ) from e
  with epath.Path(joblib_path).open("rb") as f:
    model = joblib.load(f)
  centers = getattr(model, "cluster_centers_", None)
  if centers is None:
    raise ValueError(
        f"{joblib_path}: expected a fitted scikit-learn KMeans/MiniBatchKMeans "
        f"(with cluster_centers_), found {type(model).__name__}"
    )
  return np.asarray(centers, np.float32)
