"""Frame labels as fairseq `.km` files, the HuBERT reference's target format.

`{split}.km`: one line per utterance, in manifest order, space-separated cluster ids (one per
frame). `dict.km.txt`: lines `i 1` for i = 0..K-1 (fairseq's dictionary format; the count
column is a dummy). The reference writes them with `dump_km_label.py` plus a shell loop.

`.km` files carry no utterance ids, so pairing them with anything else relies on manifest
order. `write_km(..., ids=...)` also writes a sidecar `{path}.ids` (one id per line): fairseq
ignores it, and `jaxdisco eval-units` uses it when no `--manifest` is given.
"""

from __future__ import annotations

import os
from typing import Callable, Iterable, Optional, Sequence, Union

from etils import epath
import numpy as np

from jaxdisco.clustering import kmeans
from jaxdisco.data import audio
from jaxdisco.data import labels as data_labels
from jaxdisco.data import manifest as manifest_lib

PathLike = Union[str, os.PathLike, epath.Path]
DICT_NAME = "dict.km.txt"


def assign_utterances(
    features: Sequence[np.ndarray], centroids: np.ndarray, *, chunk_size: int = 8192
) -> list[np.ndarray]:
  """Nearest-centroid labels per utterance.

  Frames of all utterances are labelled together (one device pass in fixed-size blocks), then
  split back.

  Args:
    features: per utterance `[frames_i, dim]`.
    centroids: `[k, dim]`.
    chunk_size: frames per distance computation.

  Returns:
    per utterance int32 `[frames_i]`.
  """
  lengths = [f.shape[0] for f in features]
  if not lengths:
    return []
  stacked = np.concatenate([np.asarray(f, np.float32) for f in features])
  labels, _ = kmeans.assign(stacked, centroids, chunk_size)
  return np.split(labels, np.cumsum(lengths)[:-1])


def ids_path(km_path: PathLike) -> epath.Path:
  """The sidecar id file of a `.km` file: `{km_path}.ids`."""
  return epath.Path(f"{km_path}.ids")


def write_km(
    path: PathLike, labels: Iterable[np.ndarray], ids: Optional[Sequence[str]] = None
) -> None:
  """Writes one line of space-separated ints per utterance (and `{path}.ids` if ids given)."""
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  lines = [" ".join(map(str, np.asarray(lab).tolist())) for lab in labels]
  if ids is not None and len(ids) != len(lines):
    raise ValueError(f"{len(ids)} ids for {len(lines)} label lines")
  path.write_text("".join(line + "\n" for line in lines))
  if ids is not None:
    ids_path(path).write_text("".join(f"{i}\n" for i in ids))


def read_km(path: PathLike) -> list[np.ndarray]:
  """Reads a `.km` file -> per utterance int32 `[frames]` (one reader: `data.labels`)."""
  return data_labels.read_label_file(path)


def read_ids(path: PathLike) -> list[str]:
  """Reads a `.ids` sidecar (one utterance id per line)."""
  return [line.strip() for line in epath.Path(path).read_text().splitlines() if line.strip()]


def write_dict(directory: PathLike, k: int) -> epath.Path:
  """Writes `{directory}/dict.km.txt` with lines `i 1`, i = 0..k-1; returns its path."""
  path = epath.Path(directory) / DICT_NAME
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(f"{i} 1\n" for i in range(k)))
  return path


def read_dict(path: PathLike) -> int:
  """Checks a `dict.km.txt` is exactly `0 1`, `1 1`, ... and returns K.

  A dictionary with gaps or another order would silently map labels to other symbols (or to
  UNK) in fairseq, so anything else is an error.
  """
  symbols = data_labels.read_dictionary(path)
  for i, symbol in enumerate(symbols):
    if symbol != str(i):
      raise ValueError(f"{path}:{i + 1}: expected '{i} <count>', found symbol {symbol!r}")
  return len(symbols)


def label_manifest(
    manifest: Union[PathLike, manifest_lib.Manifest],
    centroids: np.ndarray,
    featurize: Callable[[np.ndarray], np.ndarray],
    km_path: PathLike,
    *,
    sample_rate: int = 16000,
) -> list[np.ndarray]:
  """Reads every utterance of a manifest, featurizes, labels, and writes `.km` (+ `.ids`).

  Also writes `dict.km.txt` next to `km_path`.

  Args:
    manifest: a manifest or its path.
    centroids: `[k, dim]`.
    featurize: waveform `[samples]` → features `[frames, dim]` (e.g. `mfcc_features`).
    km_path: output `.km` path.
    sample_rate: rate the audio must have.

  Returns:
    the labels, per utterance in manifest order.
  """
  if not isinstance(manifest, manifest_lib.Manifest):
    manifest = manifest_lib.read_manifest(manifest)
  features = [
      featurize(audio.read_audio(manifest.audio_path(i), sample_rate=sample_rate))
      for i in range(len(manifest))
  ]
  labels = assign_utterances(features, centroids)
  ids = [manifest.utterance_id(i) for i in range(len(manifest))]
  write_km(km_path, labels, ids)
  write_dict(epath.Path(km_path).parent, np.asarray(centroids).shape[0])
  return labels
