"""Is one set of units better than another on the same utterances? A paired bootstrap.

PNMI of a few dozen utterances moves by a few thousandths with the choice of utterances, as
much as one HuBERT iteration changes it on a small corpus. `pnmi_gain` resamples utterances
with replacement, the same draw for both unit sets, and reports the spread of the difference
(Efron & Tibshirani's paired bootstrap), so a table can say whether a gain is more than that.
The two unit sets may have different frame rates (MFCC units at 100 Hz, layer units at 50 Hz):
each is paired with the phones at its own rate, utterance by utterance.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from jaxdisco.evaluation import units as units_lib

# utterance id -> (phones [frames], units [frames]) of one unit set.
UtteranceFrames = Mapping[str, tuple[np.ndarray, np.ndarray]]


def utterance_frames(
    alignments: Mapping, units: Sequence[np.ndarray], ids: Sequence[str], *, frame_rate: float
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """`pair_frames`, kept per utterance (its checks apply: same count, lengths within a frame)."""
  if len(units) != len(ids):
    raise units_lib.AlignmentError(f"{len(units)} unit sequences but {len(ids)} utterance ids")
  out = {}
  for utt, seq in zip(ids, units):
    phones, frames, _ = units_lib.pair_frames(alignments, [seq], [utt], frame_rate=frame_rate)
    out[utt] = (phones, frames)
  return out


def resample_weights(num_utterances: int, draws: int, seed: int) -> np.ndarray:
  """`[draws, num_utterances]` counts of each utterance in `draws` resamples with replacement
  (numpy `seed`): the one draw scheme of every paired bootstrap here, so equal seeds resample
  the same utterances for PNMI and for unit agreement."""
  rng = np.random.default_rng(seed)
  return np.stack(
      [
          np.bincount(rng.integers(0, num_utterances, num_utterances), minlength=num_utterances)
          for _ in range(draws)
      ]
  ).reshape(draws, num_utterances)


def _counts_per_utterance(frames: UtteranceFrames, ids: Sequence[str], phone_index) -> np.ndarray:
  """`[utterances, phones, units]` joint counts, units relabelled 0..n-1."""
  unit_labels = np.unique(np.concatenate([np.asarray(frames[u][1]) for u in ids]))
  counts = np.zeros((len(ids), len(phone_index), len(unit_labels)), np.int64)
  for i, utt in enumerate(ids):
    phones, units = frames[utt]
    p = np.asarray([phone_index[x] for x in phones], np.int64)
    np.add.at(counts[i], (p, np.searchsorted(unit_labels, units)), 1)
  return counts


def pnmi_gain(
    before: UtteranceFrames, after: UtteranceFrames, *, draws: int = 1000, seed: int = 0
) -> dict[str, float]:
  """PNMI(after) - PNMI(before) on the shared utterances, with its paired-bootstrap spread.

  Returns:
    {"gain": on all shared utterances, "std": standard deviation over `draws` resamples,
     "p_positive": share of resamples where `after` scores higher, "utterances": count}.
  """
  ids = sorted(set(before) & set(after))
  if len(ids) < 2:
    raise units_lib.AlignmentError(f"need at least 2 shared utterances to resample, got {len(ids)}")
  phone_labels = sorted({p for u in ids for side in (before, after) for p in side[u][0]})
  phone_index = {p: i for i, p in enumerate(phone_labels)}
  a = _counts_per_utterance(before, ids, phone_index)
  b = _counts_per_utterance(after, ids, phone_index)
  pnmi = lambda c: units_lib.quality_from_counts(c)["pnmi"]
  gains = np.asarray(
      [
          pnmi(np.tensordot(weights, b, 1)) - pnmi(np.tensordot(weights, a, 1))
          for weights in resample_weights(len(ids), draws, seed)
      ]
  )
  return {
      "gain": pnmi(b.sum(0)) - pnmi(a.sum(0)),
      "std": float(gains.std()),
      "p_positive": float((gains > 0).mean()),
      "utterances": len(ids),
  }


SPREAD_METRICS = ("pnmi", "phone_purity", "cluster_purity")


def quality_spread(
    frames: UtteranceFrames, *, draws: int = 1000, seed: int = 0
) -> dict[str, float]:
  """PNMI, phone and cluster purity of one unit set, each with its bootstrap spread over
  utterances (the same resampling as `pnmi_gain`): {metric: on all utterances,
  metric + "_std": standard deviation over `draws` resamples, "utterances": count} for each
  metric of `SPREAD_METRICS`."""
  ids = sorted(frames)
  if len(ids) < 2:
    raise units_lib.AlignmentError(f"need at least 2 utterances to resample, got {len(ids)}")
  phone_index = {p: i for i, p in enumerate(sorted({p for u in ids for p in frames[u][0]}))}
  counts = _counts_per_utterance(frames, ids, phone_index)
  resampled = [
      units_lib.quality_from_counts(np.tensordot(w, counts, 1))
      for w in resample_weights(len(ids), draws, seed)
  ]
  full = units_lib.quality_from_counts(counts.sum(0))
  out = {"utterances": len(ids)}
  for metric in SPREAD_METRICS:
    out[metric] = full[metric]
    out[metric + "_std"] = float(np.std([q[metric] for q in resampled]))
  return out
