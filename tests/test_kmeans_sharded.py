"""Data-parallel k-means: 4 simulated CPU devices give the 1-device results.

XLA's device count is fixed when jax starts, so the check runs in a subprocess with
`--xla_force_host_platform_device_count=4`.
"""

import os
import subprocess
import sys
import textwrap

_SCRIPT = textwrap.dedent("""
    import functools
    import jax
    import numpy as np
    from jaxdisco.clustering import kmeans as km

    assert jax.device_count() == 4, jax.devices()
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(30, 16))[rng.integers(0, 30, 6001)] * 3
         + rng.normal(size=(6001, 16))).astype(np.float32)  # 6001: uneven lanes, padding
    four, one = km.data_mesh(), km.data_mesh(jax.devices()[:1])
    for batch_size in (1000, None):
      config = km.KMeans(k=20, batch_size=batch_size, n_init=2, max_iter=8, lanes=4,
                         chunk_size=512, seed=1)
      a = km.fit_kmeans(x, config, mesh=four)
      b = km.fit_kmeans(x, config, mesh=one)
      np.testing.assert_allclose(a.centroids, b.centroids, rtol=1e-4, atol=1e-4)
      np.testing.assert_allclose(a.inertia, b.inertia, rtol=1e-5)
      assert a.n_steps == b.n_steps, (a.n_steps, b.n_steps)
      print(batch_size, "max centroid diff", np.abs(a.centroids - b.centroids).max())

    data = km.shard_features(x, lanes=4, chunk_size=512, mesh=four)
    assert len(data.x.sharding.device_set) == 4 and data.num_frames == 6001
    assert int(data.valid.sum()) == 6001
    step = jax.jit(functools.partial(km._full_pass, per_lane=128,
                                     precision=jax.lax.Precision.HIGHEST))
    centres = np.asarray(x[:20])
    hlo = step.lower(data.x, data.valid, centres).compile().as_text()
    assert "all-reduce" in hlo, "expected the partitioner to all-reduce per-shard sums"
    sums, counts, _ = step(data.x, data.valid, centres)
    labels, _ = km.assign(x, centres)
    np.testing.assert_allclose(np.asarray(counts), np.bincount(labels, minlength=20))
    np.testing.assert_allclose(np.asarray(sums)[3], x[labels == 3].sum(0), rtol=1e-4, atol=1e-3)

    # Streamed from shards: the same passes on 4 devices as on 1 (given the same start).
    import pathlib, tempfile
    from jaxdisco.clustering import features, streamed_kmeans as sk
    dump = features.dump_arrays(np.split(x, [1000, 2500, 4000]), pathlib.Path(tempfile.mkdtemp()),
                                utterances_per_shard=1)
    frames = sk.StreamedFrames.from_dump(dump)
    config = sk.StreamedKMeans(k=20, max_passes=3, tol=0.0, chunk_frames=512)
    a = sk.fit_streamed_kmeans(frames, config, mesh=four, init_centroids=centres)
    b = sk.fit_streamed_kmeans(frames, config, mesh=one, init_centroids=centres)
    np.testing.assert_allclose(a.centroids, b.centroids, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(a.pass_inertias, b.pass_inertias, rtol=1e-5)
    acc = jax.jit(functools.partial(sk._accumulate, precision=jax.lax.Precision.HIGHEST))
    sharded = jax.sharding.NamedSharding(four, jax.sharding.PartitionSpec("data"))
    chunk = jax.device_put(x[:512], sharded)
    w = jax.device_put(np.ones(512, np.float32), sharded)
    hlo = acc.lower(sk._pass_start(20, 16), chunk, w, centres).compile().as_text()
    assert "all-reduce" in hlo, "expected the streamed pass to all-reduce per-shard sums"
    print("OK")
""")


def test_four_devices_match_one_device():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
  result = subprocess.run(
      [sys.executable, "-c", _SCRIPT],
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
  )
  print(result.stdout)
  assert result.returncode == 0, result.stderr[-4000:]
  assert result.stdout.strip().endswith("OK")
