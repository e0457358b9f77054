"""Tokenizing a corpus: files, folders and manifests -> one line of unit ids per utterance.

Lengths come from the file headers first, so utterances are batched by length (little
padding); each batch is one data-parallel call over `jax.devices()` (`Tokenizer.encode_batch`).
A file that cannot be read is reported and skipped; the run goes on.

Outputs: JSONL, one `{"id": ..., "units": [...]}` per line (plus `"durations"` with
deduplication), or fairseq `.km` lines with the sidecar `{out}.ids` and `dict.km.txt`
(`jaxdisco.clustering.labels`). Utterances keep input order.
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable, Optional, Sequence, Union

from etils import epath
import jax
import numpy as np

from jaxdisco.clustering import labels as km_labels
from jaxdisco.data import audio, sources
from jaxdisco.data.manifest import ManifestError
from jaxdisco.errors import MissingFileError
from jaxdisco.progress import ProgressMeter

PathLike = Union[str, os.PathLike]
FORMATS = ("jsonl", "km")


def collect_entries(inputs: Sequence[PathLike]) -> list[sources.Entry]:
  """Audio files, folders (recursive), manifests (.tsv) or prepared dirs -> entries.

  A plain file's id is its name without extension; folders and manifests use their source's
  ids (path relative to the root, without extension). Duplicate ids are an error.
  """
  entries, seen = [], {}
  for spec in inputs:
    path = epath.Path(spec)
    if path.is_dir() or str(spec).endswith(".tsv") or str(spec).startswith("tfds:"):
      source = sources.open_source(spec)
      found = [source[i] for i in range(len(source))]
    elif path.is_file():
      found = [sources.Entry(id=path.stem, audio=path, where=str(path))]
    else:
      raise MissingFileError(f"{spec}: not an audio file, folder or manifest")
    for entry in found:
      if entry.id in seen:
        raise ManifestError(
            f"duplicate utterance id {entry.id!r}: {seen[entry.id]} and {entry.where}"
        )
      seen[entry.id] = entry.where
      entries.append(entry)
  return entries


def _length(entry: sources.Entry, sample_rate: int, resample: bool) -> int:
  """Samples at `sample_rate`, from the header only (raises AudioError)."""
  if isinstance(entry.audio, np.ndarray):
    return int(entry.audio.shape[0] * sample_rate / (entry.sample_rate or sample_rate))
  rate, samples, _ = audio.audio_info(entry.audio)
  if rate != sample_rate and not resample:
    raise audio.AudioError(
        f"{entry.audio}: sample rate {rate} Hz, expected {sample_rate} Hz (pass --resample)"
    )
  return int(samples * sample_rate / rate)


def _read(entry: sources.Entry, sample_rate: int, resample: bool) -> np.ndarray:
  if isinstance(entry.audio, np.ndarray):
    wav = entry.audio
    if wav.dtype == np.int16:
      wav = wav.astype(np.float32) / 32768.0
    if entry.sample_rate not in (None, sample_rate):
      raise audio.AudioError(f"{entry.where}: {entry.sample_rate} Hz, expected {sample_rate} Hz")
    return np.asarray(wav, np.float32)
  return audio.read_audio(entry.audio, sample_rate=sample_rate, resample=resample)


def tokenize_files(
    tokenizer,
    inputs: Sequence[PathLike],
    out: PathLike,
    *,
    fmt: str = "jsonl",
    batch_size: int = 16,
    deduplicate: bool = False,
    offset: int = 0,
    chunk_seconds: Optional[float] = None,
    resample: bool = False,
    progress: Optional[Callable[[str], None]] = print,
    progress_every_seconds: float = 10.0,
) -> dict:
  """Tokenizes every utterance of `inputs` and writes `out`; returns a summary dict
  (utterances, skipped [(where, reason)], audio_seconds, wall_seconds, audio_seconds_per_second,
  devices)."""
  if fmt not in FORMATS:
    raise ValueError(f"format: expected one of {FORMATS}, got {fmt!r}")
  say = progress or (lambda _: None)
  start = time.perf_counter()
  rate = tokenizer.sample_rate
  skipped: list[tuple[str, str]] = []
  entries, lengths = [], []
  for entry in collect_entries(inputs):
    try:
      lengths.append(_length(entry, rate, resample))
      entries.append(entry)
    except (audio.AudioError, OSError) as e:
      skipped.append((entry.where, str(e)))
  order = sorted(range(len(entries)), key=lambda i: lengths[i])
  total_seconds = sum(lengths) / rate
  say(
      f"tokenizing {len(entries)} utterances ({total_seconds / 3600:.2f} h) on "
      f"{len(jax.devices())} device(s); {len(skipped)} unreadable"
  )
  results: dict[int, object] = {}
  done_seconds = 0.0
  meter = ProgressMeter(
      "tokenize",
      total_seconds,
      unit="s of audio",
      report=progress,
      every_seconds=progress_every_seconds,
  )
  for begin in range(0, len(order), batch_size):
    batch, waves = [], []
    for i in order[begin : begin + batch_size]:
      try:
        waves.append(_read(entries[i], rate, resample))
        batch.append(i)
      except (audio.AudioError, OSError) as e:
        skipped.append((entries[i].where, str(e)))
        meter.total -= lengths[i] / rate  # Its header was readable, its audio is not.
    if not batch:
      continue
    encoded = tokenizer.encode(
        waves,
        deduplicate=deduplicate,
        offset=offset,
        chunk_seconds=chunk_seconds,
        batch_size=batch_size,
    )
    results.update(zip(batch, encoded))
    done_seconds += sum(len(w) for w in waves) / rate
    meter.advance(
        sum(lengths[i] for i in batch) / rate, note=f"{len(results)}/{len(entries)} utterances"
    )
  kept = sorted(results)
  ids = [entries[i].id for i in kept]
  _write(out, fmt, ids, [results[i] for i in kept], deduplicate, tokenizer.vocab_size + offset)
  wall = time.perf_counter() - start
  summary = {
      "utterances": len(kept),
      "skipped": skipped,
      "audio_seconds": done_seconds,
      "wall_seconds": wall,
      "audio_seconds_per_second": done_seconds / max(wall, 1e-9),
      "devices": len(jax.devices()),
      "out": str(out),
  }
  say(
      f"wrote {len(kept)} utterances to {out}: {done_seconds:.1f} s of audio in {wall:.1f} s "
      f"({summary['audio_seconds_per_second']:.1f} s audio/s); skipped {len(skipped)}"
  )
  for where, reason in skipped:
    say(f"  skipped {where}: {reason}")
  return summary


def _write(out, fmt, ids, results, deduplicate, vocab_size) -> None:
  out = epath.Path(out)
  out.parent.mkdir(parents=True, exist_ok=True)
  if fmt == "km":
    units = [r[0] if deduplicate else r for r in results]
    km_labels.write_km(out, units, ids)
    km_labels.write_dict(out.parent, vocab_size)
    return
  lines = []
  for utt, r in zip(ids, results):
    record = {"id": utt}
    if deduplicate:
      record["units"], record["durations"] = r[0].tolist(), r[1].tolist()
    else:
      record["units"] = r.tolist()
    lines.append(json.dumps(record) + "\n")
  out.write_text("".join(lines))
