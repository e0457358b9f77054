"""jaxdisco.clustering.streamed_kmeans: k-means from on-disk shards, a chunk at a time.

Multi-device and multi-host fits are checked in test_kmeans_sharded.py and
test_kmeans_multihost.py beside the in-memory ones.
"""

import json
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

from jaxdisco.clustering import features as features_lib
from jaxdisco.clustering import kmeans as km
from jaxdisco.clustering import streamed_kmeans as sk
from jaxdisco.errors import ConfigError, MissingFileError


def _blobs(n, dim=16, num_blobs=60, seed=0):
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(num_blobs, dim)) * 3
  return (centres[rng.integers(0, num_blobs, n)] + rng.normal(size=(n, dim))).astype(np.float32)


def _dump(tmp_path, x, lengths, per_shard=3):
  bounds = np.cumsum(lengths)[:-1]
  return features_lib.dump_arrays(np.split(x, bounds), tmp_path / "dump", utterances_per_shard=per_shard)


def test_chunks_and_sample_cover_every_frame_once(tmp_path):
  x = _blobs(1000)
  lengths = np.random.default_rng(1).integers(1, 40, 40)
  lengths[-1] = 1000 - lengths[:-1].sum()
  assert lengths[-1] > 0
  frames = sk.StreamedFrames.from_dump(_dump(tmp_path, x, lengths))
  assert frames.num_frames == 1000 and frames.dim == 16 and len(frames.paths) == 14
  chunks = list(frames.chunks(37))
  assert all(len(c) == 37 for c in chunks[:-1]) and 0 < len(chunks[-1]) <= 37
  np.testing.assert_array_equal(np.concatenate(chunks), x)
  np.testing.assert_array_equal(frames.sample(5000, seed=0), x)  # All of them, in order.
  picked = frames.sample(300, seed=3)
  rows = {r.tobytes() for r in x}
  assert len(picked) == 300 and len({r.tobytes() for r in picked}) == 300
  assert all(r.tobytes() in rows for r in picked)


def test_passes_equal_in_memory_lloyd_and_inertias_are_the_passes_starts(tmp_path):
  x = _blobs(3000)
  frames = sk.StreamedFrames.from_dump(_dump(tmp_path, x, [100] * 30, per_shard=7))
  start = x[np.random.default_rng(2).choice(3000, 20, replace=False)]
  seen = []
  streamed = sk.fit_streamed_kmeans(
      frames,
      sk.StreamedKMeans(k=20, max_passes=4, tol=0.0, chunk_frames=256),
      init_centroids=start,
      on_pass=lambda i, c: seen.append((i, c.copy())),
  )
  lloyd = km.fit_kmeans(x, km.KMeans(k=20, batch_size=None, max_iter=4), init_centroids=start)
  assert streamed.passes == lloyd.n_steps == 4
  np.testing.assert_allclose(streamed.centroids, lloyd.centroids, rtol=1e-5, atol=1e-4)
  assert [i for i, _ in seen] == [0, 1, 2, 3, 4]
  for (_, centres), inertia in zip(seen, streamed.pass_inertias):
    np.testing.assert_allclose(inertia, km.assign(x, centres)[1].astype(np.float64).sum(), rtol=1e-5)
  assert all(a >= b for a, b in zip(streamed.pass_inertias, streamed.pass_inertias[1:]))


def test_full_fit_quality_and_early_stop(tmp_path):
  x = _blobs(6000, num_blobs=200)
  frames = sk.StreamedFrames.from_dump(_dump(tmp_path, x, [200] * 30))
  result = sk.fit_streamed_kmeans(
      frames, sk.StreamedKMeans(k=40, max_passes=30, tol=1e-4, chunk_frames=1024, init_size=2000)
  )
  assert result.init_frames == 2000 and result.num_frames == 6000
  assert result.passes < 30  # Stopped on tol.
  reference = km.fit_kmeans(x, km.KMeans(k=40, batch_size=None, n_init=5, max_iter=100, seed=0))
  ours = km.assign(x, result.centroids)[1].astype(np.float64).sum()
  print(f"streamed {ours:.1f} vs in-memory Lloyd (5 inits) {reference.inertia:.1f}")
  assert ours <= 1.01 * reference.inertia


