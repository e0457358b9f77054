"""k-means fit time and quality: jaxdisco vs scikit-learn MiniBatchKMeans (vs faiss if present).

    python -m benchmarks.kmeans            # 1M x 768 frames, K=500 (HuBERT iteration-2 size)
    python -m benchmarks.kmeans --quick    # 100k x 768, K=100, 2 initializations

`main(argv)` returns the table rows (dicts), for a runner that calls every benchmark.

The data is random but clustered (Gaussian blobs, 2K of them, of varied width), float32, the
same array for every method. jaxdisco and scikit-learn both use the HuBERT reference's settings
(k-means++, batch 10000, max_iter 100, n_init 20, max_no_improvement 100, tol 0,
reassignment_ratio 0); faiss uses its own defaults (Lloyd, `--faiss-niter` passes on at most 256
frames per centroid). Every method runs once; jaxdisco's time includes compilation. Inertia is
the mean squared distance per frame over all frames, computed the same way for every method.

faiss is optional and not a dependency of jaxdisco; to include it: `pip install faiss-cpu`.
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import numpy as np

from jaxdisco.clustering import kmeans as km


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


def main(argv=None) -> list[dict]:
  """Runs the benchmark with command-line `argv` (default sys.argv[1:]); returns the rows."""
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--quick", action="store_true", help="100k x 768, K=100, n_init 2")
  parser.add_argument("--frames", type=int, default=None)
  parser.add_argument("--dim", type=int, default=768)
  parser.add_argument("--k", type=int, default=None)
  parser.add_argument("--n-init", type=int, default=None, help="default 20 (quick: 2)")
  parser.add_argument("--max-iter", type=int, default=100)
  parser.add_argument("--faiss-niter", type=int, default=20)
  parser.add_argument("--skip-sklearn", action="store_true")
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  n = args.frames or (100_000 if args.quick else 1_000_000)
  k = args.k or (100 if args.quick else 500)
  args.n_init = args.n_init or (2 if args.quick else 20)

  t0 = time.perf_counter()
  x = clustered_frames(n, args.dim, 2 * k)
  print(
      f"data: {n} x {args.dim} float32 ({x.nbytes / 2**30:.2f} GiB), K={k}, "
      f"{2 * k} blobs; generated in {time.perf_counter() - t0:.1f} s"
  )
  print(f"jax {jax.__version__} on {jax.device_count()} x {jax.devices()[0].device_kind}")

  rows = []  # (name, seconds, centroids, note)
  config = km.KMeans(
      k=k,
      batch_size=10_000,
      max_iter=args.max_iter,
      n_init=args.n_init,
      max_no_improvement=100,
      tol=0.0,
      seed=0,
  )
  t0 = time.perf_counter()
  result = km.fit_kmeans(x, config)
  rows.append(("jaxdisco", time.perf_counter() - t0, result.centroids, f"{result.n_steps} steps"))

  if not args.skip_sklearn:
    from sklearn.cluster import MiniBatchKMeans  # pylint: disable=g-import-not-at-top

    model = MiniBatchKMeans(
        n_clusters=k,
        init="k-means++",
        batch_size=10_000,
        max_iter=args.max_iter,
        n_init=args.n_init,
        tol=0.0,
        max_no_improvement=100,
        reassignment_ratio=0.0,
        compute_labels=False,
        random_state=0,
    )
    t0 = time.perf_counter()
    model.fit(x)
    rows.append(
        (
            "sklearn MiniBatchKMeans",
            time.perf_counter() - t0,
            model.cluster_centers_.astype(np.float32),
            f"{model.n_steps_} steps",
        )
    )

  try:
    import faiss  # pylint: disable=g-import-not-at-top
  except ImportError:
    faiss = None
    print("faiss not importable: skipped (pip install faiss-cpu to include it)")
  if faiss is not None:
    index = faiss.Kmeans(args.dim, k, niter=args.faiss_niter, seed=0, verbose=False)
    t0 = time.perf_counter()
    index.train(x)
    rows.append(
        (
            f"faiss {faiss.__version__} Kmeans",
            time.perf_counter() - t0,
            np.asarray(index.centroids, np.float32),
            f"{args.faiss_niter} Lloyd passes on <=256/centroid",
        )
    )

  base_time = rows[0][1]
  base_inertia = None
  table = []
  print(
      f"\n| method | wall s | time / jaxdisco | inertia per frame | inertia / jaxdisco "
      f"| notes |\n|---|---:|---:|---:|---:|---|"
  )
  for name, seconds, centroids, note in rows:
    _, d = km.assign(x, centroids)
    inertia = float(d.astype(np.float64).mean())
    base_inertia = base_inertia or inertia
    print(
        f"| {name} | {seconds:.1f} | {seconds / base_time:.2f} | {inertia:.4f} | "
        f"{inertia / base_inertia:.4f} | {note} |"
    )
    table.append(
        {
            "method": name,
            "frames": n,
            "dim": args.dim,
            "k": k,
            "seconds": seconds,
            "inertia_per_frame": inertia,
            "inertia_vs_jaxdisco": inertia / base_inertia,
            "notes": note,
        }
    )
  return table


if __name__ == "__main__":
  main()
