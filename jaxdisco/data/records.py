"""One prepared utterance as one ArrayRecord record: encoding and decoding.

A record is::

    b'JDR1' | uint32 little-endian header size | JSON header | audio bytes | label bytes

The JSON header holds the utterance id, its length in samples, the sample
rate, the audio encoding and, when present, the number of labels and the
transcript. The audio is either little-endian int16 PCM (`pcm16`: fastest to
read, 2 bytes per sample) or a FLAC file (`flac`: about half the size, costs a
decode per read). Labels are little-endian int32.

Why not `np.savez` or a tf.train.Example: a fixed binary layout needs no
TensorFlow, decodes with one `np.frombuffer` (no copy, no zip parsing), and its
header can be read without touching the audio. The magic number lets readers
reject files that are not jaxdisco shards with a clear message.
"""

from __future__ import annotations

import dataclasses
import io
import json
import struct
from typing import Optional

import numpy as np
import soundfile

from jaxdisco.errors import UserError

MAGIC = b'JDR1'
AUDIO_FORMATS = ('pcm16', 'flac')
_HEADER_SIZE = struct.Struct('<I')


class RecordError(UserError, ValueError):
  """A record is not a jaxdisco record or is truncated."""


@dataclasses.dataclass(frozen=True, eq=False)
class Utterance:
  """One decoded utterance.

  Attributes:
    id: unique utterance id (e.g. `spk/utt01`).
    samples: int16 `[num_samples]` mono PCM at `sample_rate`.
    sample_rate: Hz.
    labels: int32 `[num_labels]` frame labels (e.g. HuBERT k-means units), or
      None.
    transcript: text, or None.
  """

  id: str
  samples: np.ndarray
  sample_rate: int = 16000
  labels: Optional[np.ndarray] = None
  transcript: Optional[str] = None

  @property
  def num_samples(self) -> int:
    return int(self.samples.shape[0])


def float_to_int16(waveform: np.ndarray) -> np.ndarray:
  """float32 `[samples]` in [-1, 1] -> int16, rounding and clipping.

  Scale 32768 (clipped at 32767) is the inverse of how soundfile reads int16
  as float, so PCM_16 files round-trip exactly.
  """
  return np.clip(np.round(waveform * 32768.0), -32768, 32767).astype(np.int16)


def int16_to_float(samples: np.ndarray) -> np.ndarray:
  """int16 `[samples]` -> float32 in [-1, 1), as soundfile reads PCM_16."""
  return samples.astype(np.float32) / 32768.0


def encode(utterance: Utterance, audio_format: str = 'pcm16') -> bytes:
  """Serializes `utterance` into one record."""
  if audio_format not in AUDIO_FORMATS:
    raise ValueError(f'audio_format must be one of {AUDIO_FORMATS}, got {audio_format!r}')
  samples = np.asarray(utterance.samples, np.int16)
  if audio_format == 'pcm16':
    audio_bytes = samples.astype('<i2', copy=False).tobytes()
  else:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, utterance.sample_rate, format='FLAC', subtype='PCM_16')
    audio_bytes = buffer.getvalue()
  header = {
      'id': utterance.id,
      'num_samples': int(samples.shape[0]),
      'sample_rate': int(utterance.sample_rate),
      'audio_format': audio_format,
      'audio_bytes': len(audio_bytes),
  }
  label_bytes = b''
  if utterance.labels is not None:
    label_bytes = np.asarray(utterance.labels).astype('<i4').tobytes()
    header['num_labels'] = int(len(utterance.labels))
  if utterance.transcript is not None:
    header['transcript'] = utterance.transcript
  header_bytes = json.dumps(header, separators=(',', ':')).encode()
  return b''.join(
      [MAGIC, _HEADER_SIZE.pack(len(header_bytes)), header_bytes, audio_bytes, label_bytes]
  )


def _split(record: bytes) -> tuple[dict, int]:
  if record[:4] != MAGIC:
    raise RecordError(
        f'not a jaxdisco record (expected magic {MAGIC!r}, found {bytes(record[:4])!r})'
    )
  (size,) = _HEADER_SIZE.unpack_from(record, 4)
  start = 4 + _HEADER_SIZE.size
  try:
    header = json.loads(bytes(record[start : start + size]))
  except ValueError as e:
    raise RecordError(f'corrupt record header: {e}') from e
  return header, start + size


def decode_header(record: bytes) -> dict:
  """The header only (id, num_samples, sample_rate, ...); audio untouched."""
  return _split(record)[0]


def decode(record: bytes) -> Utterance:
  """Parses a record written by `encode`; int16 PCM audio (FLAC decoded)."""
  header, offset = _split(record)
  audio_end = offset + header['audio_bytes']
  num_labels = header.get('num_labels')
  expected_size = audio_end + 4 * (num_labels or 0)
  if len(record) != expected_size:
    raise RecordError(
        f'record of {header["id"]!r}: expected {expected_size} bytes, found {len(record)}'
    )
  audio_bytes = record[offset:audio_end]
  if header['audio_format'] == 'pcm16':
    samples = np.frombuffer(audio_bytes, dtype='<i2').astype(np.int16, copy=False)
  else:
    samples, _ = soundfile.read(io.BytesIO(audio_bytes), dtype='int16')
  labels = None
  if num_labels is not None:
    labels = np.frombuffer(record[audio_end:], dtype='<i4').astype(np.int32, copy=False)
  return Utterance(
      id=header['id'],
      samples=samples,
      sample_rate=header['sample_rate'],
      labels=labels,
      transcript=header.get('transcript'),
  )