def test_host_memory_is_one_shard_not_the_corpus(tmp_path):
  x = _blobs(48_000, dim=64)  # 12 MiB of frames in 24 shards of 0.5 MiB.
  frames = sk.StreamedFrames.from_dump(_dump(tmp_path, x, [500] * 96, per_shard=4))
  del x
  config = sk.StreamedKMeans(k=16, max_passes=2, tol=0.0, chunk_frames=1000, init_size=2000)
  tracemalloc.start()
  sk.fit_streamed_kmeans(frames, config)
  peak = tracemalloc.get_traced_memory()[1]
  tracemalloc.stop()
  print(f"peak traced host memory {peak / 2**20:.2f} MiB for 11.7 MiB of frames")
  assert peak < 6 * 2**20  # Half the frames: holding them all would fail.


def test_bad_input_is_named(tmp_path):
  with pytest.raises(MissingFileError, match="meta.json"):
    sk.StreamedFrames.from_dump(tmp_path / "nothing")
  x = _blobs(100)
  dump = _dump(tmp_path, x, [10] * 10)
  frames = sk.StreamedFrames.from_dump(dump)
  with pytest.raises(ValueError, match="at least k=200 frames"):
    sk.fit_streamed_kmeans(frames, sk.StreamedKMeans(k=200))
  with pytest.raises(ConfigError, match="max_passes"):
    sk.fit_streamed_kmeans(frames, sk.StreamedKMeans(k=5, max_passes=0))
  with pytest.raises(ValueError, match=r"init_centroids must be \[5, 16\]"):
    sk.fit_streamed_kmeans(frames, sk.StreamedKMeans(k=5), init_centroids=np.zeros((5, 3)))
  # A shard of another dimension, and a shard that is not a dump shard.
  other = tmp_path / "other.npy"
  np.save(other, np.zeros((10, 8), np.float32))
  mixed = sk.StreamedFrames.from_paths([frames.paths[0], other])
  with pytest.raises(ValueError, match="other.npy: features have dim 8"):
    list(mixed.chunks(4))
  broken = dump / frames.paths[1].name
  broken.write_bytes(b"not a shard")
  with pytest.raises(ValueError, match=f"{broken.name}: not a"):
    sk.StreamedFrames.from_dump(dump)
  meta = json.loads((dump / "meta.json").read_text())
  assert meta["num_shards"] == 4


def test_fit_kmeans_command_writes_centroids_export_tokenizer_reads(tmp_path):
  x = _blobs(2000)
  dump = features_lib.dump_arrays(
      np.split(x, 20), tmp_path / "dump", utterances_per_shard=6, meta={"layer": 3}
  )
  out = tmp_path / "km" / "centroids"
  proc = subprocess.run(
      [sys.executable, "-m", "jaxdisco.cli", "fit-kmeans", "--features", str(dump), "--k", "12",
       "--out", str(out), "--passes", "5", "--chunk-frames", "300"],
      capture_output=True, text=True, timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "K=12 on 2000 frames" in proc.stdout
  centroids, meta = km.load_centroids(out)
  assert centroids.shape == (12, 16) and meta["layer"] == 3 and meta["fit_frames"] == 2000
  assert meta["layer_output"] == "hidden_states[layer]" and 1 <= meta["passes"] <= 5
  bad = subprocess.run(
      [sys.executable, "-m", "jaxdisco.cli", "fit-kmeans", "--features", str(tmp_path / "no"),
       "--k", "12", "--out", str(out)],
      capture_output=True, text=True, timeout=300,
  )
  assert bad.returncode == 2 and "meta.json: not found" in bad.stderr
