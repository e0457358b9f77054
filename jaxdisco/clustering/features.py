"""Dumping one layer's features of a trained model for k-means (HuBERT iteration 2+); any
per-utterance features (e.g. MFCCs) with `dump_features`.

Output: `out_dir/features-XXXXX-of-NNNNN.npz` shards, each with the valid frames of its
utterances concatenated (`features` float32 [frames, dim]), per-utterance `lengths` and `ids`,
plus `meta.json` (layer, hidden_states convention, dim, source). A shard is written to a
temporary name and renamed, so a killed dump resumes by skipping the shards already there; each
process of a multi-host job writes the shards `process_index::process_count`. The dump prints
its progress (utterances, rate, ETA) at most every 10 s.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Optional, Union

import numpy as np
from etils import epath

from jaxdisco.data import audio
from jaxdisco.data import manifest as manifest_lib
from jaxdisco.errors import MissingFileError
from jaxdisco.models.hidden_states import (
    DEFAULT_HIDDEN_STATES_CONVENTION,
    check_hidden_states_convention,
)
from jaxdisco.progress import ProgressMeter

PathLike = Union[str, os.PathLike, epath.Path]
_BUCKET_SAMPLES = 8000  # Inputs are padded up to multiples of 0.5 s: a handful of programs.


def _shard_name(k: int, n: int) -> str:
  return f"features-{k:05d}-of-{n:05d}.npz"


def dump_layer_features(
    pretrained,
    manifest: Union[PathLike, manifest_lib.Manifest],
    layer: int,
    out_dir: PathLike,
    *,
    utterances_per_shard: int = 256,
    batch_size: int = 8,
    normalize: bool = False,
    process_index: int = 0,
    process_count: int = 1,
    hidden_states_convention: str = DEFAULT_HIDDEN_STATES_CONVENTION,
    progress=print,
) -> epath.Path:
  """Writes hidden_states[layer] (`Pretrained.extract_features` in `hidden_states_convention`,
  recorded in meta.json) of every utterance of `manifest`. Returns `out_dir`."""
  if not isinstance(manifest, manifest_lib.Manifest):
    manifest = manifest_lib.read_manifest(manifest)
  meta = {
      "layer": int(layer),
      "convention": "hidden_states[layer]: output of Transformer layer `layer` (1-based); 0 is "
      "the Transformer input",
      "hidden_states_convention": check_hidden_states_convention(hidden_states_convention),
      "dim": int(pretrained.config.embed_dim),
  }
  featurize = lambda indices: _featurize(
      pretrained, manifest, indices, layer, batch_size, normalize, hidden_states_convention
  )
  return dump_features(
      featurize,
      manifest,
      out_dir,
      meta,
      utterances_per_shard=utterances_per_shard,
      process_index=process_index,
      process_count=process_count,
      progress=progress,
  )


def dump_features(
    featurize: Callable[[list[int]], list[np.ndarray]],
    manifest: manifest_lib.Manifest,
    out_dir: PathLike,
    meta: dict,
    *,
    utterances_per_shard: int = 256,
    process_index: int = 0,
    process_count: int = 1,
    progress=print,
) -> epath.Path:
  """Writes `featurize(indices)` (per utterance `[frames, meta["dim"]]`) of every utterance of
  `manifest` as resumable shards (see the module doc) plus `meta.json`. Returns `out_dir`."""
  out = epath.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  num_shards = max(1, -(-len(manifest) // utterances_per_shard))
  meta = {**meta, "manifest": str(manifest.path), "num_shards": num_shards}
  (out / "meta.json").write_text(json.dumps(meta, indent=2))
  shard_indices = {
      k: range(k * utterances_per_shard, min((k + 1) * utterances_per_shard, len(manifest)))
      for k in range(process_index, num_shards, process_count)
  }
  todo = [k for k in shard_indices if not (out / _shard_name(k, num_shards)).exists()]
  meter = ProgressMeter(
      f"features ({out.name})",
      sum(len(indices) for indices in shard_indices.values()),
      unit="utterances",
      report=progress,
      initial=sum(len(shard_indices[k]) for k in shard_indices if k not in todo),
  )
  for k in todo:
    target = out / _shard_name(k, num_shards)
    indices = shard_indices[k]
    features = featurize(list(indices))
    tmp = out / (target.name + ".tmp")
    with tmp.open("wb") as f:
      np.savez(
          f,
          features=np.concatenate(features) if features else np.zeros((0, meta["dim"])),
          lengths=np.asarray([len(x) for x in features], np.int64),
          ids=np.asarray([manifest.utterance_id(i) for i in indices]),
      )
    tmp.rename(target)
    meter.advance(len(indices), note=f"shard {k + 1}/{num_shards} written")
  return out


def dump_arrays(
    arrays: list[np.ndarray],
    out_dir: PathLike,
    *,
    ids: Optional[list[str]] = None,
    utterances_per_shard: int = 256,
    meta: Optional[dict] = None,
) -> epath.Path:
  """Writes per-utterance `[frames, dim]` arrays computed elsewhere as a dump (same shards and
  meta.json as `dump_features`), e.g. to stream them into `streamed_kmeans`. Returns `out_dir`."""
  if not arrays:
    raise ValueError(f"{out_dir}: no arrays to dump")
  dims = {int(np.shape(a)[1]) if np.ndim(a) == 2 else -1 for a in arrays}
  if len(dims) != 1 or -1 in dims:
    raise ValueError(f"{out_dir}: expected [frames, dim] arrays of one dim, got dims {sorted(dims)}")
  ids = [f"utt{i:07d}" for i in range(len(arrays))] if ids is None else list(ids)
  listing = manifest_lib.Manifest(
      path=epath.Path(out_dir) / "arrays",
      root=epath.Path(out_dir),
      files=tuple(ids),
      num_samples=np.asarray([len(a) for a in arrays], np.int64),
  )
  return dump_features(
      lambda indices: [np.asarray(arrays[i], np.float32) for i in indices],
      listing,
      out_dir,
      {"source": "arrays", **(meta or {}), "dim": dims.pop()},
      utterances_per_shard=utterances_per_shard,
      progress=None,
  )


def _featurize(
    pretrained, manifest, indices, layer, batch_size, normalize, convention
) -> list[np.ndarray]:
  from jaxdisco.data.normalize import normalize_waveform

  # Sort by length so each padded batch wastes little; restore order at the end.
  order = sorted(indices, key=lambda i: int(manifest.num_samples[i]))
  result = {}
  for start in range(0, len(order), batch_size):
    chunk = order[start : start + batch_size]
    waves = [audio.read_audio(manifest.audio_path(i)) for i in chunk]
    if normalize:
      waves = [normalize_waveform(w) for w in waves]
    longest = max(len(w) for w in waves)
    width = -(-longest // _BUCKET_SAMPLES) * _BUCKET_SAMPLES
    batch = np.zeros((batch_size, width), np.float32)
    padding = np.ones((batch_size, width), bool)
    for row, w in enumerate(waves):
      batch[row, : len(w)] = w
      padding[row, : len(w)] = False
    out = pretrained.extract_features(
        batch, padding, output_layers=[layer], hidden_states_convention=convention
    )
    hidden = np.asarray(out["hidden_states"][0])
    valid = np.asarray(out["frame_valid"])
    for row, i in enumerate(chunk):
      result[i] = hidden[row][valid[row]].astype(np.float32)
  return [result[i] for i in indices]


def iter_feature_shards(out_dir: PathLike):
  """Yields each shard of a dump in order: (per-utterance `[frames, dim]` arrays, ids)."""
  out = epath.Path(out_dir)
  meta = json.loads((out / "meta.json").read_text())
  for k in range(meta["num_shards"]):
    path = out / _shard_name(k, meta["num_shards"])
    if not path.exists():
      raise MissingFileError(f"{path}: shard missing (the dump did not finish; run it again)")
    with path.open("rb") as f:
      data = np.load(f)
      bounds = np.cumsum(data["lengths"])[:-1]
      yield np.split(data["features"], bounds), [str(i) for i in data["ids"]]


def load_layer_features(out_dir: PathLike) -> tuple[list[np.ndarray], list[str]]:
  """All shards of a dump, in manifest order: (per-utterance [frames, dim] arrays, ids)."""
  features, ids = [], []
  for shard_features, shard_ids in iter_feature_shards(out_dir):
    features.extend(shard_features)
    ids.extend(shard_ids)
  return features, ids
