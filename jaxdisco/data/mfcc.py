"""39-d MFCC features for HuBERT's first iteration, as the reference computes them.

The reference (fairseq `examples/hubert/simple_kmeans/dump_mfcc_feature.py`) reads each file
as float in [-1, 1] and calls torchaudio's Kaldi-compatible
`torchaudio.compliance.kaldi.mfcc(waveform, sample_frequency=16000, use_energy=False)` with
all other options at their defaults, then appends `torchaudio.functional.compute_deltas` of the
MFCCs and of the deltas. torchaudio has no build for this project's torch, so this module is a
numpy implementation of the same Kaldi formulas, step by step (not librosa: see below):

1. Frames of 400 samples (25 ms) every 160 samples (10 ms), Kaldi `snip_edges=True`: only
   frames that fit entirely, so `frames = 1 + (samples - 400) // 160` (0 if shorter than 400).
   Frame i covers samples [160 i, 160 i + 400), centre at 0.01 i + 0.0125 s.
2. No dither (torchaudio's default is 0.0, unlike Kaldi's binary whose default is 1.0), so the
   features are deterministic.
3. Per-frame DC removal, then pre-emphasis 0.97 within the frame (`x[j] -= 0.97 x[j-1]`, the
   first sample uses itself: `x[0] -= 0.97 x[0]`).
4. Povey window: a symmetric Hann window raised to the power 0.85.
5. Zero-padding to 512 samples (next power of two), power spectrum `|rfft|^2` (257 bins).
6. 23 triangular mel filters from 20 Hz to Nyquist (high_freq 0 means Nyquist), in Kaldi's mel
   scale `1127 ln(1 + f / 700)`, triangles in mel between equally spaced mel points; weights are
   defined on the first 256 FFT bins (the Nyquist bin gets weight 0), with no area
   normalization.
7. Natural log of the mel energies, floored at float32 epsilon (1.19e-7) before the log.
8. Orthonormal DCT-II, the first 13 coefficients (C0 included; no energy term since
   `use_energy=False`).
9. Cepstral liftering with Q = 22: coefficient i times `1 + 11 sin(pi i / 22)`.
10. Deltas with window 2 (`compute_deltas` default win_length=5): `d[t] = sum_{k=1..2}
    k (c[t+k] - c[t-k]) / 10`, edges padded by repeating the first/last frame; the
    delta-deltas are the deltas of the deltas (padded again).

Output `[frames, 39]` = [13 MFCC, 13 delta, 13 delta-delta], float32.

Differences from the reference: computed in float64 and cast to float32 at the end (torchaudio
works in float32), so values differ by float32 rounding (test_mfcc.py measures it against
torchaudio where that is importable, and against values recorded from torchaudio 2.11
otherwise). Nothing else differs.

Why not `librosa.feature.mfcc`: it differs from Kaldi in almost every step: Slaney (or HTK)
mel scale and area-normalized filters, centred frames with padding (so a different frame
count and frame centres), a periodic Hann window without the 0.85 power, no DC removal or
pre-emphasis, power in dB (`10 log10`, with a top_db clip) instead of natural log, and no
liftering by default. librosa is used here for none of these steps.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000
FRAME_LENGTH = 400  # samples: 25 ms at 16 kHz
FRAME_SHIFT = 160  # samples: 10 ms at 16 kHz
FFT_SIZE = 512
NUM_MEL_BINS = 23
NUM_CEPS = 13
LOW_FREQ = 20.0
PREEMPHASIS = 0.97
CEPSTRAL_LIFTER = 22.0
DELTA_WINDOW = 2
FEATURE_DIM = 3 * NUM_CEPS
FRAME_RATE = SAMPLE_RATE / FRAME_SHIFT  # 100 Hz

# Kaldi floors mel energies at std::numeric_limits<float>::epsilon() before the log.
_LOG_FLOOR = float(np.finfo(np.float32).eps)
# Frames per block when computing spectra, to bound float64 temporaries on long files.
_BLOCK_FRAMES = 8192


def num_frames(num_samples: int) -> int:
  """The reference's frame count: Kaldi `snip_edges=True`, 400-sample window, 160 hop."""
  if num_samples < FRAME_LENGTH:
    return 0
  return 1 + (num_samples - FRAME_LENGTH) // FRAME_SHIFT


def _kaldi_mel(freq):
  return 1127.0 * np.log(1.0 + np.asarray(freq, np.float64) / 700.0)


def povey_window(length: int = FRAME_LENGTH) -> np.ndarray:
  """`[length]` float64: symmetric Hann window to the power 0.85 (Kaldi's default)."""
  n = np.arange(length, dtype=np.float64)
  return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / (length - 1))) ** 0.85


