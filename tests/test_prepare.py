"""prepare-data: the demo corpus round trip, restarts, and every bad-input case."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from jaxdisco.assets import demo_corpus_dir
from jaxdisco.data import audio
from jaxdisco.data import labels as labels_lib
from jaxdisco.data import manifest as manifest_lib
from jaxdisco.data import prepare
from jaxdisco.data import records
from jaxdisco.data import sources

SR = 16000


def test_demo_corpus_round_trips_with_worker_processes(tmp_path):
  manifest = manifest_lib.read_manifest(demo_corpus_dir() / 'train.tsv')
  source = sources.open_source(manifest.path, transcripts=demo_corpus_dir() / 'train.wrd')
  lines = []
  summary = prepare.prepare(
      source, tmp_path / 'out', num_shards=3, num_workers=2, progress=lines.append
  )
  assert summary['utterances'] == len(manifest) and summary['skipped'] == 0
  assert summary['hours'] == pytest.approx(manifest.total_seconds(SR) / 3600)
  assert len(lines) == 3 and 'utt/s' in lines[-1] and 'ETA' in lines[-1]
  assert json.loads((tmp_path / 'out' / 'summary.json').read_text()) == summary

  prepared = sources.PreparedSource(tmp_path / 'out')
  np.testing.assert_array_equal(prepared.num_samples, manifest.num_samples)
  index = prepared.index['utterances']
  assert index['shard'][0] == 0 and index['offset'][:2] == [0, 1]
  words = (demo_corpus_dir() / 'train.wrd').read_text().splitlines()
  for i in range(len(manifest)):
    entry = prepared[i]
    assert entry.id == manifest.utterance_id(i)
    assert entry.transcript == words[i]
    # Bit-exact: FLAC PCM_16 -> float -> int16 loses nothing.
    expected = records.float_to_int16(audio.read_audio(manifest.audio_path(i)))
    np.testing.assert_array_equal(entry.audio, expected)
  assert not list((tmp_path / 'out').glob('*.tmp'))


def test_flac_records_and_cli(tmp_path):
  out = tmp_path / 'flac'
  result = subprocess.run(
      [
          sys.executable,
          '-m',
          'jaxdisco.cli',
          'prepare-data',
          f'--source={demo_corpus_dir() / "valid.tsv"}',
          f'--out={out}',
          '--shards=2',
          '--workers=1',
          '--audio-format=flac',
      ],
      capture_output=True,
      text=True,
      check=False,
  )
  assert result.returncode == 0, result.stderr
  assert 'Prepared 16 utterances' in result.stdout
  prepared = sources.PreparedSource(out)
  manifest = manifest_lib.read_manifest(demo_corpus_dir() / 'valid.tsv')
  np.testing.assert_array_equal(
      prepared[5].audio, records.float_to_int16(audio.read_audio(manifest.audio_path(5)))
  )


class _FlakySource:
  """Wraps a source; raises (like a killed worker) at entry `fail_at` while armed."""

  def __init__(self, source, fail_at):
    self.source, self.fail_at, self.armed = source, fail_at, True

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    if self.armed and i == self.fail_at:
      raise KeyboardInterrupt('killed')
    return self.source[i]

  def describe(self):
    return self.source.describe()


def test_killed_run_resumes_without_redoing_finished_shards(tmp_path):
  source = _FlakySource(sources.open_source(demo_corpus_dir() / 'valid.tsv'), fail_at=13)
  out = tmp_path / 'out'
  with pytest.raises(KeyboardInterrupt):
    prepare.prepare(source, out, num_shards=4, num_workers=1, progress=lambda _: None)
  # Shards 0-2 finished; shard 3 (entries 12-15) left only a temp file.
  done = sorted(p.name for p in out.glob('shard-*.array_record'))
  assert done == [prepare.shard_name(k, 4) for k in range(3)]
  assert (out / (prepare.shard_name(3, 4) + '.tmp')).exists()
  assert not (out / 'index.json').exists()
  mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob('shard-*')}

  source.armed = False
  lines = []
  summary = prepare.prepare(source, out, num_shards=4, num_workers=1, progress=lines.append)
  assert summary['shards_reused'] == 3 and summary['utterances'] == 16
  assert '3 of 4 shards already done' in lines[0]
  for name, mtime in mtimes.items():
    if name.startswith('shard-0000') and not name.startswith('shard-00003'):
      assert (out / name).stat().st_mtime_ns == mtime, f'{name} was rewritten'
  assert not list(out.glob('*.tmp'))
  assert len(sources.PreparedSource(out)) == 16

  with pytest.raises(prepare.PrepareError, match='num_shards differ'):
    prepare.prepare(source, out, num_shards=2, num_workers=1, progress=lambda _: None)


@pytest.fixture(scope='module')
def bad_corpus(tmp_path_factory):
  """Good files plus one of each problem, with a matching .km label file.

  Lines (manifest order): 0 good, 1 corrupt, 2 empty, 3 too short, 4 at
  22.05 kHz, 5 good with labels of the wrong length, 6 good, 7 missing.
  """
  base = tmp_path_factory.mktemp('bad')
  (base / 'audio').mkdir()
  rng = np.random.default_rng(0)
  good = lambda n: (rng.integers(-3000, 3000, n)).astype(np.int16)
  soundfile.write(base / 'audio/good0.wav', good(8000), SR, subtype='PCM_16')
  (base / 'audio/corrupt.flac').write_bytes(rng.bytes(4096))
  soundfile.write(base / 'audio/empty.wav', np.zeros(0, np.int16), SR, subtype='PCM_16')
  soundfile.write(base / 'audio/short.wav', good(100), SR, subtype='PCM_16')
  soundfile.write(base / 'audio/rate22k.wav', good(11025), 22050, subtype='PCM_16')
  soundfile.write(base / 'audio/badlabels.wav', good(8000), SR, subtype='PCM_16')
  soundfile.write(base / 'audio/good6.flac', good(9600), SR, subtype='PCM_16')
  files = [
      ('good0.wav', 8000),
      ('corrupt.flac', 4096),
      ('empty.wav', 1),
      ('short.wav', 100),
      ('rate22k.wav', 11025),
      ('badlabels.wav', 8000),
      ('good6.flac', 9600),
      ('missing.wav', 500),
  ]
  (base / 'train.tsv').write_text('audio\n' + ''.join(f'{name}\t{n}\n' for name, n in files))
  label_counts = [25, 13, 0, 0, 25, 40, 30, 2]  # Line 5 (badlabels) expects 25.
  (base / 'train.km').write_text(''.join(' '.join(['3'] * c) + '\n' for c in label_counts))
  return base


def _source(base, labels=True):
  return sources.open_source(base / 'train.tsv', labels=base / 'train.km' if labels else None)


def test_bad_inputs_are_skipped_with_reasons_and_good_data_kept(bad_corpus, tmp_path):
  options = prepare.PrepareOptions(min_samples=1000)
  summary = prepare.prepare(
      _source(bad_corpus),
      tmp_path / 'out',
      num_shards=2,
      num_workers=1,
      options=options,
      progress=lambda _: None,
  )
  reasons = {s['id']: s['reason'] for s in summary['skipped_files']}
  assert reasons == {
      'corrupt': 'unreadable',
      'empty': 'empty',
      'short': 'too_short',
      'rate22k': 'sample_rate',
      'badlabels': 'label_length',
      'missing': 'unreadable',
  }
  assert summary['skipped_by_reason'] == {
      'unreadable': 2,
      'empty': 1,
      'too_short': 1,
      'sample_rate': 1,
      'label_length': 1,
  }
  by_id = {s['id']: s for s in summary['skipped_files']}
  assert 'train.tsv:3' in by_id['corrupt']['where']
  assert 'train.km:6' in by_id['badlabels']['where']
  assert 'audio and label duration differ' in by_id['badlabels']['message']
  assert '22050 Hz' in by_id['rate22k']['message']
  assert 'not found' in by_id['missing']['message']

  prepared = sources.PreparedSource(tmp_path / 'out')
  assert prepared.ids == ['good0', 'good6']
  assert prepared.index['utterances']['num_labels'] == [25, 30]
  np.testing.assert_array_equal(prepared[1].labels, np.full(30, 3))
  np.testing.assert_array_equal(
      prepared[0].audio, soundfile.read(bad_corpus / 'audio/good0.wav', dtype='int16')[0]
  )


def test_resample_keeps_the_22k_file(bad_corpus, tmp_path):
  options = prepare.PrepareOptions(resample=True, min_samples=1000)
  summary = prepare.prepare(
      _source(bad_corpus), tmp_path / 'out', num_workers=1, options=options, progress=lambda _: None
  )
  assert 'rate22k' in sources.PreparedSource(tmp_path / 'out').ids
  assert 'sample_rate' not in summary['skipped_by_reason']
  rate22k = sources.PreparedSource(tmp_path / 'out')
  assert rate22k.num_samples[rate22k.ids.index('rate22k')] == 8000  # 0.5 s at 16 kHz


@pytest.mark.parametrize(
    'first_bad, fragment',
    [
        ('corrupt', 'train.tsv:3'),  # The first bad line, named with its file.
    ],
)
def test_on_error_fail_names_file_and_line(bad_corpus, tmp_path, first_bad, fragment):
  options = prepare.PrepareOptions(on_error='fail', min_samples=1000)
  with pytest.raises(prepare.PrepareError) as error:
    prepare.prepare(
        _source(bad_corpus),
        tmp_path / 'out',
        num_shards=1,
        num_workers=1,
        options=options,
        progress=lambda _: None,
    )
  message = str(error.value)
  assert fragment in message and f'{first_bad}.flac' in message and 'unreadable' in message
  assert not (tmp_path / 'out' / 'index.json').exists()
  assert not list((tmp_path / 'out').glob('*.array_record'))  # Nothing half-written kept.


def test_on_error_fail_for_each_case(bad_corpus, tmp_path):
  """Every problem stops a fail-mode run when it is the only one."""
  base = bad_corpus
  for k, (name, reason) in enumerate(
      [
          ('empty.wav', 'empty'),
          ('short.wav', 'too_short'),
          ('rate22k.wav', 'sample_rate'),
          ('badlabels.wav', 'label_length'),
      ]
  ):
    n = soundfile.info(base / 'audio' / name).frames or 1
    labels = 40 if name == 'badlabels.wav' else round(n * 50 / SR)
    (tmp_path / f'm{k}.tsv').write_text(f'{base / "audio"}\n{name}\t{n}\n')
    (tmp_path / f'm{k}.km').write_text(' '.join(['1'] * labels) + '\n')
    source = sources.open_source(tmp_path / f'm{k}.tsv', labels=tmp_path / f'm{k}.km')
    with pytest.raises(prepare.PrepareError, match=rf'm{k}.tsv:2 .*{name}.*{reason}'):
      prepare.prepare(
          source,
          tmp_path / f'out{k}',
          num_workers=1,
          progress=lambda _: None,
          options=prepare.PrepareOptions(on_error='fail', min_samples=1000),
      )


def test_label_line_count_mismatch_stops_before_writing(bad_corpus, tmp_path):
  (tmp_path / 'short.km').write_text('1 1\n' * 7)
  with pytest.raises(labels_lib.LabelError, match='short.km: 7 label lines.*lists 8'):
    sources.open_source(bad_corpus / 'train.tsv', labels=tmp_path / 'short.km')
  result = subprocess.run(
      [
          sys.executable,
          '-m',
          'jaxdisco.cli',
          'prepare-data',
          f'--source={bad_corpus / "train.tsv"}',
          f'--labels={tmp_path / "short.km"}',
          f'--out={tmp_path / "out"}',
      ],
      capture_output=True,
      text=True,
      check=False,
  )
  assert result.returncode == 2
  assert 'error:' in result.stderr and 'short.km: 7 label lines' in result.stderr
  assert 'Traceback' not in result.stderr
  assert not (tmp_path / 'out').exists()
