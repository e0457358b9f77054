"""Do units survive an overlapping speaker? Frame agreement of clean and mixed utterances.

WavLM's utterance mixing is meant to make representations of the primary speaker robust to
a second one. The test of that for units: tokenize an utterance, tokenize it again with
another speaker's utterance added at a given energy ratio, and count the frames whose unit did
not change. This module measures that agreement rate for any audio -> units function (an
exported `jaxdisco.tokenizer.Tokenizer`'s `encode` fits as is), with a bootstrap spread over
utterances and a paired comparison of two unit sets on the same mixtures.

Two mixing conditions, both deterministic given `seed`:
- full overlap (`overlap=1`): the interferer covers the whole clean utterance (cut to its
  length, or repeated from its start when shorter). At 0 dB neither speaker dominates, so no
  model can know whose units to keep; it measures how much the units move, not denoising.
- chunk overlap (`overlap=0.5`): the first half-utterance of the interferer is added over half
  of the clean one, at a seeded uniform position: the hardest case of what WavLM trains on
  (`jaxdisco.objectives.utterance_mixing`: a chunk of at most half the utterance, so the
  primary speaker stays the majority one). Agreement counts the overlapped frames only, the
  ones whose units the interferer can change directly.
In both, the gain is set from mean powers over the clean utterance's length: the clean one and
the interferer repeated/cut to that length (as training compares whole utterances, so a chunk
from a pause stays quiet), with clean : interferer = `energy_ratio_db`.

Picking interferers of another speaker from the demo corpus (`jaxdisco/assets/demo_corpus`):
the corpus' speakers are espeak voices, listed per utterance id in `meta.jsonl`::

    meta = {r["id"]: r for r in map(json.loads, open(corpus / "meta.jsonl"))}
    manifest = read_manifest(corpus / "valid.tsv")  # jaxdisco.data.manifest
    speakers = [meta[manifest.utterance_id(i)]["voice"] for i in range(len(manifest))]
    partner = different_speaker_partners(speakers, seed=0)
    waves = [read_audio(manifest.audio_path(i)) for i in range(len(manifest))]  # data.audio
    result = unit_agreement_under_mixing(tok.encode, waves, [waves[j] for j in partner])

With the same `seed`, two calls (say HuBERT and WavLM tokenizers) see the same mixtures, and
`agreement_gain(hubert_result, wavlm_result)` says whether the difference exceeds the spread.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

from jaxdisco.evaluation import bootstrap

# audio -> units: a list of float32 waveforms [samples] -> a list of int unit ids [frames];
# negative ids mark frames without a unit (padding), which are left out.
UnitsFn = Callable[[list[np.ndarray]], Sequence[np.ndarray]]


def mix_overlap(
    clean: np.ndarray,
    interferer: np.ndarray,
    energy_ratio_db: float,
    *,
    fraction: float = 1.0,
    start: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
  """clean `[samples]` + a `fraction` of its length of the interferer, from sample `start`.

  The interferer is first cut to `len(clean)` or repeated from its start to reach it; its first
  `round(fraction * len(clean))` samples are added at `start`, scaled so that the mean power of
  the clean utterance over that of the cut/repeated interferer is `energy_ratio_db`. A silent
  clean utterance or interferer leaves `clean` unchanged (no gain can reach the ratio).

  Returns:
    (mixture float32 `[samples]`, covered bool `[samples]`: where the interferer was added).
  """
  clean = np.asarray(clean, np.float32)
  interferer = np.asarray(interferer, np.float32)
  if clean.ndim != 1 or interferer.ndim != 1 or interferer.size == 0:
    raise ValueError(
        f"expected non-empty waveforms [samples], got clean {clean.shape}, interferer "
        f"{interferer.shape}"
    )
  if not 0 < fraction <= 1:
    raise ValueError(f"fraction: expected a share of the utterance in (0, 1], got {fraction}")
  length = int(round(fraction * clean.size))
  if not 0 <= start <= clean.size - length:
    raise ValueError(f"start {start}: a chunk of {length} samples must fit in {clean.size}")
  added = np.resize(interferer, clean.shape).astype(np.float64)  # np.resize repeats from 0.
  covered = np.zeros(clean.shape, bool)
  covered[start : start + length] = True
  clean_power = np.mean(np.square(clean, dtype=np.float64)) if clean.size else 0.0
  added_power = np.mean(np.square(added))
  if clean_power == 0 or added_power == 0:
    return clean.copy(), covered
  gain = np.sqrt(clean_power / (added_power * 10.0 ** (energy_ratio_db / 10.0)))
  mixed = clean.astype(np.float64)
  mixed[start : start + length] += gain * added[:length]
  return mixed.astype(np.float32), covered


def different_speaker_partners(speakers: Sequence[str], *, seed: int = 0) -> np.ndarray:
  """For each utterance, a uniformly drawn index of an utterance of another speaker.

  Args:
    speakers: speaker (or voice) of each utterance.
    seed: numpy seed; the same seed gives the same partners.

  Returns:
    int64 `[utterances]` partner indices.

  Raises:
    ValueError: an utterance has no utterance of another speaker to pair with.
  """
  speakers = np.asarray(list(speakers))
  rng = np.random.default_rng(seed)
  partners = np.empty(len(speakers), np.int64)
  for i, speaker in enumerate(speakers):
    others = np.flatnonzero(speakers != speaker)
    if others.size == 0:
      raise ValueError(f"utterance {i} (speaker {speaker!r}): no utterance of another speaker")
    partners[i] = others[rng.integers(others.size)]
  return partners


def _resampled_rates(agreeing, frames, draws: int, seed: int) -> np.ndarray:
  """Pooled agreement on `draws` resamples of utterances (`bootstrap.resample_weights`, so
  equal seeds resample equally)."""
  weights = bootstrap.resample_weights(len(frames), draws, seed)
  return (weights @ agreeing) / np.maximum(weights @ frames, 1)


def unit_agreement_under_mixing(
    units_fn: UnitsFn,
    clean_waveforms: Sequence[np.ndarray],
    interferers: Sequence[np.ndarray],
    energy_ratio_db: float = 0.0,
    *,
    overlap: float = 1.0,
    draws: int = 1000,
    seed: int = 0,
) -> dict:
  """Share of frames whose unit is the same with and without an overlapping interferer.

  Args:
    units_fn: list of waveforms -> list of unit ids `[frames]` (e.g. `Tokenizer.encode`);
      frames with a negative id in either version are not counted.
    clean_waveforms: float `[samples]` utterances.
    interferers: one waveform per clean utterance (another speaker's), mixed in by
      `mix_overlap`.
    energy_ratio_db: clean : interferer power ratio.
    overlap: share of each utterance the interferer covers; below 1 its position is drawn
      uniformly (numpy `seed`) and only frames whose centre it covers are counted.
    draws, seed: bootstrap resamples of utterances for the spread.

  Returns:
    {"agreement": agreeing frames / valid frames over all utterances,
     "std": its bootstrap standard deviation, "ci95": (2.5, 97.5) bootstrap percentiles,
     "per_utterance": agreement of each utterance (nan without valid frames),
     "agreeing_frames", "frames": per-utterance counts (what `agreement_gain` pairs),
     "utterances", "energy_ratio_db", "overlap"}.

  Raises:
    ValueError: counts of utterances and interferers differ, or `units_fn` returns a different
      number of frames for an utterance and its mixture.
  """
  clean = [np.asarray(w, np.float32) for w in clean_waveforms]
  if len(clean) != len(interferers) or not clean:
    raise ValueError(
        f"{len(clean)} clean utterances but {len(interferers)} interferers (need one each, and "
        "at least one)"
    )
  rng = np.random.default_rng(seed)
  mixed, covered = [], []
  for c, i in zip(clean, interferers):
    room = c.size - int(round(overlap * c.size))
    start = int(rng.integers(0, room + 1)) if overlap < 1 else 0
    m, cover = mix_overlap(c, i, energy_ratio_db, fraction=overlap, start=start)
    mixed.append(m)
    covered.append(cover)
  clean_units = units_fn(clean)
  mixed_units = units_fn(mixed)
  agreeing = np.zeros(len(clean), np.int64)
  frames = np.zeros(len(clean), np.int64)
  for u, (a, b) in enumerate(zip(clean_units, mixed_units)):
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
      raise ValueError(
          f"utterance {u}: {a.shape} units of the clean audio but {b.shape} of the mixture "
          "(same audio length, so units_fn should return the same number of frames)"
      )
    # A frame counts when the interferer covers its centre sample.
    centres = ((np.arange(a.size) + 0.5) * covered[u].size / max(a.size, 1)).astype(np.int64)
    valid = (a >= 0) & (b >= 0) & covered[u][np.minimum(centres, covered[u].size - 1)]
    frames[u] = valid.sum()
    agreeing[u] = (valid & (a == b)).sum()
  per_utterance = np.where(frames > 0, agreeing / np.maximum(frames, 1), np.nan)
  rates = _resampled_rates(agreeing, frames, draws, seed)
  return {
      "agreement": float(agreeing.sum() / max(frames.sum(), 1)),
      "std": float(rates.std()),
      "ci95": (float(np.percentile(rates, 2.5)), float(np.percentile(rates, 97.5))),
      "per_utterance": per_utterance.tolist(),
      "agreeing_frames": agreeing.tolist(),
      "frames": frames.tolist(),
      "utterances": len(clean),
      "energy_ratio_db": float(energy_ratio_db),
      "overlap": float(overlap),
  }


def agreement_gain(
    before: Mapping, after: Mapping, *, draws: int = 1000, seed: int = 0
) -> dict[str, float]:
  """agreement(after) - agreement(before) on the same mixtures, with a paired bootstrap.

  `before` and `after` are `unit_agreement_under_mixing` results for the same utterances and
  interferers (e.g. HuBERT and WavLM units); each resample draws the same utterances for both.

  Returns:
    {"gain", "std" over resamples, "p_positive": share of resamples where `after` agrees more,
     "utterances"}.
  """
  a_agree, a_frames = np.asarray(before["agreeing_frames"]), np.asarray(before["frames"])
  b_agree, b_frames = np.asarray(after["agreeing_frames"]), np.asarray(after["frames"])
  if len(a_frames) != len(b_frames):
    raise ValueError(
        f"{len(a_frames)} utterances before but {len(b_frames)} after: not the same mixtures"
    )
  gains = _resampled_rates(b_agree, b_frames, draws, seed) - _resampled_rates(
      a_agree, a_frames, draws, seed
  )
  gain = b_agree.sum() / max(b_frames.sum(), 1) - a_agree.sum() / max(a_frames.sum(), 1)
  return {
      "gain": float(gain),
      "std": float(gains.std()),
      "p_positive": float((gains > 0).mean()),
      "utterances": len(a_frames),
  }
