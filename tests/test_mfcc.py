"""jaxdisco.data.mfcc against the HuBERT reference's torchaudio Kaldi MFCC + deltas.

torchaudio is compared directly where importable; otherwise (and always, as a pin) against
values recorded from torchaudio 2.11 (`compliance.kaldi.mfcc(use_energy=False)` +
`functional.compute_deltas`) on the closed-form signal below.
"""

import numpy as np
import pytest

from jaxdisco.assets import demo_corpus_dir
from jaxdisco.data import mfcc
from jaxdisco.data.audio import read_audio


def _signal(n):
  t = np.arange(n) / 16000.0
  x = (
      0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t)
      + 0.1 * np.sin(2 * np.pi * 1234.5 * t)
      + 0.05 * np.sin(0.37 * np.arange(n) ** 1.5)
  )
  return x.astype(np.float32)


# torchaudio 2.11 output on _signal(16123): frames 0, 37 and 98 (the last), 4 decimals.
_RECORDED = {
    0: [
        2.4328,
        -17.0631,
        4.1747,
        2.1777,
        20.1347,
        29.6504,
        12.8987,
        -21.9311,
        -31.7942,
        -11.531,
        7.287,
        -7.2571,
        -35.1356,
        -1.163,
        3.9375,
        -6.7997,
        4.9813,
        -5.7545,
        4.266,
        -3.6692,
        3.3716,
        -4.6157,
        -1.3047,
        -6.3559,
        -1.0159,
        -1.7128,
        -0.4622,
        -1.6706,
        3.616,
        -1.6575,
        1.3808,
        1.7274,
        1.9438,
        -4.0399,
        -2.903,
        -1.0319,
        1.5725,
        -0.2221,
        -0.6994,
    ],
    37: [
        -21.0526,
        58.7168,
        -91.0728,
        6.6901,
        0.7737,
        -59.1948,
        -7.0288,
        -57.1871,
        -51.7544,
        5.5539,
        14.3847,
        33.2845,
        18.889,
        -4.0857,
        22.1053,
        -17.0687,
        -16.3993,
        25.9109,
        -24.8694,
        12.2812,
        15.2138,
        23.7782,
        -3.1181,
        -12.3308,
        -8.2037,
        6.1867,
        0.4031,
        -8.8632,
        14.3861,
        -6.8613,
        -4.2231,
        8.8871,
        -5.292,
        -6.4026,
        -8.7632,
        2.9964,
        6.4116,
        4.6491,
        -2.7583,
    ],
    98: [
        -26.7552,
        32.1962,
        -135.9814,
        -29.2079,
        -22.257,
        -53.0443,
        64.5728,
        31.2504,
        2.6853,
        20.1962,
        -21.6177,
        -19.7402,
        -21.9204,
        2.8564,
        -13.5472,
        -28.78,
        17.3239,
        -0.954,
        -21.1505,
        15.2906,
        7.491,
        3.5943,
        7.6255,
        -8.4155,
        -2.0172,
        3.1862,
        0.3161,
        -1.5902,
        -3.5793,
        1.9117,
        0.5007,
        -2.6168,
        1.345,
        1.3672,
        1.2064,
        2.144,
        -0.42,
        -0.5438,
        0.7675,
    ],
}


def test_matches_recorded_torchaudio_values():
  features = mfcc.mfcc_features(_signal(16123))
  assert features.shape == (99, 39) and features.dtype == np.float32
  for frame, expected in _RECORDED.items():
    np.testing.assert_allclose(features[frame], expected, atol=5e-3)


def test_matches_torchaudio_when_installed():
  torch = pytest.importorskip("torch")
  try:
    from torchaudio.compliance import kaldi  # pylint: disable=import-outside-toplevel
    import torchaudio.functional as F  # pylint: disable=import-outside-toplevel
  except (ImportError, OSError):
    pytest.skip("torchaudio not importable")
  wav = read_audio(demo_corpus_dir() / "audio" / "demo-0001.flac")
  ref = kaldi.mfcc(torch.from_numpy(wav).view(1, -1), sample_frequency=16000, use_energy=False).T
  d = F.compute_deltas(ref)
  ref = torch.cat([ref, d, F.compute_deltas(d)]).T.numpy()
  np.testing.assert_allclose(mfcc.mfcc_features(wav), ref, atol=1e-2)


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
