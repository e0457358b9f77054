"""Quality of discrete units against frame-level phone labels (the HuBERT paper's metrics).

From the joint distribution p(phone, unit) over all frames:

- phone purity   = sum_u max_phone p(phone, unit) = E_unit[max_phone p(phone | unit)]
- cluster purity = sum_phone max_u p(phone, unit) = E_phone[max_unit p(unit | phone)]
- PNMI           = I(phone; unit) / H(phone), natural logs (the ratio does not depend on the base)

These are the definitions of fairseq's `examples/hubert/measure_teacher_quality.py` ("ref pur",
"hyp pur", "MI/H(ref)"), except that entropies here are exact (the reference adds 1e-8 inside
its logs, a bias below 1e-6 in PNMI).

Frame labels. The reference reads phone labels precomputed at 100 Hz and repeats 50 Hz units
(`--upsample 2`). Here phone labels are computed at the units' own rate from time alignments:
frame i of a model with a `window`-second receptive field and hop 1/frame_rate covers
[i / rate, i / rate + window), so its centre is `i / frame_rate + window / 2`, and it gets the
phone whose segment [start, end) contains the centre. `window` is 0.025 s both for 100 Hz MFCC
(400-sample window) and for 50 Hz wav2vec 2.0 / HuBERT frames (400-sample receptive field, hop
320), so the centres are `0.01 i + 0.0125` and `0.02 i + 0.0125` s. The number of frames of an
utterance of d seconds is then `floor((d - window) * frame_rate) + 1` (Kaldi snip_edges /
conv "valid" padding); unit sequences may differ from it by `max_frame_diff` frames (default 1,
rounding of durations), are then cut to the shorter length as the reference does, and a larger
difference is an error: it almost always means the wrong frame rate or the wrong file order.
"""

from __future__ import annotations

import json
import math
import os
from typing import Mapping, Optional, Sequence, Union

from etils import epath
import numpy as np

from jaxdisco.errors import MissingFileError, UserError

PathLike = Union[str, os.PathLike, epath.Path]
Segments = Sequence[tuple[str, float, float]]
DEFAULT_WINDOW = 0.025


class AlignmentError(UserError, ValueError):
  """Units and alignments do not match (missing ids, lengths off by more than allowed)."""


