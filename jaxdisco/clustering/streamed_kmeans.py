"""k-means fitted from on-disk feature shards streamed in chunks: no memory wall.

The in-memory fit (`kmeans.fit_kmeans`) needs every frame it fits on in host memory, which is
why recipes fit on 10% of the frames and why clustering a large corpus asks for terabytes of
RAM. Here the frames stay on disk, in the shards a feature dump writes (`features.py`:
`features-XXXXX-of-NNNNN.npz`) or in `.npy` files, and only one shard plus one chunk is in host
memory at a time (the next shard is read on a thread while the device works on this one).

Algorithm (the faiss/Lloyd recipe, then refined on every frame):

1. Initialization on a uniform sample of `init_size` frames (default 64 per centre, at least
   10000): greedy k-means++ and `init_passes` Lloyd passes on the sample, in device memory
   (`kmeans.fit_kmeans` with `batch_size=None` on the sample). faiss fits on at most 256 frames
   per centre and stops there; here the sample only has to put the centres in the right basins,
   because step 2 then sees all frames.
2. Streamed Lloyd passes over all frames: every chunk of `chunk_frames` frames is assigned to
   its nearest centre on device and its per-centre sums, counts and squared distances are
   accumulated on device; at the end of a pass the centres become the means. A centre that got
   no frame moves to the frame farthest from its centre among those seen in the pass (kept as a
   running top-k), as `fit_kmeans`' Lloyd does. The fit stops after `max_passes`, or when a pass
   lowers the inertia by less than `tol` of it.

A pass's inertia is that of the centres it started from (it is measured while assigning), so
`pass_inertias[i]` belongs to the centres before update i, and the returned centres' inertia is
at most the last entry (a Lloyd update never raises it).

Parallelism: every chunk is one global array sharded over the 1-D "data" mesh of all devices
(`kmeans.data_mesh`); `jax.jit` partitions the assignment and inserts the all-reduce of the
sums. Multi-host: each process streams its own shards (`StreamedFrames.from_dump` takes shards
`process_index::process_count`, as the dump writes them) and contributes `chunk_frames` rows to
every global chunk; a process that runs out of frames first contributes zero-weight rows, so
all processes run the same programs. Lloyd's sums do not depend on which process holds a frame,
so centres agree with a one-process fit on the same frames up to float summation order.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import math
import os
from typing import Callable, Iterator, Optional, Sequence, Union

from etils import epath
import jax
from jax import lax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import numpy as np

from jaxdisco.clustering import kmeans as km
from jaxdisco.errors import ConfigError, MissingFileError, UserError
from jaxdisco.progress import ProgressMeter

PathLike = Union[str, os.PathLike, epath.Path]


# ---------------------------------------------------------------------------------------------
# Frames on disk.


class FeatureShardError(UserError, ValueError):
  """A feature shard is unreadable, or disagrees with the others (dim) or with k."""


def _read_shard(path: epath.Path) -> np.ndarray:
  """`[frames, dim]` float32 frames of one shard (`.npz` of a dump, or `.npy`)."""
  if not path.exists():
    raise MissingFileError(f"{path}: feature shard not found")
  try:
    if path.suffix == ".npy":
      with path.open("rb") as f:
        x = np.load(f)
    else:
      with path.open("rb") as f:
        x = np.load(f)["features"]
  except (ValueError, KeyError, OSError, EOFError) as e:
    raise FeatureShardError(f"{path}: not a readable feature shard ({e})") from e
  if x.ndim != 2:
    raise FeatureShardError(f"{path}: expected features [frames, dim], got shape {x.shape}")
  return np.asarray(x, np.float32)


def _shard_frames(path: epath.Path) -> int:
  """Frame count of a shard without reading its features."""
  if not path.exists():
    raise MissingFileError(f"{path}: feature shard not found")
  with path.open("rb") as f:
    if path.suffix == ".npy":
      major, _ = np.lib.format.read_magic(f)
      read_header = (
          np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
      )
      return int(read_header(f)[0][0])
    try:
      return int(np.sum(np.load(f)["lengths"]))
    except (ValueError, KeyError, OSError, EOFError) as e:
      raise FeatureShardError(f"{path}: not a feature dump shard (needs `lengths`; {e})") from e


@dataclasses.dataclass(frozen=True)
class StreamedFrames:
  """This process's frames as a list of on-disk shards, read one shard at a time.

  Attributes:
    paths: the shards (dump `.npz` shards or `.npy` arrays `[frames, dim]`).
    counts: frames per shard.
    dim: feature dimension.
  """

  paths: tuple[epath.Path, ...]
  counts: tuple[int, ...]
  dim: int

  @classmethod
  def from_paths(cls, paths: Sequence[PathLike], dim: Optional[int] = None) -> "StreamedFrames":
    paths = tuple(epath.Path(p) for p in paths)
    counts = tuple(_shard_frames(p) for p in paths)
    if dim is None:
      first = next((p for p, c in zip(paths, counts) if c), None)
      dim = _read_shard(first).shape[1] if first is not None else 0
    return cls(paths, counts, int(dim))

  @classmethod
  def from_dump(
      cls,
      dump_dir: PathLike,
      *,
      process_index: Optional[int] = None,
      process_count: Optional[int] = None,
  ) -> "StreamedFrames":
    """The shards of a feature dump (`features.dump_features`) that this process reads:
    `process_index::process_count` (default: this JAX process of all of them)."""
    out = epath.Path(dump_dir)
    meta_path = out / "meta.json"
    if not meta_path.exists():
      raise MissingFileError(f"{meta_path}: not found (is {out} a feature dump?)")
    meta = json.loads(meta_path.read_text())
    num_shards = int(meta["num_shards"])
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    names = [f"features-{k:05d}-of-{num_shards:05d}.npz" for k in range(index, num_shards, count)]
    return cls.from_paths([out / n for n in names], dim=meta.get("dim"))

  @property
  def num_frames(self) -> int:
    return int(sum(self.counts))

  def _shards(self) -> Iterator[tuple[epath.Path, np.ndarray]]:
    """Every non-empty shard in order, the next one read on a thread meanwhile."""
    todo = [p for p, c in zip(self.paths, self.counts) if c]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
      pending = pool.submit(_read_shard, todo[0]) if todo else None
      for i, path in enumerate(todo):
        x = pending.result()
        pending = pool.submit(_read_shard, todo[i + 1]) if i + 1 < len(todo) else None
        if x.shape[1] != self.dim:
          raise FeatureShardError(f"{path}: features have dim {x.shape[1]}, the other shards {self.dim}")
        yield path, x

  def chunks(self, chunk_frames: int) -> Iterator[np.ndarray]:
    """Consecutive `[<= chunk_frames, dim]` blocks of all frames (only the last one short).
    Blocks inside a shard are views; only a block that spans two shards is copied."""
    carry = np.zeros((0, self.dim), np.float32)
    for _, x in self._shards():
      start = 0
      if carry.shape[0]:
        start = chunk_frames - carry.shape[0]
        carry = np.concatenate([carry, x[:start]])
        if carry.shape[0] < chunk_frames:
          continue
        yield carry
      full = start + ((x.shape[0] - start) // chunk_frames) * chunk_frames
      for i in range(start, full, chunk_frames):
        yield x[i : i + chunk_frames]
      carry = x[full:]
    if carry.shape[0]:
      yield carry

  def sample(self, count: int, seed: int) -> np.ndarray:
    """`min(count, frames)` frames drawn uniformly without replacement, in shard order."""
    count = min(count, self.num_frames)
    picks = np.sort(np.random.default_rng(seed).choice(self.num_frames, count, replace=False))
    out = []
    bounds = np.cumsum((0,) + tuple(c for c in self.counts if c))
    for i, (_, x) in enumerate(self._shards()):
      lo, hi = np.searchsorted(picks, [bounds[i], bounds[i + 1]])
      out.append(x[picks[lo:hi] - bounds[i]])
    return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)


# ---------------------------------------------------------------------------------------------
# Device programs (shapes static: every chunk is padded to chunk_frames rows per process).


def _pass_start(k: int, dim: int):
  """Accumulators of a pass: sums, counts, inertia, and the k farthest frames seen (distance,
  frame)."""
  return (
      jnp.zeros((k, dim), jnp.float32),
      jnp.zeros((k,), jnp.float32),
      jnp.zeros((), jnp.float32),
      jnp.full((k,), -1.0, jnp.float32),
      jnp.zeros((k, dim), jnp.float32),
  )


def _nearest(x, centers, precision):
  """(labels `[n]`, squared distances `[n]`), as `kmeans.nearest_centroids` gives them (ties to
  the lowest index), with the argmin written as a min and a masked min: XLA's CPU argmin over
  `[n, k]` took a third of the chunk time, this takes a sixth (same chunk, 2 cores)."""
  k = centers.shape[0]
  scores = jnp.sum(centers * centers, axis=1)[None, :] - 2.0 * jnp.dot(
      x, centers.T, precision=precision
  )
  best = jnp.min(scores, axis=1)
  index = jnp.arange(k, dtype=jnp.int32)
  labels = jnp.min(jnp.where(scores <= best[:, None], index[None, :], k), axis=1)
  return labels, jnp.maximum(jnp.sum(x * x, axis=1) + best, 0.0)


def _accumulate(state, x, w, centers, *, precision):
  """Adds one chunk `[n, dim]` (weights `[n]`, 0 for padding) to the pass accumulators."""
  sums, counts, inertia, far_d, far_x = state
  k = centers.shape[0]
  labels, d = _nearest(x, centers, precision)
  sums = sums + jax.ops.segment_sum(x * w[:, None], labels, k)
  counts = counts + jax.ops.segment_sum(w, labels, k)
  inertia = inertia + jnp.sum(d * w)
  # Farthest frames for re-seeding empty centres: the chunk's top k joined with the running top k.
  top_d, top_i = lax.top_k(jnp.where(w > 0, d, -1.0), min(k, x.shape[0]))
  all_d = jnp.concatenate([far_d, top_d])
  best_d, best_i = lax.top_k(all_d, k)
  far_x = jnp.concatenate([far_x, x[top_i]])[best_i]
  return sums, counts, inertia, best_d, far_x


@dataclasses.dataclass(frozen=True)
class StreamedKMeans:
  """Settings of `fit_streamed_kmeans` (see the module doc).

  Attributes:
    k: number of clusters.
    max_passes: streamed Lloyd passes over all frames at most.
    tol: stop when a pass lowers the inertia by less than this fraction of it (0: never).
    init_size: frames sampled for the initialization; None means 64 per centre, at least
      10000 (capped at the frame count).
    init_passes: Lloyd passes on the sample after k-means++.
    chunk_frames: rows each process contributes to a device chunk (a multiple of its local
      device count); host memory is one shard plus about two chunks.
    seed: seed of the sample and of k-means++.
    reseed_empty: move centres that get no frame to far frames.
    precision: matmul precision of distances ("highest", "high", "default").
  """

  k: int
  max_passes: int = 20
  tol: float = 1e-3
  init_size: Optional[int] = None
  init_passes: int = 20
  chunk_frames: int = 65536
  seed: int = 0
  reseed_empty: bool = True
  precision: str = "highest"


@dataclasses.dataclass(frozen=True)
class StreamedKMeansResult:
  """Outcome of `fit_streamed_kmeans`.

  Attributes:
    centroids: float32 `[k, dim]`.
    pass_inertias: inertia (sum of squared distances over all frames) of the centres each
      pass started from; the returned centres' inertia is at most the last one.
    num_frames: frames of all processes.
    init_frames: frames the initialization was fitted on.
  """

  centroids: np.ndarray
  pass_inertias: tuple[float, ...]
  num_frames: int
  init_frames: int

  @property
  def passes(self) -> int:
    return len(self.pass_inertias)


def _check(config: StreamedKMeans) -> None:
  for name in ("k", "max_passes", "chunk_frames"):
    if getattr(config, name) < 1:
      raise ConfigError(f"StreamedKMeans.{name}: expected >= 1, got {getattr(config, name)}")
  if config.init_passes < 0 or config.tol < 0:
    raise ConfigError(
        f"StreamedKMeans: init_passes and tol must be >= 0, got {config.init_passes}, {config.tol}"
    )
  if config.precision not in km._PRECISIONS:  # pylint: disable=protected-access
    raise ConfigError(f"StreamedKMeans.precision: expected one of highest/high/default")


def _allgather(value) -> np.ndarray:
  if jax.process_count() == 1:
    return np.asarray([value])
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  return np.asarray(multihost_utils.process_allgather(np.asarray(value))).reshape(-1)


def fit_streamed_kmeans(
    frames: StreamedFrames,
    config: StreamedKMeans,
    *,
    mesh: Optional[Mesh] = None,
    init_centroids: Optional[np.ndarray] = None,
    progress: Optional[Callable[[str], None]] = None,
    on_pass: Optional[Callable[[int, np.ndarray], None]] = None,
) -> StreamedKMeansResult:
  """Fits k-means on `frames` (this process's shards; see the module doc).

  Args:
    frames: this process's `StreamedFrames` (every process calls with its own).
    config: settings.
    mesh: 1-D "data" mesh (default all devices).
    init_centroids: `[k, dim]` starting centres; replaces step 1 (the sample is not read).
    progress: print-like callable for progress lines (rate, ETA); None for silence.
    on_pass: called with (0, the initial centres) and after every pass with (pass number,
      the new centres); a benchmark uses it to time each pass's centres.

  Returns:
    `StreamedKMeansResult`.
  """
  _check(config)
  mesh = km.data_mesh() if mesh is None else mesh
  precision = km._PRECISIONS[config.precision]  # pylint: disable=protected-access
  k, dim = config.k, frames.dim
  local_devices = mesh.size // jax.process_count()
  if config.chunk_frames % local_devices:
    raise ConfigError(
        f"StreamedKMeans.chunk_frames={config.chunk_frames}: expected a multiple of the "
        f"{local_devices} devices of this process"
    )
  counts = _allgather(np.int64(frames.num_frames))
  dims = _allgather(np.int64(dim))
  if len(set(dims.tolist())) > 1:
    raise FeatureShardError(f"feature dimensions differ between processes: {dims.tolist()}")
  num_frames = int(counts.sum())
  if num_frames < k:
    raise FeatureShardError(
        f"need at least k={k} frames, got {num_frames} in {len(frames.paths)} shard(s) "
        f"(first: {frames.paths[0] if frames.paths else 'none'})"
    )
  replicated = NamedSharding(mesh, PartitionSpec())

  init_frames = 0
  if init_centroids is not None:
    if np.shape(init_centroids) != (k, dim):
      raise FeatureShardError(f"init_centroids must be [{k}, {dim}], got {np.shape(init_centroids)}")
    centers = np.asarray(init_centroids, np.float32)
  else:
    init_size = min(num_frames, config.init_size or max(64 * k, 10_000))
    local_size = -(-init_size * frames.num_frames // num_frames)  # Proportional to frames held.
    sample = frames.sample(local_size, seed=config.seed + 7919 * jax.process_index())
    data = km.shard_features(sample, lanes=mesh.size, mesh=mesh)
    init_frames = data.num_frames
    if progress:
      progress(f"k-means init: k-means++ and {config.init_passes} Lloyd passes on "
               f"{init_frames} sampled frames")
    fitted = km.fit_kmeans(
        data,
        km.KMeans(
            k=k,
            batch_size=None,
            max_iter=max(1, config.init_passes),
            n_init=1,
            init_size=init_frames,
            seed=config.seed,
            precision=config.precision,
            reseed_empty=config.reseed_empty,
        ),
        progress=progress,
    )
    centers = fitted.centroids

  if on_pass is not None:
    on_pass(0, centers)
  chunk_sharding = NamedSharding(mesh, PartitionSpec(km.MESH_AXIS))
  # As many chunks as chunk_frames asks for, made equal so the last one is not mostly padding.
  most_local = int(counts.max())
  num_chunks = max(1, -(-most_local // config.chunk_frames))
  rows = -(-most_local // num_chunks)
  rows = -(-rows // local_devices) * local_devices
  global_rows = rows * jax.process_count()
  accumulate = jax.jit(
      lambda state, x, w, c: _accumulate(state, x, w, c, precision=precision),
      out_shardings=replicated,
      donate_argnums=0,
  )
  start = jax.jit(lambda: _pass_start(k, dim), out_shardings=replicated)
  empty_chunk = np.zeros((0, dim), np.float32)

  def global_chunk(x: np.ndarray):
    w = np.zeros((rows,), np.float32)
    w[: x.shape[0]] = 1.0
    if x.shape[0] < rows:
      x = np.concatenate([x, np.zeros((rows - x.shape[0], dim), np.float32)])
    return (
        jax.make_array_from_process_local_data(chunk_sharding, x, (global_rows, dim)),
        jax.make_array_from_process_local_data(chunk_sharding, w, (global_rows,)),
    )

  inertias = []
  meter = ProgressMeter(
      f"k-means streamed ({num_frames} frames, K={k})",
      config.max_passes * num_chunks,
      unit="chunks",
      report=progress,
  )
  for pass_index in range(1, config.max_passes + 1):
    device_centers = jax.device_put(centers, replicated)
    state = start()
    stream = frames.chunks(rows)
    for _ in range(num_chunks):
      x, w = global_chunk(next(stream, empty_chunk))
      state = accumulate(state, x, w, device_centers)
      meter.advance(note=f"pass {pass_index}")
    sums, got, inertia, _, far_x = (np.asarray(a) for a in state)
    new = np.where(got[:, None] > 0, sums / np.maximum(got, 1.0)[:, None], centers)
    empty = np.flatnonzero(got == 0)
    if config.reseed_empty and empty.size:
      new[empty] = far_x[: empty.size]
    centers = new.astype(np.float32)
    inertias.append(float(inertia))
    if on_pass is not None:
      on_pass(pass_index, centers)
    if len(inertias) > 1 and inertias[-2] - inertias[-1] <= config.tol * inertias[-1]:
      meter.finish(f"converged after {pass_index} passes")
      break
  return StreamedKMeansResult(
      centroids=centers,
      pass_inertias=tuple(inertias),
      num_frames=num_frames,
      init_frames=init_frames,
  )
