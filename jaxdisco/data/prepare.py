"""Prepare once: decode a source into 16 kHz int16 ArrayRecord shards + an index.

Output directory layout::

    plan.json                                  source, shard count, options (for restarts)
    shard-00000-of-00004.array_record          one record per utterance (see records.py)
    shard-00000-of-00004.json                  that shard's ids/lengths/skips: its done marker
    ...
    index.json                                 ids, lengths, shard and offset of every utterance
    summary.json                               hours, utterances, skipped files with reasons

The source's entries are cut into `num_shards` contiguous index ranges, and a
`multiprocessing` pool (spawned processes, safe next to JAX's threads) writes
each shard to `NAME.tmp`, then renames it; the shard's `.json` is written last
(also via a rename) and marks it done. A killed run therefore leaves finished
shards complete and at most some `.tmp` files, which the next run deletes
before redoing only the unfinished shards. `index.json` and `summary.json` are
rebuilt from the shard `.json` files at the end of every run.

Per-utterance problems (unreadable/corrupt, empty, shorter than
`min_samples`, a sample rate other than `sample_rate` without `resample`,
labels whose count does not fit the audio at `label_rate`) are either skipped
and listed in the summary with their reason (`on_error='skip'`, the default)
or stop the run with a `PrepareError` naming the file and manifest/label line
(`on_error='fail'`). A label file whose line count differs from the manifest
always stops the run (in `ManifestSource`): no line could be trusted.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import multiprocessing
import os
import sys
import tempfile
import time
from typing import Callable, Optional

from etils import epath
import numpy as np

from jaxdisco.data import audio
from jaxdisco.data import labels as labels_lib
from jaxdisco.data import records
from jaxdisco.data import sources as sources_lib
from jaxdisco.data.manifest import PathLike
from jaxdisco.errors import UserError
from jaxdisco.progress import format_seconds

PLAN_FILE = 'plan.json'
SUMMARY_FILE = 'summary.json'
# Peak level of `normalize=True`: -1 dBFS leaves headroom for resampling ripple.
_PEAK = 10 ** (-1 / 20)
# Skip reasons, as they appear in summary.json.
REASONS = ('unreadable', 'empty', 'too_short', 'sample_rate', 'label_length')


class PrepareError(UserError, RuntimeError):
  """The prepare run stopped: a bad input under on_error='fail', or a bad plan."""


@dataclasses.dataclass(frozen=True)
class PrepareOptions:
  """How utterances are decoded and checked.

  Attributes:
    sample_rate: output rate in Hz.
    resample: resample other rates (soxr); if False they are skipped/failed.
    normalize: peak-normalize each utterance to -1 dBFS before int16
      quantization. (Zero-mean/unit-variance normalization, the LARGE recipe's
      `normalize`, cannot be stored as int16; it stays a pipeline option.)
    min_samples: utterances shorter than this (after resampling) are skipped.
    audio_format: `pcm16` (fast reads) or `flac` (about half the bytes).
    on_error: `skip` (list in summary.json) or `fail` (raise PrepareError).
    label_rate: frame rate of labels in Hz (HuBERT: 50).
    label_tolerance_frames: allowed label-count mismatch, in frames.
  """

  sample_rate: int = 16000
  resample: bool = False
  normalize: bool = False
  min_samples: int = 1
  audio_format: str = 'pcm16'
  on_error: str = 'skip'
  label_rate: float = 50.0
  label_tolerance_frames: float = 1.0

  def __post_init__(self):
    if self.on_error not in ('skip', 'fail'):
      raise ValueError(f"on_error must be 'skip' or 'fail', got {self.on_error!r}")
    if self.audio_format not in records.AUDIO_FORMATS:
      raise ValueError(
          f'audio_format must be one of {records.AUDIO_FORMATS}, got {self.audio_format!r}'
      )


class _Skip(Exception):
  """An utterance is skipped (or, under on_error='fail', fails) for `reason`."""

  def __init__(self, reason: str, message: str):
    super().__init__(message)
    self.reason = reason


def shard_name(index: int, num_shards: int) -> str:
  return f'shard-{index:05d}-of-{num_shards:05d}.array_record'


def shard_ranges(num_entries: int, num_shards: int) -> list[tuple[int, int]]:
  """Contiguous `[start, stop)` ranges, sizes differing by at most one."""
  bounds = [num_entries * k // num_shards for k in range(num_shards + 1)]
  return list(zip(bounds[:-1], bounds[1:]))


def default_num_shards(num_entries: int) -> int:
  """About 1000 utterances (~3 h of LibriSpeech, ~350 MB int16) per shard."""
  return max(1, -(-num_entries // 1000))


def _decode(entry: sources_lib.Entry, options: PrepareOptions) -> np.ndarray:
  """An entry's audio as float32 `[samples]` at `options.sample_rate`; raises _Skip."""
  if isinstance(entry.audio, np.ndarray):
    waveform = entry.audio
    if waveform.dtype == np.int16:
      waveform = records.int16_to_float(waveform)
    if waveform.ndim == 2:  # [samples, channels]
      waveform = waveform.mean(axis=1)
    waveform = np.asarray(waveform, np.float32)
    rate = entry.sample_rate or options.sample_rate
    if waveform.shape[0] == 0:
      raise _Skip('empty', 'expected at least 1 sample, found 0 (empty audio)')
  else:
    try:
      rate, frames, _ = audio.audio_info(entry.audio)
    except audio.AudioError as e:
      raise _Skip('unreadable', str(e)) from e
    if frames == 0:
      raise _Skip('empty', 'expected at least 1 sample, found 0 (empty audio)')
    if rate != options.sample_rate and not options.resample:
      raise _Skip(
          'sample_rate',
          f'sample rate {rate} Hz, expected {options.sample_rate} Hz (pass --resample)',
      )
    try:
      # read_audio mixes down to mono and resamples (soxr) when asked.
      return audio.read_audio(
          entry.audio, sample_rate=options.sample_rate, resample=options.resample
      )
    except audio.AudioError as e:
      raise _Skip('unreadable', str(e)) from e
  if rate != options.sample_rate:
    if not options.resample:
      raise _Skip(
          'sample_rate',
          f'sample rate {rate} Hz, expected {options.sample_rate} Hz (pass --resample)',
      )
    import soxr  # pylint: disable=g-import-not-at-top

    waveform = np.asarray(soxr.resample(waveform, rate, options.sample_rate), np.float32)
  return waveform


