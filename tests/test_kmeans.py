"""jaxdisco.clustering.kmeans: quality vs scikit-learn, determinism, kernels, files."""

import json

import numpy as np
import pytest

from jaxdisco.clustering import kmeans as km


def _blobs(n, dim, num_blobs, seed, spread=1.0):
  """Overlapping Gaussian blobs of varied width: many more blobs than clusters, so k-means
  solutions differ little between seeds (a fair, low-variance comparison)."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(num_blobs, dim)) * spread
  scales = rng.uniform(0.5, 1.5, size=num_blobs)
  which = rng.integers(0, num_blobs, n)
  return (centres[which] + rng.normal(size=(n, dim)) * scales[which, None]).astype(np.float32)


def test_inertia_within_one_percent_of_sklearn_minibatch():
  sklearn_cluster = pytest.importorskip("sklearn.cluster")
  x = _blobs(20_000, 32, 400, seed=0)
  # The reference's settings (k-means++, batch 10000, tol 0, max_no_improvement 100,
  # reassignment_ratio 0) with n_init and max_iter shrunk identically on both sides.
  ours = km.fit_kmeans(x, km.KMeans(k=50, batch_size=10_000, n_init=3, max_iter=20, seed=0))
  theirs = sklearn_cluster.MiniBatchKMeans(
      n_clusters=50,
      init="k-means++",
      batch_size=10_000,
      n_init=3,
      max_iter=20,
      tol=0.0,
      max_no_improvement=100,
      reassignment_ratio=0.0,
      compute_labels=False,
      random_state=0,
  ).fit(x)
  sklearn_inertia = -theirs.score(x)
  print(
      f"inertia ours {ours.inertia:.1f} sklearn {sklearn_inertia:.1f} "
      f"ratio {ours.inertia / sklearn_inertia:.4f}"
  )
  assert ours.inertia <= 1.01 * sklearn_inertia
  assert ours.n_steps == theirs.n_steps_ == 40  # 20 * 20000 // 10000, no early stop
  _, d = km.assign(x, ours.centroids)
  np.testing.assert_allclose(d.sum(), ours.inertia, rtol=1e-4)


def test_fixed_seed_gives_identical_centroids_and_lloyd_converges():
  x = _blobs(3_000, 8, 12, seed=1, spread=4.0)
  config = km.KMeans(k=10, batch_size=1_000, n_init=2, max_iter=10, seed=3)
  a, b = km.fit_kmeans(x, config), km.fit_kmeans(x, config)
  np.testing.assert_array_equal(a.centroids, b.centroids)
  c = km.fit_kmeans(x, km.KMeans(k=10, batch_size=1_000, n_init=2, max_iter=10, seed=4))
  assert not np.array_equal(a.centroids, c.centroids)

  lloyd = km.fit_kmeans(x, km.KMeans(k=10, batch_size=None, n_init=2, max_iter=100))
  assert lloyd.n_iter < 100  # stopped because nothing moved (tol=0)
  labels, _ = km.assign(x, lloyd.centroids)
  means = np.stack([x[labels == j].mean(0) for j in range(10)])
  np.testing.assert_allclose(lloyd.centroids, means, atol=1e-4)  # a Lloyd fixed point


def test_progress_lines_and_segmented_steps_equal_one_call(monkeypatch):
  """The mini-batch steps run in segments to report progress: the centroids equal those of
  one call over every step, and the lines give the rate and the ETA."""
  x = _blobs(3_000, 8, 12, seed=1, spread=4.0)
  config = km.KMeans(k=10, batch_size=500, n_init=2, max_iter=10, max_no_improvement=None)
  lines = []
  segmented = km.fit_kmeans(x, config, progress=lines.append)
  assert segmented.n_steps == 60
  assert lines[0].startswith("k-means init (k-means++) 2/2 (100%)") and "ETA" in lines[0]
  assert lines[-1].startswith("k-means mini-batch 60/60 steps (100%)"), lines
  assert "steps/s" in lines[-1] and "ETA 0m00s" in lines[-1]
  monkeypatch.setattr(km, "_PROGRESS_SEGMENTS", 1)
  np.testing.assert_array_equal(km.fit_kmeans(x, config).centroids, segmented.centroids)
  lloyd = []
  km.fit_kmeans(x, km.KMeans(k=10, batch_size=None, n_init=1, max_iter=100), progress=lloyd.append)
  assert lloyd[-1].startswith("k-means Lloyd ") and lloyd[-1].endswith("| converged"), lloyd


def test_assign_chunked_matches_brute_force():
  rng = np.random.default_rng(0)
  x, c = rng.normal(size=(1_037, 24)).astype(np.float32), rng.normal(size=(7, 24))
  labels, dists = km.assign(x, c, chunk_size=100, block_chunks=3)
  full = ((x[:, None, :] - c[None].astype(np.float32)) ** 2).sum(-1)
  np.testing.assert_array_equal(labels, full.argmin(1))
  np.testing.assert_allclose(dists, full.min(1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("batch_size", [None, 256])
def test_empty_clusters_are_reseeded_to_far_points(batch_size):
  rng = np.random.default_rng(0)
  x = np.concatenate([rng.normal(size=(500, 2)) * 0.3, rng.normal(size=(500, 2)) * 0.3 + 10])
  x = x.astype(np.float32)
  # Two centres on the data, two so far away that no frame ever picks them.
  start = np.asarray([[0, 0], [10, 10], [100, 100], [-100, 50]], np.float32)
  used = {}
  for reseed in (True, False):
    config = km.KMeans(k=4, batch_size=batch_size, max_iter=20, reseed_empty=reseed)
    result = km.fit_kmeans(x, config, init_centroids=start)
    used[reseed] = len(np.unique(km.assign(x, result.centroids)[0]))
  assert used == {True: 4, False: 2}


def test_save_load_and_sklearn_import(tmp_path):
  sklearn_cluster = pytest.importorskip("sklearn.cluster")
  joblib = pytest.importorskip("joblib")
  x = _blobs(2_000, 6, 5, seed=2, spread=5.0)
  model = sklearn_cluster.MiniBatchKMeans(n_clusters=5, n_init=1, random_state=0).fit(x)
  joblib.dump(model, tmp_path / "km.bin")
  centroids = km.import_sklearn_kmeans(tmp_path / "km.bin")
  np.testing.assert_array_equal(centroids, model.cluster_centers_.astype(np.float32))
  np.testing.assert_array_equal(km.assign(x, centroids)[0], model.predict(x))

  meta = {"feature_source": "mfcc", "layer": None, "layer_output": "mfcc_39", "inertia": 1.5}
  km.save_centroids(tmp_path / "out" / "mfcc_k5", centroids, meta)
  loaded, loaded_meta = km.load_centroids(tmp_path / "out" / "mfcc_k5")
  np.testing.assert_array_equal(loaded, centroids)
  assert loaded_meta["k"] == 5 and loaded_meta["dim"] == 6
  assert loaded_meta["created_by"] == "jaxdisco.clustering.kmeans"
  assert loaded_meta["layer_output"] == "mfcc_39" and loaded_meta["inertia"] == 1.5

  with pytest.raises(ValueError, match="k=7"):
    km.save_centroids(tmp_path / "bad", centroids, {"k": 7})
  (tmp_path / "out" / "mfcc_k5.json").write_text(json.dumps({**loaded_meta, "dim": 3}))
  with pytest.raises(ValueError, match="disagrees"):
    km.load_centroids(tmp_path / "out" / "mfcc_k5")
  joblib.dump({"not": "a model"}, tmp_path / "junk.bin")
  with pytest.raises(ValueError, match="cluster_centers_"):
    km.import_sklearn_kmeans(tmp_path / "junk.bin")


def test_rejects_bad_settings():
  x = np.zeros((10, 3), np.float32)
  with pytest.raises(ValueError, match="at least"):
    km.fit_kmeans(x, km.KMeans(k=20))
  with pytest.raises(ValueError, match="init"):
    km.fit_kmeans(x, km.KMeans(k=2, init="kmeans||"))
