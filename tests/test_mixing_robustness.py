"""Unit agreement under an overlapping speaker: robust units agree, sensitive ones do not."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from jaxdisco.data.manifest import read_manifest
from jaxdisco.evaluation import mixing_robustness as mr

_FRAME = 320  # 20 ms at 16 kHz: rfft bins every 50 Hz, so tones on bins do not leak.
_INTERFERER_BIN = 120  # 6 kHz, far above every "clean" tone.
_CORPUS = pathlib.Path(mr.__file__).parents[1] / "assets" / "demo_corpus"


def _tone_utterance(rng, frames: int, amplitudes=None) -> np.ndarray:
  """One bin-centred tone per frame (bins 4..30), so the peak bin is a clean 'unit' per frame."""
  t = np.arange(_FRAME)
  amplitudes = np.ones(frames) if amplitudes is None else amplitudes
  pieces = [
      a * np.cos(2 * np.pi * rng.integers(4, 31) * t / _FRAME + rng.uniform(0, 2 * np.pi))
      for a in amplitudes
  ]
  return np.concatenate(pieces).astype(np.float32)


def _interferer(frames: int) -> np.ndarray:
  """A stationary tone on one high bin; whole frames, so repeating it keeps its phase."""
  t = np.arange(frames * _FRAME)
  return np.cos(2 * np.pi * _INTERFERER_BIN * t / _FRAME).astype(np.float32)


def _peak_bins(waveforms, max_bin=None):
  out = []
  for w in waveforms:
    n = len(w) // _FRAME
    spectrum = np.abs(np.fft.rfft(np.asarray(w[: n * _FRAME]).reshape(n, _FRAME), axis=-1))
    out.append(np.argmax(spectrum[:, :max_bin], axis=-1).astype(np.int32))
  return out


def robust_units(waveforms):
  """Peak below 2 kHz: blind to the 6 kHz interferer."""
  return _peak_bins(waveforms, max_bin=40)


def sensitive_units(waveforms):
  """Peak over the whole band: the louder tone wins."""
  return _peak_bins(waveforms)


def _corpus(seed: int, count: int = 6, amplitudes: bool = False):
  rng = np.random.default_rng(seed)
  clean, interferers = [], []
  for _ in range(count):
    frames = int(rng.integers(20, 40))
    amp = rng.uniform(0.2, 1.8, frames) if amplitudes else None
    clean.append(_tone_utterance(rng, frames, amp))
    # Shorter than the clean utterance on purpose: it is repeated to cover it.
    interferers.append(_interferer(int(rng.integers(5, 15))))
  return clean, interferers


def test_interferer_blind_units_agree_fully_and_sensitive_units_do_not():
  clean, interferers = _corpus(0)
  robust = mr.unit_agreement_under_mixing(robust_units, clean, interferers, -6.0, draws=200)
  assert robust["agreement"] == 1.0 and robust["std"] == 0.0
  assert robust["per_utterance"] == [1.0] * len(clean)
  # At -6 dB the interferer is louder in every frame, so the full-band peak is always its bin.
  sensitive = mr.unit_agreement_under_mixing(sensitive_units, clean, interferers, -6.0)
  assert sensitive["agreement"] == 0.0
  # At +6 dB every clean tone is louder than the interferer again.
  quiet = mr.unit_agreement_under_mixing(sensitive_units, clean, interferers, 6.0)
  assert quiet["agreement"] == 1.0
  assert robust["frames"] == [len(w) // _FRAME for w in clean]


def test_partial_agreement_has_a_bootstrap_spread_and_a_paired_gain():
  clean, interferers = _corpus(1, count=12, amplitudes=True)
  before = mr.unit_agreement_under_mixing(sensitive_units, clean, interferers, 0.0, draws=400)
  after = mr.unit_agreement_under_mixing(robust_units, clean, interferers, 0.0, draws=400)
  # Frames whose clean tone is quieter than the interferer flip: some, not all.
  assert 0.1 < before["agreement"] < 0.9
  assert len(set(before["per_utterance"])) > 1
  assert before["std"] > 0
  low, high = before["ci95"]
  assert low < before["agreement"] < high
  pooled = sum(before["agreeing_frames"]) / sum(before["frames"])
  assert before["agreement"] == pytest.approx(pooled)
  gain = mr.agreement_gain(before, after, draws=400)
  assert gain["gain"] == pytest.approx(1.0 - before["agreement"])
  assert gain["p_positive"] == 1.0 and gain["std"] > 0
  # Same seed, same resamples: the result does not change between calls.
  assert mr.agreement_gain(before, after, draws=400) == gain


def test_only_frames_valid_in_both_versions_count():
  clean, interferers = _corpus(2)
  calls = []

  def padded_units(waveforms):
    # Clean call: garbage on the last 3 frames; mixed call: those frames marked padding (-1).
    units = robust_units(waveforms)
    for u in units:
      u[-3:] = 99 if not calls else -1
    calls.append(1)
    return units

  result = mr.unit_agreement_under_mixing(padded_units, clean, interferers, -6.0)
  assert result["agreement"] == 1.0
  assert result["frames"] == [len(w) // _FRAME - 3 for w in clean]


def test_length_mismatch_and_count_mismatch_raise():
  clean, interferers = _corpus(3, count=2)
  calls = []

  def shrinking(waveforms):
    calls.append(1)
    return [u[: len(u) - len(calls) + 1] for u in robust_units(waveforms)]

  with pytest.raises(ValueError, match="same number of frames"):
    mr.unit_agreement_under_mixing(shrinking, clean, interferers)
  with pytest.raises(ValueError, match="interferers"):
    mr.unit_agreement_under_mixing(robust_units, clean, interferers[:1])


@pytest.mark.parametrize("ratio_db", [-5.0, 0.0, 3.5])
def test_full_overlap_reaches_the_energy_ratio(ratio_db):
  rng = np.random.default_rng(4)
  clean = rng.normal(0, 0.3, 5000).astype(np.float32)
  interferer = rng.normal(0, 2.0, 1234).astype(np.float32)
  mixed, covered = mr.mix_overlap(clean, interferer, ratio_db)
  assert covered.all()
  added = mixed.astype(np.float64) - clean
  achieved = 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(added**2))
  assert abs(achieved - ratio_db) < 1e-4
  # The interferer is repeated from its start over the whole clean utterance.
  scale = added[:1234] @ interferer / (interferer @ interferer)
  np.testing.assert_allclose(added, scale * np.resize(interferer, 5000), atol=1e-5)
  silent, _ = mr.mix_overlap(clean, np.zeros(100, np.float32), ratio_db)
  np.testing.assert_array_equal(silent, clean)


def test_chunk_overlap_covers_half_and_counts_only_covered_frames():
  rng = np.random.default_rng(5)
  clean = rng.normal(0, 0.3, 6400).astype(np.float32)
  interferer = rng.normal(0, 2.0, 9000).astype(np.float32)
  mixed, covered = mr.mix_overlap(clean, interferer, 0.0, fraction=0.5, start=1000)
  np.testing.assert_array_equal(np.flatnonzero(covered), np.arange(1000, 4200))
  np.testing.assert_array_equal(mixed[~covered], clean[~covered])
  # The chunk is the interferer's first half-utterance, at the gain of the full overlap.
  full, _ = mr.mix_overlap(clean, interferer, 0.0)
  np.testing.assert_allclose(mixed[covered], full[:3200] - clean[:3200] + clean[1000:4200],
                             atol=1e-5)
  with pytest.raises(ValueError, match="must fit"):
    mr.mix_overlap(clean, interferer, 0.0, fraction=0.5, start=4000)
  with pytest.raises(ValueError, match="fraction"):
    mr.mix_overlap(clean, interferer, 0.0, fraction=0.0)
  # Sensitive units at -6 dB: every covered frame flips, the others keep their unit, and only
  # the covered ones (half of each utterance, to a frame) are counted.
  utterances, interferers = _corpus(6)
  result = mr.unit_agreement_under_mixing(
      sensitive_units, utterances, interferers, -6.0, overlap=0.5, seed=3
  )
  assert result["agreement"] == 0.0 and result["overlap"] == 0.5
  for frames, w in zip(result["frames"], utterances):
    assert abs(frames - len(w) // _FRAME / 2) <= 1
  again = mr.unit_agreement_under_mixing(
      sensitive_units, utterances, interferers, -6.0, overlap=0.5, seed=3
  )
  assert again["frames"] == result["frames"]


def test_partners_are_other_speakers_of_the_demo_corpus():
  meta = {r["id"]: r for r in map(json.loads, (_CORPUS / "meta.jsonl").read_text().splitlines())}
  manifest = read_manifest(_CORPUS / "valid.tsv")
  speakers = [meta[manifest.utterance_id(i)]["voice"] for i in range(len(manifest))]
  partners = mr.different_speaker_partners(speakers, seed=0)
  assert len(set(speakers)) > 1
  assert all(speakers[i] != speakers[j] for i, j in enumerate(partners))
  np.testing.assert_array_equal(partners, mr.different_speaker_partners(speakers, seed=0))
  with pytest.raises(ValueError, match="another speaker"):
    mr.different_speaker_partners(["en", "en"])
