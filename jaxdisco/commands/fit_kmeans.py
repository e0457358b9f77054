"""`jaxdisco fit-kmeans --features DUMP_DIR --k 500 --out PREFIX [--passes 20] [--tol 1e-3]`:
k-means of a feature dump (the `features_it*/train` directory the HuBERT loop writes, or any
`features.dump_arrays` output), streamed from its shards so that no more than one shard is in
host memory (`jaxdisco.clustering.streamed_kmeans`). Writes PREFIX.npy and PREFIX.json
(`export-tokenizer --centroids PREFIX` reads them), with the dump's layer and convention.

Multi-host: run it on every process with the usual JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
JAX_PROCESS_ID environment; each process streams shards process_index::process_count and
process 0 writes the files.
"""

import json

from absl import app, flags

_FEATURES = flags.DEFINE_string("features", None, "Feature dump directory (with meta.json).")
_K = flags.DEFINE_integer("k", None, "Number of clusters.")
_OUT = flags.DEFINE_string("out", None, "Output prefix (PREFIX.npy, PREFIX.json).")
_PASSES = flags.DEFINE_integer("passes", 20, "Streamed Lloyd passes at most.")
_TOL = flags.DEFINE_float("tol", 1e-3, "Stop when a pass lowers the inertia by less than this.")
_INIT_SIZE = flags.DEFINE_integer("init-size", None, "Frames sampled for k-means++ (64 x K).")
_CHUNK = flags.DEFINE_integer("chunk-frames", 65536, "Frames per device chunk and process.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the sample and of k-means++.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not (_FEATURES.value and _K.value and _OUT.value):
    raise app.UsageError("fit-kmeans needs --features, --k and --out")
  from etils import epath  # pylint: disable=g-import-not-at-top

  from jaxdisco.parallel.distributed import initialize_from_env  # pylint: disable=g-import-not-at-top

  initialize_from_env()
  import jax  # pylint: disable=g-import-not-at-top

  from jaxdisco.clustering import kmeans  # pylint: disable=g-import-not-at-top
  from jaxdisco.clustering import streamed_kmeans  # pylint: disable=g-import-not-at-top

  frames = streamed_kmeans.StreamedFrames.from_dump(_FEATURES.value)
  config = streamed_kmeans.StreamedKMeans(
      k=_K.value,
      max_passes=_PASSES.value,
      tol=_TOL.value,
      init_size=_INIT_SIZE.value,
      chunk_frames=_CHUNK.value,
      seed=_SEED.value,
  )
  result = streamed_kmeans.fit_streamed_kmeans(frames, config, progress=print)
  dump_meta = json.loads((epath.Path(_FEATURES.value) / "meta.json").read_text())
  meta = {
      key: dump_meta[key]
      for key in ("layer", "hidden_states_convention", "source")
      if key in dump_meta
  }
  meta |= {
      "feature_source": dump_meta.get("feature_source", dump_meta.get("source")),
      "layer_output": "hidden_states[layer]" if dump_meta.get("layer") is not None else None,
      "created_by": "jaxdisco fit-kmeans (streamed)",
      "fit_frames": result.num_frames,
      "passes": result.passes,
      "pass_inertias": list(result.pass_inertias),
  }
  per_frame = result.pass_inertias[-1] / result.num_frames
  if jax.process_index() == 0:
    kmeans.save_centroids(_OUT.value, result.centroids, meta)
  print(
      f"K={_K.value} on {result.num_frames} frames in {result.passes} passes; inertia per "
      f"frame <= {per_frame:.4f}; wrote {_OUT.value}.npy / .json"
  )