def prepare_utterance(entry: sources_lib.Entry, options: PrepareOptions) -> records.Utterance:
  """Decodes and checks one entry. Raises `_Skip` with a reason from REASONS."""
  waveform = _decode(entry, options)
  if waveform.shape[0] < options.min_samples:
    raise _Skip(
        'too_short',
        f'{waveform.shape[0]} samples, shorter than min_samples={options.min_samples}',
    )
  if options.normalize:
    peak = float(np.abs(waveform).max())
    if peak > 0:
      waveform = waveform * (_PEAK / peak)
  if entry.labels is not None:
    problem = labels_lib.alignment_problem(
        waveform.shape[0],
        len(entry.labels),
        label_rate=options.label_rate,
        sample_rate=options.sample_rate,
        tolerance_frames=options.label_tolerance_frames,
    )
    if problem:
      raise _Skip('label_length', problem)
  return records.Utterance(
      id=entry.id,
      samples=records.float_to_int16(waveform),
      sample_rate=options.sample_rate,
      labels=entry.labels,
      transcript=entry.transcript,
  )


def _write_atomically(path: epath.Path, text: str) -> None:
  tmp = path.parent / (path.name + '.tmp')
  tmp.write_text(text)
  tmp.replace(path)  # Atomic on POSIX; replace, since reruns rewrite it.