def mel_filterbank(sample_rate: int = SAMPLE_RATE, num_bins: int = NUM_MEL_BINS) -> np.ndarray:
  """`[FFT_SIZE // 2 + 1, num_bins]` float64 Kaldi mel filter weights (Nyquist row 0); 23
  bins for the MFCCs, 80 for the log-mel front end (`jaxdisco/models/log_mel.py`)."""
  nyquist = 0.5 * sample_rate
  mel_low, mel_high = _kaldi_mel(LOW_FREQ), _kaldi_mel(nyquist)
  delta = (mel_high - mel_low) / (num_bins + 1)
  edges = mel_low + delta * np.arange(num_bins + 2)  # left/centre/right points
  left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
  bin_mel = _kaldi_mel(np.arange(FFT_SIZE // 2) * (sample_rate / FFT_SIZE))[None, :]
  rising = (bin_mel - left) / (centre - left)
  falling = (right - bin_mel) / (right - centre)
  weights = np.maximum(0.0, np.minimum(rising, falling))  # [mel, fft_bins - 1]
  return np.concatenate([weights, np.zeros((num_bins, 1))], axis=1).T


def dct_matrix() -> np.ndarray:
  """`[NUM_MEL_BINS, NUM_CEPS]` float64 orthonormal DCT-II basis, applied on the right."""
  m = np.arange(NUM_MEL_BINS, dtype=np.float64)[:, None]
  c = np.arange(NUM_CEPS, dtype=np.float64)[None, :]
  basis = np.sqrt(2.0 / NUM_MEL_BINS) * np.cos(np.pi / NUM_MEL_BINS * (m + 0.5) * c)
  basis[:, 0] = np.sqrt(1.0 / NUM_MEL_BINS)
  return basis


def lifter_coefficients() -> np.ndarray:
  """`[NUM_CEPS]` float64 Kaldi cepstral lifter `1 + Q/2 sin(pi i / Q)`, Q = 22."""
  i = np.arange(NUM_CEPS, dtype=np.float64)
  return 1.0 + 0.5 * CEPSTRAL_LIFTER * np.sin(np.pi * i / CEPSTRAL_LIFTER)


def deltas(features: np.ndarray, window: int = DELTA_WINDOW) -> np.ndarray:
  """Regression deltas over time, edges replicated (torchaudio `compute_deltas`).

  Args:
    features: `[frames, dim]`.
    window: N; `d[t] = sum_{k=1..N} k (x[t+k] - x[t-k]) / (2 sum_k k^2)`.

  Returns:
    `[frames, dim]`, same dtype as `features`.
  """
  if features.shape[0] == 0:
    return features.copy()
  padded = np.concatenate(
      [np.repeat(features[:1], window, 0), features, np.repeat(features[-1:], window, 0)]
  )
  frames = features.shape[0]
  out = np.zeros_like(features)
  for k in range(1, window + 1):
    out += k * (padded[window + k : window + k + frames] - padded[window - k : window - k + frames])
  return out / (2.0 * sum(k * k for k in range(1, window + 1)))


def _log_mel(frames: np.ndarray, window: np.ndarray, filterbank: np.ndarray) -> np.ndarray:
  """`[n, 400]` float64 raw frames → `[n, NUM_MEL_BINS]` log mel energies."""
  frames = frames - frames.mean(axis=1, keepdims=True)
  previous = np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
  frames = (frames - PREEMPHASIS * previous) * window
  spectrum = np.fft.rfft(frames, n=FFT_SIZE, axis=1)
  power = spectrum.real**2 + spectrum.imag**2
  return np.log(np.maximum(power @ filterbank, _LOG_FLOOR))


def mfcc_features(waveform: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """13 MFCC + delta + delta-delta at 100 Hz, as the HuBERT reference computes them.

  Args:
    waveform: `[samples]` float mono waveform in [-1, 1] (as `read_audio` returns it; the
      reference reads files the same way, not as int16-scaled values).
    sample_rate: must be 16000 (the window and hop sizes are the reference's sample counts).

  Returns:
    float32 `[num_frames(samples), 39]`; `[0, 39]` for waveforms shorter than 400 samples.
  """
  if sample_rate != SAMPLE_RATE:
    raise ValueError(
        f"mfcc_features expects {SAMPLE_RATE} Hz audio, got {sample_rate} Hz "
        "(resample with read_audio(..., resample=True))"
    )
  waveform = np.asarray(waveform, dtype=np.float64)
  if waveform.ndim != 1:
    raise ValueError(f"expected a 1-D waveform [samples], got shape {waveform.shape}")
  total = num_frames(waveform.shape[0])
  if total == 0:
    return np.zeros((0, FEATURE_DIM), np.float32)

  all_frames = np.lib.stride_tricks.sliding_window_view(waveform, FRAME_LENGTH)[::FRAME_SHIFT]
  window, filterbank = povey_window(), mel_filterbank(sample_rate)
  projection = dct_matrix() * lifter_coefficients()[None, :]
  ceps = np.concatenate(
      [
          _log_mel(all_frames[start : start + _BLOCK_FRAMES], window, filterbank) @ projection
          for start in range(0, total, _BLOCK_FRAMES)
      ]
  )
  first = deltas(ceps)
  second = deltas(first)
  return np.concatenate([ceps, first, second], axis=1).astype(np.float32)
