"""Reading audio files into float32 mono waveforms.

Everything goes through `etils.epath`, so the same code reads local files and
`gs://` objects. Every failure is an `AudioError` whose message names the file
and says what was expected and what was found, because the usual reader of
these messages is someone staring at a corpus of 100k files wondering which
one is broken.
"""

from __future__ import annotations

import os
from typing import Union

from etils import epath
import numpy as np
import soundfile

from jaxdisco.errors import UserError

PathLike = Union[str, os.PathLike, epath.Path]


class AudioError(UserError, ValueError):
  """An audio file is missing, unreadable, empty or has the wrong format."""


def _sf_error_message(error: Exception) -> str:
  # LibsndfileError's str() names the file object (`<_io.BufferedReader ...>`),
  # which is noise next to the path we already print; keep libsndfile's reason.
  return getattr(error, 'error_string', None) or str(error)


def _open_checked(path: PathLike):
  """Opens `path` for binary reading, raising AudioError if it is missing."""
  path = epath.Path(path)
  if not path.exists():
    raise AudioError(f'{path}: audio file not found (expected an existing file)')
  if path.is_dir():
    raise AudioError(f'{path}: expected an audio file, found a directory')
  return path.open('rb')


def audio_info(path: PathLike) -> tuple[int, int, int]:
  """Reads only the header of an audio file.

  Args:
    path: local path or `gs://` URL.

  Returns:
    `(sample_rate, num_samples, channels)`, where `num_samples` counts frames
    (one frame = one sample per channel).

  Raises:
    AudioError: the file is missing or not a readable audio file.
  """
  with _open_checked(path) as f:
    try:
      info = soundfile.info(f)
    except (soundfile.SoundFileError, RuntimeError) as e:
      raise AudioError(
          f'{path}: expected a readable audio file (wav/flac/ogg...), '
          f'soundfile failed: {_sf_error_message(e)}'
      ) from e
  return int(info.samplerate), int(info.frames), int(info.channels)


def _resample(waveform: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
  """Resamples a 1-D float32 waveform with soxr (high quality, fast)."""
  import soxr  # pylint: disable=g-import-not-at-top  # only needed when resampling

  return np.asarray(soxr.resample(waveform, from_rate, to_rate), np.float32)


def read_audio(path: PathLike, *, sample_rate: int = 16000, resample: bool = False) -> np.ndarray:
  """Reads an audio file as a mono float32 waveform.

  Args:
    path: local path or `gs://` URL of any format libsndfile reads (wav, flac,
      ogg...).
    sample_rate: the rate the caller expects, in Hz.
    resample: if True, files at another rate are resampled to `sample_rate`;
      if False they are an error (silently training on 22 kHz audio as if it
      were 16 kHz is a bug that only shows up as bad units much later).

  Returns:
    float32 `[samples]` in [-1, 1].

  Raises:
    AudioError: missing, unreadable or zero-length file, or a sample-rate
      mismatch without `resample`.
  """
  with _open_checked(path) as f:
    try:
      # always_2d gives [samples, channels] whatever the channel count.
      data, file_rate = soundfile.read(f, dtype='float32', always_2d=True)
    except (soundfile.SoundFileError, RuntimeError) as e:
      raise AudioError(
          f'{path}: expected a readable audio file (wav/flac/ogg...), '
          f'soundfile failed: {_sf_error_message(e)}'
      ) from e

  if data.shape[0] == 0:
    raise AudioError(f'{path}: expected at least 1 sample, found 0 (empty audio)')
  if file_rate != sample_rate and not resample:
    raise AudioError(
        f'{path}: sample rate {file_rate} Hz, expected {sample_rate} Hz '
        '(pass resample=True / --resample to convert)'
    )

  # Stereo files in speech corpora are nearly always mono speech stored twice
  # (or a mono mic on one channel); averaging keeps the speech and is what
  # the reference toolkits do, whereas refusing would make users re-encode.
  waveform = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]

  if file_rate != sample_rate:
    waveform = _resample(waveform, file_rate, sample_rate)

  # Float-encoded files and resampling ripple can leave |x| slightly above 1;
  # clip so the documented range holds.
  return np.clip(waveform, -1.0, 1.0).astype(np.float32, copy=False)
