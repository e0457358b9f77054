"""Log-mel filterbank front end on device (`model.frontend = "log_mel"`), in jnp without FFTs.

Kaldi `fbank` with torchaudio's defaults (the same steps as `jaxdisco/data/mfcc.py`, with
`mel_bins` filters and no DCT): frames of 400 samples (25 ms) every 160 (10 ms) at 16 kHz with
`snip_edges=True` (`frames = 1 + (samples - 400) // 160`, so the front end is the stage
(bins, 400, 160) of `ModelConfig.geometry_spec`), no dither, per-frame DC removal,
pre-emphasis 0.97, Povey window, 512-point power spectrum, triangular Kaldi-mel filters from
20 Hz to Nyquist, natural log floored at float32 epsilon.

The power spectrum is a matmul, not `jnp.fft` (FFTs are kept off TPU in this project): DC
removal, pre-emphasis and the window are linear maps of a frame, so they are folded with the
real DFT of the zero-padded frame into one [400, 2 x 257] matrix (cosine and sine halves),
precomputed in float64; power = re^2 + im^2, then one matmul with the filterbank. Frames are
cut without a gather: the waveform is split into 80-sample chunks (gcd of window and hop), and
a frame is 5 consecutive chunks, every second chunk starting one.

Then each utterance is normalised per bin to zero mean / unit variance over its valid frames
(padding frames are 0 and do not enter the statistics), so a padded row gives exactly the
features of the same utterance unpadded. BEST-RQ's quantizer and encoder both read these.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxdisco.data import mfcc
from jaxdisco.models.config import MEL_HOP, MEL_WINDOW, conv_output_length

Array = jax.Array
NORM_EPS = 1e-5  # Added to each bin's variance.
_HIGHEST = jax.lax.Precision.HIGHEST


@functools.lru_cache(maxsize=None)
def frame_to_spectrum_matrix() -> np.ndarray:
  """[400, 2 * 257] float64: raw frame -> (real, imaginary) DFT of the DC-removed,
  pre-emphasised, windowed frame zero-padded to 512 (the sign of the imaginary part is
  irrelevant for the power)."""
  n = MEL_WINDOW
  dc = np.eye(n) - np.full((n, n), 1.0 / n)  # x -> x - mean(x), as x @ dc.
  pre = np.eye(n)
  pre[np.arange(n - 1), np.arange(1, n)] = -mfcc.PREEMPHASIS  # y[j] = x[j] - 0.97 x[j - 1]
  pre[0, 0] -= mfcc.PREEMPHASIS  # y[0] = x[0] - 0.97 x[0], Kaldi's first sample.
  window = mfcc.povey_window(n)
  bins = mfcc.FFT_SIZE // 2 + 1
  angle = 2.0 * np.pi * np.outer(np.arange(n), np.arange(bins)) / mfcc.FFT_SIZE
  dft = np.concatenate([np.cos(angle), np.sin(angle)], axis=1)
  return dc @ pre @ (window[:, None] * dft)


def num_mel_frames(num_samples):
  """Kaldi `snip_edges` frame count (int or int array), never below 0."""
  frames = conv_output_length(num_samples, ((0, MEL_WINDOW, MEL_HOP),))
  return np.maximum(frames, 0) if isinstance(frames, (int, np.integer)) else jnp.maximum(frames, 0)


def _frames(waveform: Array) -> Array:
  """[batch, samples] -> [batch, frames, 400] Kaldi frames (no gather: chunk slices)."""
  batch, samples = waveform.shape
  frames = max(0, (samples - MEL_WINDOW) // MEL_HOP + 1)
  chunk = math.gcd(MEL_WINDOW, MEL_HOP)
  per_hop, per_window = MEL_HOP // chunk, MEL_WINDOW // chunk
  num_chunks = -(-samples // chunk)
  padded = jnp.pad(waveform, ((0, 0), (0, num_chunks * chunk - samples)))
  chunks = padded.reshape(batch, num_chunks, chunk)
  limit = per_hop * (frames - 1) + 1
  pieces = [chunks[:, j : j + limit : per_hop] for j in range(per_window)]
  return jnp.concatenate(pieces, axis=-1)[:, :frames]


def log_mel(waveform: Array, num_bins: int = 80) -> Array:
  """[batch, samples] float -> raw log-mel energies [batch, frames, num_bins] float32."""
  frames = _frames(waveform.astype(jnp.float32))
  spectrum = jnp.dot(frames, jnp.asarray(frame_to_spectrum_matrix(), jnp.float32), precision=_HIGHEST)
  bins = spectrum.shape[-1] // 2
  power = jnp.square(spectrum[..., :bins]) + jnp.square(spectrum[..., bins:])
  filterbank = jnp.asarray(mfcc.mel_filterbank(mfcc.SAMPLE_RATE, num_bins), jnp.float32)
  energies = jnp.dot(power, filterbank, precision=_HIGHEST)
  return jnp.log(jnp.maximum(energies, mfcc._LOG_FLOOR))  # pylint: disable=protected-access


def normalized_log_mel(waveform: Array, padding_mask=None, num_bins: int = 80):
  """-> (features [batch, frames, num_bins] float32, valid frames [batch] int32): log-mel
  normalised per utterance and bin over the valid frames; 0 on padding frames."""
  x = log_mel(waveform, num_bins)
  batch, frames = x.shape[:2]
  if padding_mask is None:
    lengths = jnp.full((batch,), frames, jnp.int32)
  else:
    lengths = num_mel_frames(jnp.sum(~padding_mask, axis=-1)).astype(jnp.int32)
  valid = (jnp.arange(frames)[None] < lengths[:, None])[..., None]
  count = jnp.maximum(lengths, 1).astype(jnp.float32)[:, None, None]
  mean = jnp.where(valid, x, 0.0).sum(1, keepdims=True) / count
  var = jnp.where(valid, jnp.square(x - mean), 0.0).sum(1, keepdims=True) / count
  return jnp.where(valid, (x - mean) * jax.lax.rsqrt(var + NORM_EPS), 0.0), lengths


def mel_frame_mask(mask: Array, num_mel_frames_: int, stride: int) -> Array:
  """Encoder-frame mask [batch, frames] -> mel-frame mask [batch, num_mel_frames]: mel frame m
  is masked when encoder frame m // stride is (stride: mel frames per encoder frame, 4 for
  40 ms frames), so a span of L encoder frames masks the L x stride mel frames under them;
  mel frames past the last encoder frame follow it."""
  index = np.minimum(np.arange(num_mel_frames_) // stride, mask.shape[1] - 1)
  return mask[:, index]


def stack_frames(features: Array, lengths: Array, stack: int, num_frames: int):
  """[batch, mel_frames, bins] -> ([batch, num_frames, stack * bins], valid [batch, num_frames]):
  frame t stacks mel frames t*stack .. t*stack + stack - 1 (zeros past the end); valid when all
  of them are valid mel frames."""
  batch, mel_frames, bins = features.shape
  need = num_frames * stack
  if need > mel_frames:
    features = jnp.pad(features, ((0, 0), (0, need - mel_frames), (0, 0)))
  stacked = features[:, :need].reshape(batch, num_frames, stack * bins)
  valid = (jnp.arange(num_frames)[None] + 1) * stack <= lengths[:, None]
  return stacked, valid