def read_alignments(path: PathLike) -> dict[str, list[tuple[str, float, float]]]:
  """Reads JSONL `{"id": ..., "phones": [[phone, start_s, end_s], ...]}` → ordered dict."""
  path = epath.Path(path)
  if not path.exists():
    raise MissingFileError(f"{path}: alignment file not found")
  out: dict[str, list[tuple[str, float, float]]] = {}
  for line_number, line in enumerate(path.read_text().splitlines(), start=1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
      segments = [(str(p), float(s), float(e)) for p, s, e in record["phones"]]
      utt = str(record["id"])
    except (ValueError, KeyError, TypeError) as e:
      raise AlignmentError(
          f"{path}:{line_number}: expected " '{"id": ..., "phones": [[phone, start, end], ...]}'
      ) from e
    if not segments:
      raise AlignmentError(f"{path}:{line_number}: utterance {utt!r} has no phone segments")
    out[utt] = segments
  return out


def expected_num_frames(duration: float, frame_rate: float, window: float = DEFAULT_WINDOW) -> int:
  """Frames whose whole window fits in `duration` seconds: `floor((d - window) rate) + 1`."""
  if duration < window:
    return 0
  return int(math.floor((duration - window) * frame_rate + 1e-6)) + 1


def frame_phones(
    segments: Segments, num_frames: int, frame_rate: float, window: float = DEFAULT_WINDOW
) -> np.ndarray:
  """Phone of each frame, by the phone containing the frame centre (see module doc).

  Args:
    segments: contiguous `(phone, start_s, end_s)` in time order.
    num_frames: frames to label; centres past the last segment get the last phone.
    frame_rate: frames per second.
    window: seconds covered by one frame.

  Returns:
    object array `[num_frames]` of phone strings.
  """
  ends = np.asarray([e for _, _, e in segments], np.float64)
  centres = np.arange(num_frames) / frame_rate + window / 2
  index = np.minimum(np.searchsorted(ends, centres, side="right"), len(segments) - 1)
  return np.asarray([p for p, _, _ in segments], dtype=object)[index]


def pair_frames(
    alignments: Mapping[str, Segments],
    units: Sequence[np.ndarray],
    ids: Sequence[str],
    *,
    frame_rate: float,
    window: float = DEFAULT_WINDOW,
    max_frame_diff: int = 1,
) -> tuple[np.ndarray, np.ndarray, dict]:
  """Per-frame (phone, unit) pairs of all utterances, concatenated.

  Args:
    alignments: id → segments.
    units: per utterance int `[frames]`, in the order of `ids`.
    ids: utterance ids of `units`.
    frame_rate: the units' frame rate in Hz.
    window: seconds covered by one frame.
    max_frame_diff: allowed |unit frames - expected frames| per utterance.

  Returns:
    (phones `[total]` object, units `[total]` int, stats dict with `utterances`, `frames`,
    `frame_diff` = sum of |length differences|).

  Raises:
    AlignmentError: count mismatch, ids without alignment, or a length differing by more
      than `max_frame_diff` (listing the first few).
  """
  if len(units) != len(ids):
    raise AlignmentError(
        f"{len(units)} unit sequences but {len(ids)} utterance ids: the "
        ".km file and the manifest / .ids file do not describe the same "
        "utterances"
    )
  missing = [i for i in ids if i not in alignments]
  if missing:
    raise AlignmentError(f"{len(missing)} utterance(s) have no alignment, e.g. " f"{missing[:5]}")
  phones_out, units_out, problems, frame_diff = [], [], [], 0
  for utt, seq in zip(ids, units):
    segments = alignments[utt]
    expected = expected_num_frames(segments[-1][2], frame_rate, window)
    diff = len(seq) - expected
    if abs(diff) > max_frame_diff:
      problems.append(
          f"{utt}: {len(seq)} unit frames, alignment of {segments[-1][2]:.3f} s "
          f"at {frame_rate:g} Hz gives {expected}"
      )
      continue
    frame_diff += abs(diff)
    n = min(len(seq), expected)
    phones_out.append(frame_phones(segments, n, frame_rate, window))
    units_out.append(np.asarray(seq[:n]))
  if problems:
    raise AlignmentError(
        f"{len(problems)} utterance(s) differ by more than {max_frame_diff} frame(s) (wrong "
        "--frame-rate, or units not in manifest order?):\n  " + "\n  ".join(problems[:10])
    )
  phones = np.concatenate(phones_out) if phones_out else np.zeros(0, object)
  unit_frames = np.concatenate(units_out) if units_out else np.zeros(0, np.int64)
  return (
      phones,
      unit_frames,
      {"utterances": len(ids), "frames": int(len(phones)), "frame_diff": frame_diff},
  )


def joint_counts(phones, units) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Co-occurrence counts of equal-length frame sequences.

  Returns:
    (int64 counts `[num_phones, num_units]`, phone labels `[num_phones]`, unit labels
    `[num_units]`), labels sorted; only labels that occur are listed.
  """
  phones, units = np.asarray(phones), np.asarray(units)
  if phones.shape != units.shape or phones.ndim != 1:
    raise ValueError(f"phones {phones.shape} and units {units.shape} must be equal-length 1-D")
  phone_labels, phone_index = np.unique(phones, return_inverse=True)
  unit_labels, unit_index = np.unique(units, return_inverse=True)
  counts = np.zeros((len(phone_labels), len(unit_labels)), np.int64)
  np.add.at(counts, (phone_index, unit_index), 1)
  return counts, phone_labels, unit_labels


def _entropy(p: np.ndarray) -> float:
  p = p[p > 0]
  return float(-(p * np.log(p)).sum())


def quality_from_counts(counts: np.ndarray) -> dict[str, float]:
  """Phone purity, cluster purity, PNMI and friends from joint counts `[phones, units]`."""
  counts = np.asarray(counts, np.float64)
  total = counts.sum()
  if total <= 0:
    raise AlignmentError("no frames to evaluate")
  p_xy = counts / total
  p_phone, p_unit = p_xy.sum(axis=1), p_xy.sum(axis=0)
  nz = p_xy > 0
  mutual_info = float((p_xy[nz] * np.log(p_xy[nz] / np.outer(p_phone, p_unit)[nz])).sum())
  h_phone, h_unit = _entropy(p_phone), _entropy(p_unit)
  return {
      "pnmi": mutual_info / h_phone if h_phone > 0 else 0.0,
      "phone_purity": float(p_xy.max(axis=0).sum()),
      "cluster_purity": float(p_xy.max(axis=1).sum()),
      "mutual_info": mutual_info,
      "phone_entropy": h_phone,
      "unit_entropy": h_unit,
      "num_frames": int(total),
      "num_phones": int((p_phone > 0).sum()),
      "num_units": int((p_unit > 0).sum()),
  }


def unit_quality(phones, units) -> dict[str, float]:
  """HuBERT unit-quality metrics of frame-aligned `phones` and `units` (1-D, equal length).

  Returns:
    dict with `pnmi`, `phone_purity`, `cluster_purity`, `mutual_info` and the entropies (nats),
    `num_frames`, `num_phones`, `num_units` (distinct units seen).
  """
  counts, _, _ = joint_counts(phones, units)
  return quality_from_counts(counts)


def read_km_with_ids(
    units_path: PathLike, manifest_path: Optional[PathLike] = None
) -> tuple[list[np.ndarray], list[str]]:
  """A `.km` file's unit sequences and their utterance ids: from `manifest_path` (the lines
  follow manifest order, as fairseq writes them) or, without it, the sidecar `{units_path}.ids`."""
  from jaxdisco.clustering import labels as labels_lib  # pylint: disable=g-import-not-at-top
  from jaxdisco.data import manifest as manifest_lib  # pylint: disable=g-import-not-at-top

  units = labels_lib.read_km(units_path)
  if manifest_path is not None:
    manifest = manifest_lib.read_manifest(manifest_path)
    ids = [manifest.utterance_id(i) for i in range(len(manifest))]
    source = str(manifest_path)
  else:
    sidecar = labels_lib.ids_path(units_path)
    if not sidecar.exists():
      raise AlignmentError(
          f"{units_path}: no utterance ids: pass --manifest (the .km lines "
          f"follow manifest order) or provide {sidecar}"
      )
    ids, source = labels_lib.read_ids(sidecar), str(sidecar)
  if len(ids) != len(units):
    raise AlignmentError(
        f"{units_path} has {len(units)} lines but {source} lists " f"{len(ids)} utterances"
    )
  return units, ids


def evaluate_km_file(
    units_path: PathLike,
    alignments_path: PathLike,
    *,
    manifest_path: Optional[PathLike] = None,
    frame_rate: float = 50.0,
    window: float = DEFAULT_WINDOW,
    max_frame_diff: int = 1,
) -> tuple[dict, np.ndarray, np.ndarray]:
  """`unit_quality` of a `.km` file against a JSONL alignment file.

  Utterance ids of the `.km` lines come from `manifest_path` (lines are in manifest order, as
  fairseq writes them) or, without it, from the sidecar `{units_path}.ids`.

  Returns:
    (metrics dict incl. `utterances` and `frame_diff`, phones `[frames]`, units `[frames]`).
  """
  units, ids = read_km_with_ids(units_path, manifest_path)
  phones, unit_frames, stats = pair_frames(
      read_alignments(alignments_path),
      units,
      ids,
      frame_rate=frame_rate,
      window=window,
      max_frame_diff=max_frame_diff,
  )
  return {**unit_quality(phones, unit_frames), **stats}, phones, unit_frames


def plot_cooccurrence(phones, units, path: PathLike, *, title: Optional[str] = None) -> None:
  """Saves a PNG of p(phone | unit): phones by frequency (top to bottom), units grouped by
  their most likely phone (left to right, most confident first within a phone)."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  counts, phone_labels, unit_labels = joint_counts(phones, units)
  phone_order = np.argsort(-counts.sum(axis=1), kind="stable")
  counts, phone_labels = counts[phone_order], phone_labels[phone_order]
  given_unit = counts / counts.sum(axis=0, keepdims=True)  # p(phone | unit)
  best = given_unit.argmax(axis=0)
  unit_order = np.lexsort((-given_unit.max(axis=0), best))
  matrix, unit_labels = given_unit[:, unit_order], unit_labels[unit_order]

  num_phones, num_units = matrix.shape
  fig = Figure(figsize=(min(4 + 0.12 * num_units, 40), min(2 + 0.16 * num_phones, 30)))
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  image = ax.imshow(
      matrix, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0.0, vmax=1.0
  )
  ax.set_yticks(range(num_phones), [str(p) for p in phone_labels], fontsize=6)
  if num_units <= 120:
    ax.set_xticks(range(num_units), [str(u) for u in unit_labels], fontsize=5, rotation=90)
  ax.set_xlabel("unit (ordered by most likely phone)")
  ax.set_ylabel("phone (by frequency)")
  ax.set_title(title or "p(phone | unit)")
  fig.colorbar(image, ax=ax, fraction=0.02)
  fig.tight_layout()
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open("wb") as f:
    fig.savefig(f, format="png", dpi=120)
