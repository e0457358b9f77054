"""k-means: time to reach within 1% of the best inertia, jaxdisco vs faiss vs scikit-learn.

    python -m benchmarks.kmeans            # 1M x 768 frames, K=500 (HuBERT iteration-2 size)
    python -m benchmarks.kmeans --quick    # 100k x 768, K=100

`main(argv)` returns the table rows (dicts), for a runner that calls every benchmark.

The data is random but clustered (Gaussian blobs, 2K of them, of varied width), float32, the
same frames for every method. Each method runs at a few effort settings (a grid, cheapest
first); every run's centroids are scored afterwards by the same inertia computation (mean
squared distance to the nearest centroid over all frames), outside the timed region. The target
is 1.01 x the lowest inertia any run reached; a method's time to target is the wall time of its
cheapest run that reached it, so for a grid the true figure lies between that run and the one
before it. jaxdisco's streamed fit reports the centres after its initialization and after every
pass (`on_pass`), so its time to target is read off one run.

Methods:
- jaxdisco streamed (`clustering.streamed_kmeans`): frames written first as a feature dump
  (`.npz` shards, as the HuBERT loop writes them; writing is not timed, reading is), k-means++
  and Lloyd on a sample, then Lloyd passes streamed from the shards. Includes compilation.
- jaxdisco mini-batch in memory (`clustering.kmeans.fit_kmeans`, the HuBERT reference's
  MiniBatchKMeans settings, `--jaxdisco-n-init` initializations). Includes compilation.
- scikit-learn `MiniBatchKMeans` (reference settings but n_init=1, scikit-learn's default for
  k-means++) at max_iter in `--sklearn-max-iter`, and `KMeans` (Lloyd, n_init=1) at max_iter in
  `--sklearn-lloyd-iter` (off by default: at 1M x 768, K=500 its k-means++ over all frames, in
  float64 chunks, was still running after 18 minutes on 2 cores; on `--quick` it took 14 s).
- faiss `Kmeans` (Lloyd from random frames) at niter in `--faiss-niter`, on at most 256 frames
  per centroid (its default) and on all frames.

faiss is optional and not a dependency of jaxdisco; to include it: `pip install faiss-cpu`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from typing import Callable

import jax
import numpy as np

from jaxdisco.clustering import features as features_lib
from jaxdisco.clustering import kmeans as km
from jaxdisco.clustering import streamed_kmeans as sk

TARGET = 1.01


def clustered_frames(n: int, dim: int, num_blobs: int, seed: int = 0) -> np.ndarray:
  """`[n, dim]` float32 frames from `num_blobs` Gaussian blobs of varied width."""
  rng = np.random.default_rng(seed)
  centres = rng.standard_normal((num_blobs, dim), dtype=np.float32)
  scales = rng.uniform(0.3, 0.8, num_blobs).astype(np.float32)
  which = rng.integers(0, num_blobs, n)
  out = np.empty((n, dim), np.float32)
  for start in range(0, n, 65536):
    idx = which[start : start + 65536]
    noise = rng.standard_normal((len(idx), dim), dtype=np.float32)
    out[start : start + len(idx)] = centres[idx] + noise * scales[idx, None]
  return out


def _ints(text: str) -> list[int]:
  return [int(v) for v in text.split(",") if v]


def _timed(fit: Callable[[], np.ndarray]) -> tuple[float, np.ndarray]:
  t0 = time.perf_counter()
  centroids = fit()
  return time.perf_counter() - t0, np.asarray(centroids, np.float32)


def main(argv=None) -> list[dict]:
  """Runs the benchmark with command-line `argv` (default sys.argv[1:]); returns the rows."""
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--quick", action="store_true", help="100k x 768, K=100")
  parser.add_argument("--frames", type=int, default=None)
  parser.add_argument("--dim", type=int, default=768)
  parser.add_argument("--k", type=int, default=None)
  parser.add_argument("--passes", type=int, default=8, help="jaxdisco streamed passes at most")
  parser.add_argument("--jaxdisco-n-init", type=int, default=3, help="0 skips the mini-batch run")
  parser.add_argument("--sklearn-max-iter", default="1,3", help="MiniBatchKMeans grid ('' skips)")
  parser.add_argument("--sklearn-lloyd-iter", default="", help="KMeans grid, e.g. 3,10")
  parser.add_argument("--faiss-niter", default="20,80", help="faiss grid ('' skips)")
  parser.add_argument("--utterances-per-shard", type=int, default=64)
  parser.add_argument("--frames-per-utterance", type=int, default=500)
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  n = args.frames or (100_000 if args.quick else 1_000_000)
  k = args.k or (100 if args.quick else 500)

  t0 = time.perf_counter()
  x = clustered_frames(n, args.dim, 2 * k)
  print(
      f"data: {n} x {args.dim} float32 ({x.nbytes / 2**30:.2f} GiB), K={k}, "
      f"{2 * k} blobs; generated in {time.perf_counter() - t0:.1f} s"
  )
  print(f"jax {jax.__version__} on {jax.device_count()} x {jax.devices()[0].device_kind}")
  runs = []  # (method, setting, seconds, centroids)

  with tempfile.TemporaryDirectory() as tmp:
    step = args.frames_per_utterance
    utterances = [x[i : i + step] for i in range(0, n, step)]
    features_lib.dump_arrays(utterances, tmp, utterances_per_shard=args.utterances_per_shard)
    frames = sk.StreamedFrames.from_dump(tmp)
    print(f"dump: {len(frames.paths)} shards of {args.utterances_per_shard * step} frames")
    t0 = time.perf_counter()
    per_pass = []
    sk.fit_streamed_kmeans(
        frames,
        sk.StreamedKMeans(k=k, max_passes=args.passes, tol=0.0),
        on_pass=lambda i, c: per_pass.append((i, time.perf_counter() - t0, c.copy())),
    )
    for i, seconds, c in per_pass:
      setting = "init (sample k-means++ + Lloyd)" if i == 0 else f"after pass {i}"
      runs.append(("jaxdisco streamed from disk", setting, seconds, c))

  if args.jaxdisco_n_init:
    config = km.KMeans(k=k, n_init=args.jaxdisco_n_init, seed=0)
    seconds, c = _timed(lambda: km.fit_kmeans(x, config).centroids)
    runs.append(("jaxdisco mini-batch in memory", f"n_init {args.jaxdisco_n_init}", seconds, c))

  if args.sklearn_max_iter or args.sklearn_lloyd_iter:
    from sklearn.cluster import KMeans, MiniBatchKMeans  # pylint: disable=g-import-not-at-top

    for max_iter in _ints(args.sklearn_max_iter):
      model = MiniBatchKMeans(
          n_clusters=k,
          init="k-means++",
          batch_size=10_000,
          max_iter=max_iter,
          n_init=1,
          tol=0.0,
          max_no_improvement=100,
          reassignment_ratio=0.0,
          compute_labels=False,
          random_state=0,
      )
      seconds, c = _timed(lambda: model.fit(x).cluster_centers_)
      runs.append(("sklearn MiniBatchKMeans", f"max_iter {max_iter}", seconds, c))
    for max_iter in _ints(args.sklearn_lloyd_iter):
      model = KMeans(n_clusters=k, init="k-means++", n_init=1, max_iter=max_iter, random_state=0)
      seconds, c = _timed(lambda: model.fit(x).cluster_centers_)
      runs.append(("sklearn KMeans (Lloyd)", f"max_iter {max_iter}", seconds, c))

  if args.faiss_niter:
    try:
      import faiss  # pylint: disable=g-import-not-at-top
    except ImportError:
      faiss = None
      print("faiss not importable: skipped (pip install faiss-cpu to include it)")
    for points, cap in (("<=256/centroid", 256), ("all frames", -(-n // k))):
      for niter in _ints(args.faiss_niter) if faiss is not None else []:
        index = faiss.Kmeans(args.dim, k, niter=niter, seed=0, max_points_per_centroid=cap)
        seconds, c = _timed(lambda: (index.train(x), index.centroids)[1])
        runs.append((f"faiss {faiss.__version__} Kmeans", f"niter {niter}, {points}", seconds, c))

  inertias = [float(km.assign(x, c)[1].astype(np.float64).mean()) for *_, c in runs]
  best = min(inertias)
  print(
      f"\n| method | setting | wall s | inertia per frame | / best | within {TARGET - 1:.0%} |"
      "\n|---|---|---:|---:|---:|---|"
  )
  rows = []
  for (method, setting, seconds, _), inertia in zip(runs, inertias):
    hit = inertia <= TARGET * best
    print(
        f"| {method} | {setting} | {seconds:.1f} | {inertia:.4f} | {inertia / best:.4f} | "
        f"{'yes' if hit else 'no'} |"
    )
    rows.append(
        dict(
            method=method,
            setting=setting,
            frames=n,
            dim=args.dim,
            k=k,
            seconds=round(seconds, 2),
            inertia_per_frame=round(inertia, 4),
            inertia_vs_best=round(inertia / best, 4),
            within_target=hit,
        )
    )
  print(f"\ntime to within {TARGET - 1:.0%} of the best inertia ({best:.4f} per frame):\n")
  print("| method | seconds | setting |\n|---|---:|---|")
  for method in dict.fromkeys(r["method"] for r in rows):
    hits = [r for r in rows if r["method"] == method and r["within_target"]]
    first = min(hits, key=lambda r: r["seconds"]) if hits else None
    print(
        f"| {method} | {first['seconds']:.1f} | {first['setting']} |"
        if first
        else f"| {method} | not reached | best {min(r['inertia_vs_best'] for r in rows if r['method'] == method):.4f} x |"
    )
  return rows


if __name__ == "__main__":
  main()
