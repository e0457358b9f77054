"""k-means across hosts: two local JAX processes (2 CPU devices each, gloo collectives), each
holding half of the frames, fit the same centroids as one process holding all of them.

The frames are split so that the global lane layout is the single-process one (frame i in lane
i % 4, row i // 4): process p holds, as its local frame j, global frame
(j // 2) * 4 + 2 * p + j % 2. Then the fits differ only in float summation order.
"""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np

from jaxdisco.clustering import features
from jaxdisco.clustering import kmeans as km
from jaxdisco.clustering import streamed_kmeans as sk

REPO = pathlib.Path(__file__).resolve().parent.parent
LAUNCHER = REPO / "launch" / "local_multiprocess.py"
SETTINGS = [dict(batch_size=1000), dict(batch_size=None)]  # Mini-batch and full-batch Lloyd.
COMMON = dict(k=20, n_init=2, max_iter=8, lanes=4, chunk_size=512, seed=1)
STREAMED = dict(k=20, max_passes=4, tol=0.0, chunk_frames=512)


def _frames() -> np.ndarray:
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(30, 16)) * 3
  return (centres[rng.integers(0, 30, 6000)] + rng.normal(size=(6000, 16))).astype(np.float32)


_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from jaxdisco.parallel.distributed import initialize_from_env
    assert initialize_from_env()
    import jax
    sys.path.insert(0, {tests!r})
    from test_kmeans_multihost import COMMON, SETTINGS, STREAMED, _frames
    from jaxdisco.clustering import kmeans as km

    p = jax.process_index()
    assert jax.process_count() == 2 and jax.device_count() == 4
    j = np.arange(3000)
    local = _frames()[(j // 2) * 4 + 2 * p + j % 2]
    data = km.shard_features(local, lanes=4, chunk_size=COMMON["chunk_size"])
    assert data.num_frames == 6000 and len(data.x.sharding.device_set) == 4
    out = []
    for extra in SETTINGS:
      result = km.fit_kmeans(data, km.KMeans(**COMMON, **extra))
      out.append(dict(centroids=np.asarray(result.centroids).tolist(),
                      inertia=float(result.inertia), n_steps=int(result.n_steps)))
    from jaxdisco.clustering import streamed_kmeans as sk
    frames = sk.StreamedFrames.from_dump(sys.argv[2])  # Shards p::2 of the dump.
    assert frames.num_frames < 6000
    result = sk.fit_streamed_kmeans(frames, sk.StreamedKMeans(**STREAMED),
                                    init_centroids=_frames()[:COMMON["k"]])
    out.append(dict(centroids=result.centroids.tolist(), inertias=list(result.pass_inertias)))
    if p == 0:
      with open(sys.argv[1], "w") as f:
        json.dump(out, f)
""")


def test_two_processes_fit_the_single_process_centroids(tmp_path):
  script = tmp_path / "fit.py"
  script.write_text(_SCRIPT.format(tests=str(REPO / "tests")))
  result_path = tmp_path / "two_processes.json"
  # Five uneven shards: process 0 streams shards 0, 2, 4 and process 1 shards 1, 3.
  dump = features.dump_arrays(
      np.split(_frames(), [700, 2000, 2900, 4400]), tmp_path / "dump", utterances_per_shard=1
  )
  proc = subprocess.run(
      [
          sys.executable,
          str(LAUNCHER),
          "--num_processes",
          "2",
          "--devices_per_process",
          "2",
          "--timeout",
          "400",
          "--",
          sys.executable,
          str(script),
          str(result_path),
          str(dump),
      ],
      capture_output=True,
      text=True,
      timeout=450,
      cwd=REPO,
      env=dict(os.environ, PYTHONPATH=str(REPO)),
  )
  assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
  two = json.loads(result_path.read_text())
  x = _frames()
  *two, streamed = two
  one = sk.fit_streamed_kmeans(
      sk.StreamedFrames.from_dump(dump), sk.StreamedKMeans(**STREAMED), init_centroids=x[:20]
  )
  np.testing.assert_allclose(np.asarray(streamed["centroids"]), one.centroids, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(streamed["inertias"], one.pass_inertias, rtol=1e-5)
  for extra, got in zip(SETTINGS, two):
    one = km.fit_kmeans(x, km.KMeans(**COMMON, **extra))
    np.testing.assert_allclose(np.asarray(got["centroids"]), one.centroids, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got["inertia"], one.inertia, rtol=1e-5)
    assert got["n_steps"] == one.n_steps