def _write_shard(job: tuple) -> dict:
  """Writes one shard (in a worker process); returns its metadata."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top

  source, out_dir, shard_index, num_shards, start, stop, options = job
  out_dir = epath.Path(out_dir)
  name = shard_name(shard_index, num_shards)
  # ArrayRecord writes local files; remote (gs://) outputs are written
  # locally first and copied.
  local = '://' not in str(out_dir)
  tmp_dir = None if local else tempfile.mkdtemp(prefix='jaxdisco-prepare-')
  tmp_path = (out_dir if local else epath.Path(tmp_dir)) / (name + '.tmp')
  # group_size:1 makes every record its own chunk: true random access, which
  # is what a shuffled pipeline does (the default groups 65536 records).
  writer = array_record_module.ArrayRecordWriter(str(tmp_path), 'group_size:1')
  meta = {
      'shard': name,
      'range': [start, stop],
      'id': [],
      'num_samples': [],
      'num_labels': [],
      'skipped': [],
  }
  try:
    for i in range(start, stop):
      entry = source[i]
      try:
        utterance = prepare_utterance(entry, options)
      except _Skip as skip:
        if options.on_error == 'fail':
          raise PrepareError(
              f'{entry.where}: {skip.reason}: {skip} (--on-error=skip would skip it)'
          ) from None
        meta['skipped'].append(
            {'id': entry.id, 'where': entry.where, 'reason': skip.reason, 'message': str(skip)}
        )
        continue
      writer.write(records.encode(utterance, options.audio_format))
      meta['id'].append(utterance.id)
      meta['num_samples'].append(utterance.num_samples)
      meta['num_labels'].append(None if utterance.labels is None else len(utterance.labels))
  finally:
    writer.close()
  if not local:
    tmp_path.copy(out_dir / (name + '.tmp'), overwrite=True)
    tmp_path.unlink()
    os.rmdir(tmp_dir)
  (out_dir / (name + '.tmp')).replace(out_dir / name)
  _write_atomically(out_dir / (name.removesuffix('.array_record') + '.json'), json.dumps(meta))
  return meta


def _meta_path(out_dir: epath.Path, index: int, num_shards: int) -> epath.Path:
  return out_dir / (shard_name(index, num_shards).removesuffix('.array_record') + '.json')


def prepare(
    source: sources_lib.Source,
    out_dir: PathLike,
    *,
    num_shards: Optional[int] = None,
    num_workers: Optional[int] = None,
    options: PrepareOptions = PrepareOptions(),
    progress: Optional[Callable[[str], None]] = None,
) -> dict:
  """Writes `source` into `out_dir` as ArrayRecord shards; resumes a killed run.

  Args:
    source: any `sources.Source` (see `sources.open_source`).
    out_dir: output directory (local or `gs://`); created if needed.
    num_shards: default about 1000 utterances per shard. A restarted run must
      use the same count (it is recorded in plan.json).
    num_workers: processes; default `os.cpu_count()`. 1 runs in-process.
    options: decoding and checking options.
    progress: called with one progress line per finished shard (default:
      print to stderr).

  Returns:
    The summary written to summary.json.

  Raises:
    PrepareError: a bad input under `on_error='fail'` (naming the file and
      line), duplicate ids, or a restart with a different source/options.
  """
  progress = progress or (lambda line: print(line, file=sys.stderr, flush=True))
  out_dir = epath.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  num_entries = len(source)
  num_shards = num_shards or default_num_shards(num_entries)
  if num_shards > num_entries:
    num_shards = num_entries
  plan = {
      'source': source.describe(),
      'num_entries': num_entries,
      'num_shards': num_shards,
      'options': dataclasses.asdict(options),
  }
  plan_path = out_dir / PLAN_FILE
  if plan_path.exists():
    previous = json.loads(plan_path.read_text())
    if previous != plan:
      changed = sorted(k for k in plan if previous.get(k) != plan[k])
      raise PrepareError(
          f'{out_dir} holds a run with a different plan ({", ".join(changed)} differ: '
          f'was {[previous.get(k) for k in changed]}, now {[plan[k] for k in changed]}); '
          'use a fresh --out or the same flags to resume'
      )
  else:
    _write_atomically(plan_path, json.dumps(plan, indent=1))
  for stale in out_dir.glob('shard-*.tmp'):  # A killed run's half-written shards.
    stale.unlink()

  ranges = shard_ranges(num_entries, num_shards)
  todo = [k for k in range(num_shards) if not _meta_path(out_dir, k, num_shards).exists()]
  jobs = [(source, str(out_dir), k, num_shards, *ranges[k], options) for k in todo]
  remaining = sum(ranges[k][1] - ranges[k][0] for k in todo)
  if len(todo) < num_shards:
    progress(
        f'prepare-data: {num_shards - len(todo)} of {num_shards} shards already done '
        f'in {out_dir}; resuming'
    )
  t0 = time.perf_counter()
  done_entries, done_shards, skipped = 0, num_shards - len(todo), 0

  def report(meta):
    nonlocal done_entries, done_shards, skipped
    done_entries += meta['range'][1] - meta['range'][0]
    done_shards += 1
    skipped += len(meta['skipped'])
    elapsed = time.perf_counter() - t0
    rate = done_entries / max(elapsed, 1e-9)
    eta = (remaining - done_entries) / max(rate, 1e-9)
    progress(
        f'prepare-data: shard {done_shards}/{num_shards} | {done_entries}/{remaining} '
        f'utterances ({skipped} skipped) | {rate:.1f} utt/s | ETA {format_seconds(eta)}'
    )

  num_workers = min(num_workers or os.cpu_count() or 1, max(len(jobs), 1))
  if num_workers <= 1:
    for job in jobs:
      report(_write_shard(job))
  else:
    # spawn, not fork: forking a process that has started JAX's (or grain's)
    # threads can deadlock the child.
    with multiprocessing.get_context('spawn').Pool(num_workers) as pool:
      for meta in pool.imap_unordered(_write_shard, jobs):
        report(meta)
  return _write_index_and_summary(
      source,
      out_dir,
      num_shards,
      options,
      wall_seconds=time.perf_counter() - t0,
      reused_shards=num_shards - len(todo),
  )


def _write_index_and_summary(
    source,
    out_dir: epath.Path,
    num_shards: int,
    options: PrepareOptions,
    *,
    wall_seconds: float,
    reused_shards: int,
) -> dict:
  metas = [json.loads(_meta_path(out_dir, k, num_shards).read_text()) for k in range(num_shards)]
  columns = collections.defaultdict(list)
  shard_files, skipped, first_shard_of = [], [], {}
  for meta in metas:
    skipped.extend(meta['skipped'])
    if not meta['id']:
      continue  # ArrayRecord readers reject empty files; leave it out of the index.
    for offset, utterance_id in enumerate(meta['id']):
      if utterance_id in first_shard_of:
        raise PrepareError(
            f'duplicate utterance id {utterance_id!r} (in {first_shard_of[utterance_id]} '
            f'and {meta["shard"]}); ids must be unique'
        )
      first_shard_of[utterance_id] = meta['shard']
      columns['shard'].append(len(shard_files))
      columns['offset'].append(offset)
    columns['id'].extend(meta['id'])
    columns['num_samples'].extend(meta['num_samples'])
    columns['num_labels'].extend(meta['num_labels'])
    shard_files.append(meta['shard'])
  has_labels = any(n is not None for n in columns['num_labels'])
  if not has_labels:
    columns.pop('num_labels', None)
  total_samples = int(sum(columns['num_samples']))
  index = {
      'format': 'jaxdisco-prepared-v1',
      'sample_rate': options.sample_rate,
      'audio_format': options.audio_format,
      'label_rate': options.label_rate if has_labels else None,
      'shards': shard_files,
      'utterances': dict(columns),
  }
  _write_atomically(out_dir / sources_lib.INDEX_FILE, json.dumps(index))
  summary = {
      'source': source.describe(),
      'out': str(out_dir),
      'utterances': len(columns['id']),
      'hours': total_samples / options.sample_rate / 3600,
      'seconds': total_samples / options.sample_rate,
      'skipped': len(skipped),
      'skipped_by_reason': dict(collections.Counter(s['reason'] for s in skipped)),
      'skipped_files': skipped,
      'shards': num_shards,
      'shards_reused': reused_shards,
      'wall_seconds': wall_seconds,
      'options': dataclasses.asdict(options),
  }
  _write_atomically(out_dir / SUMMARY_FILE, json.dumps(summary, indent=1))
  return summary
