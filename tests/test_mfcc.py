"""jaxdisco.data.mfcc against the HuBERT reference's torchaudio Kaldi MFCC + deltas.

No torchaudio release matches the torch the test extras pin, so the comparison is with
torchaudio's output recorded on two inputs (tests/data/torchaudio_mfcc.npz; provenance below).
"""

import hashlib
import pathlib

import numpy as np
import pytest

from jaxdisco.assets import demo_corpus_dir
from jaxdisco.data import mfcc
from jaxdisco.data.audio import read_audio

REPO_DATA = pathlib.Path(__file__).parent / "data"


def _signal(n):
  t = np.arange(n) / 16000.0
  x = (
      0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t)
      + 0.1 * np.sin(2 * np.pi * 1234.5 * t)
      + 0.05 * np.sin(0.37 * np.arange(n) ** 1.5)
  )
  return x.astype(np.float32)


# The HuBERT reference's features (torchaudio 2.11.1 `compliance.kaldi.mfcc(use_energy=False)`
# + `functional.compute_deltas` twice, on torch 2.13.0 CPU), recorded by
# tools/record_torchaudio_mfcc.py, whose docstring has the exact command.
_REFERENCE = REPO_DATA / "torchaudio_mfcc.npz"
# Measured against the recording: max abs difference 1.4e-3 (demo utterance, values up to 136)
# and 2.5e-3 (closed-form signal); float32 FFTs in two libraries.
_ATOL = 5e-3


def test_recording_provenance():
  recorded = np.load(_REFERENCE)
  assert str(recorded["torchaudio_version"]).startswith("2.11.1")
  assert str(recorded["torch_version"]).startswith("2.13.0")
  audio = demo_corpus_dir() / "audio" / "demo-0001.flac"
  # The recording is of this very file: a regenerated corpus needs a new recording.
  assert hashlib.sha256(audio.read_bytes()).hexdigest() == str(recorded["demo_utterance_sha256"])


def test_matches_torchaudio_on_a_closed_form_signal():
  features = mfcc.mfcc_features(_signal(16123))
  assert features.shape == (99, 39) and features.dtype == np.float32
  np.testing.assert_allclose(features, np.load(_REFERENCE)["signal_16123"], atol=_ATOL, rtol=0)


def test_matches_torchaudio_on_a_demo_utterance():
  wav = read_audio(demo_corpus_dir() / "audio" / "demo-0001.flac")
  reference = np.load(_REFERENCE)["demo_utterance"]
  assert reference.shape == (298, 39)
  np.testing.assert_allclose(mfcc.mfcc_features(wav), reference, atol=_ATOL, rtol=0)


@pytest.mark.parametrize("samples", [0, 399, 400, 559, 560, 16000, 47969])
def test_frame_count_is_snip_edges(samples):
  expected = 0 if samples < 400 else 1 + (samples - 400) // 160
  assert mfcc.num_frames(samples) == expected
  assert mfcc.mfcc_features(np.zeros(samples, np.float32) + 0.01).shape == (expected, 39)


def test_building_blocks_follow_kaldi_formulas():
  w = mfcc.povey_window()
  assert w[0] == 0 and w[-1] == 0 and np.isclose(w[199], np.sin(np.pi * 199 / 399) ** 1.7)
  bank = mfcc.mel_filterbank()
  assert bank.shape == (257, 23) and np.all(bank[-1] == 0) and np.all(bank[0] == 0)
  assert np.all(bank.max(axis=0) > 0.5) and np.all(bank <= 1)
  dct = mfcc.dct_matrix()
  np.testing.assert_allclose(dct.T @ dct, np.eye(13), atol=1e-12)  # orthonormal columns
  np.testing.assert_allclose(mfcc.lifter_coefficients()[[0, 11]], [1.0, 12.0])


def test_deltas_regression_with_replicated_edges():
  x = np.arange(6, dtype=np.float64)[:, None] ** 2  # 0 1 4 9 16 25
  d = mfcc.deltas(x)[:, 0]
  # t=0 pads with x[0]=0: (1*(1-0) + 2*(4-0)) / 10; t=2: (1*(9-1) + 2*(16-0)) / 10;
  # t=5 pads with x[5]=25: (1*(25-16) + 2*(25-9)) / 10.
  np.testing.assert_allclose(d[[0, 2, 5]], [0.9, 4.0, 4.1])
  assert mfcc.deltas(np.zeros((0, 13))).shape == (0, 13)


def test_rejects_other_sample_rates():
  with pytest.raises(ValueError, match="16000 Hz"):
    mfcc.mfcc_features(np.zeros(8000, np.float32), sample_rate=8000)
