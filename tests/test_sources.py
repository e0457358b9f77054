"""Sources (manifest, folder, TFDS, prepared), labels and record encoding.

The corpus is written on the fly: utterance `i` holds int16 values
`(i + 1) * 1024 + (t % 1024)`, so every source can be compared sample for
sample. The TFDS dataset is built in the test with a GeneratorBasedBuilder in
the array_record format and read back without TensorFlow.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import soundfile
import tensorflow_datasets as tfds

from jaxdisco.data import labels as labels_lib
from jaxdisco.data import records
from jaxdisco.data import sources

SR = 16000
LENGTHS = [1600, 3200, 2400, 4000, 1920]
LABEL_RATE = 50


def ints(i: int, length: int) -> np.ndarray:
  return ((i + 1) * 1024 + np.arange(length) % 1024).astype(np.int16)


def num_labels(length: int) -> int:
  return length * LABEL_RATE // SR


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
  """audio/spk{0,1}/uttN.{flac,wav}, train.tsv, train.km, dict.km.txt, train.wrd."""
  base = tmp_path_factory.mktemp('corpus')
  entries = []
  for i, length in enumerate(LENGTHS):
    name = f'spk{i % 2}/utt{i}.' + ('flac' if i % 2 else 'wav')
    (base / 'audio' / f'spk{i % 2}').mkdir(parents=True, exist_ok=True)
    soundfile.write(base / 'audio' / name, ints(i, length), SR, subtype='PCM_16')
    entries.append(f'{name}\t{length}')
  # Sorted by path, as the folder source lists them, so orders agree too.
  entries.sort()
  (base / 'train.tsv').write_text('audio\n' + '\n'.join(entries) + '\n')
  order = [int(e.split('utt')[1].split('.')[0]) for e in entries]
  km = [' '.join(str((i * 7 + t) % 5) for t in range(num_labels(LENGTHS[i]))) for i in order]
  (base / 'train.km').write_text('\n'.join(km) + '\n')
  (base / 'dict.km.txt').write_text(''.join(f'{k} 10\n' for k in range(5)))
  (base / 'train.wrd').write_text('\n'.join(f'WORDS OF {i}' for i in order) + '\n')
  return base


class TinySpeech(tfds.core.GeneratorBasedBuilder):
  """The test corpus as TFDS: int16 Tensor audio (Audio features need TensorFlow)."""

  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict(
            {
                'id': tfds.features.Text(),
                'speech': tfds.features.Tensor(shape=(None,), dtype=np.int16),
                'text': tfds.features.Text(),
            }
        ),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples()}

  def _generate_examples(self):
    for i, length in enumerate(LENGTHS):
      utterance_id = f'spk{i % 2}/utt{i}'
      yield utterance_id, {'id': utterance_id, 'speech': ints(i, length), 'text': f'WORDS OF {i}'}


@pytest.fixture(scope='module')
def tfds_dir(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp('tfds')
  TinySpeech(data_dir=str(data_dir), file_format='array_record').download_and_prepare()
  return data_dir


def as_dict(source) -> dict[str, np.ndarray]:
  out = {}
  for i in range(len(source)):
    entry = source[i]
    if isinstance(entry.audio, np.ndarray):
      out[entry.id] = entry.audio
    else:
      out[entry.id] = soundfile.read(entry.audio, dtype='int16')[0]
  return out


def expected_corpus() -> dict[str, np.ndarray]:
  return {f'spk{i % 2}/utt{i}': ints(i, n) for i, n in enumerate(LENGTHS)}


def assert_same_utterances(a: dict, b: dict):
  assert sorted(a) == sorted(b)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_tensorflow_is_not_installed():
  # The TFDS paths below must work without it; if it appears, this file
  # would no longer prove that.
  import importlib.util

  assert importlib.util.find_spec('tensorflow') is None


def test_manifest_folder_and_tfds_sources_agree(corpus, tfds_dir):
  manifest = sources.open_source(corpus / 'train.tsv')
  folder = sources.open_source(corpus / 'audio')
  tfds_source = sources.open_source('tfds:tiny_speech@train', tfds_data_dir=tfds_dir)
  raw = sources.TfdsSource('tiny_speech', split='train', data_dir=tfds_dir, raw=True)
  assert isinstance(folder, sources.FolderSource)
  assert isinstance(tfds_source, sources.TfdsSource)
  expected = expected_corpus()
  for source in (manifest, folder, tfds_source, raw):
    assert len(source) == len(LENGTHS)
    assert_same_utterances(as_dict(source), expected)
  # Manifest and folder list the same ids in the same (path) order.
  assert [manifest[i].id for i in range(5)] == [folder[i].id for i in range(5)]
  # The named dataset went through tfds.data_source, not the raw fallback.
  assert tfds_source._parse is None  # pylint: disable=protected-access
  entry = tfds_source[0]
  assert entry.transcript.startswith('WORDS OF') and entry.sample_rate == SR
  assert raw[0].transcript == entry.transcript


def test_every_source_prepares_to_the_same_shards(corpus, tfds_dir, tmp_path):
  from jaxdisco.data import prepare

  for k, spec in enumerate([corpus / 'train.tsv', corpus / 'audio', 'tfds:tiny_speech']):
    out = tmp_path / f'out{k}'
    prepare.prepare(
        sources.open_source(spec, tfds_data_dir=tfds_dir),
        out,
        num_shards=2,
        num_workers=1,
        progress=lambda _: None,
    )
    prepared = sources.open_source(out)
    assert isinstance(prepared, sources.PreparedSource)
    assert_same_utterances(as_dict(prepared), expected_corpus())


def test_sources_pickle_for_worker_processes(corpus, tfds_dir):
  for source in (
      sources.open_source(corpus / 'train.tsv'),
      sources.TfdsSource('tiny_speech', data_dir=tfds_dir, raw=True),
  ):
    clone = pickle.loads(pickle.dumps(source))
    assert clone[1].id == source[1].id


def test_manifest_source_labels_and_transcripts_align(corpus):
  source = sources.open_source(
      corpus / 'train.tsv',
      labels=corpus / 'train.km',
      dictionary=corpus / 'dict.km.txt',
      transcripts=corpus / 'train.wrd',
  )
  for k in range(len(source)):
    entry = source[k]
    i = int(entry.id.split('utt')[1])
    assert entry.transcript == f'WORDS OF {i}'
    assert entry.labels.dtype == np.int32
    np.testing.assert_array_equal(
        entry.labels, [(i * 7 + t) % 5 for t in range(num_labels(LENGTHS[i]))]
    )
    assert (
        labels_lib.alignment_problem(entry.num_samples, len(entry.labels), label_rate=LABEL_RATE)
        is None
    )
    assert f'train.km:{k + 1}' in entry.where and f'train.tsv:{k + 2}' in entry.where


def test_label_count_mismatch_names_the_file(corpus, tmp_path):
  short = tmp_path / 'short.km'
  short.write_text('\n'.join((corpus / 'train.km').read_text().splitlines()[:-1]) + '\n')
  with pytest.raises(labels_lib.LabelError, match=r'short.km: 4 label lines.*lists 5'):
    sources.open_source(corpus / 'train.tsv', labels=short)


def test_label_files_errors(tmp_path):
  (tmp_path / 'dict.txt').write_text('0 5\n1 5\n')
  (tmp_path / 'a.km').write_text('0 1\n1 7\n')
  with pytest.raises(labels_lib.LabelError, match=r"a.km:2: label '7'"):
    labels_lib.read_label_file(tmp_path / 'a.km', labels_lib.read_dictionary(tmp_path / 'dict.txt'))
  (tmp_path / 'bad.txt').write_text('0 5\n0 3\n')
  with pytest.raises(labels_lib.LabelError, match='bad.txt:2: duplicate'):
    labels_lib.read_dictionary(tmp_path / 'bad.txt')


def test_alignment_tolerance_is_one_frame():
  # 1 s at 16 kHz = 50 labels at 50 Hz; 49 and 51 pass, 48 and 52 do not.
  for n, ok in [(50, True), (49, True), (51, True), (48, False), (52, False)]:
    problem = labels_lib.alignment_problem(16000, n, label_rate=50)
    assert (problem is None) == ok, (n, problem)
  assert 'audio and label duration differ' in labels_lib.alignment_problem(16000, 60, label_rate=50)
  assert (
      labels_lib.check_alignment([16000, 16000], [np.zeros(50), np.zeros(10)], label_rate=50)[0][0]
      == 1
  )


@pytest.mark.parametrize('audio_format', records.AUDIO_FORMATS)
def test_record_round_trip(audio_format):
  utterance = records.Utterance(
      'a/b', ints(3, 1000), labels=np.arange(3, dtype=np.int32), transcript='HI THERE'
  )
  record = records.encode(utterance, audio_format)
  decoded = records.decode(record)
  assert decoded.id == 'a/b' and decoded.transcript == 'HI THERE'
  np.testing.assert_array_equal(decoded.samples, utterance.samples)
  np.testing.assert_array_equal(decoded.labels, [0, 1, 2])
  assert records.decode_header(record)['num_samples'] == 1000
  plain = records.decode(records.encode(records.Utterance('x', ints(0, 10))))
  assert plain.labels is None and plain.transcript is None
  with pytest.raises(records.RecordError, match='not a jaxdisco record'):
    records.decode(b'nope' + record[4:])
  with pytest.raises(records.RecordError, match='expected'):
    records.decode(record[:-2])


def test_float_int16_conversion_is_exact_for_pcm16():
  x = np.array([-32768, -1, 0, 1, 32767], np.int16)
  np.testing.assert_array_equal(records.float_to_int16(records.int16_to_float(x)), x)
  assert records.float_to_int16(np.array([1.5, -1.5], np.float32)).tolist() == [32767, -32768]


def test_tfds_audio_feature_dataset_reads_without_tensorflow(tfds_dir, tmp_path):
  """LibriSpeech's `speech` is a tfds.features.Audio, whose construction imports
  TensorFlow; the source then reads the array_record files itself."""
  import json
  import shutil
  # A copy under a name no builder class is registered for, so TFDS has to
  # restore the features from features.json (as for a user's librispeech).
  data_dir = tmp_path / 'tfds'
  version_dir = data_dir / 'tiny_audio' / '1.0.0'
  shutil.copytree(tfds_dir / 'tiny_speech' / '1.0.0', version_dir)
  for path in version_dir.iterdir():
    path.rename(version_dir / path.name.replace('tiny_speech', 'tiny_audio'))
  info = version_dir / 'dataset_info.json'
  info.write_text(info.read_text().replace('tiny_speech', 'tiny_audio'))
  # From features.json with Tensor/Text features: tfds.data_source itself.
  plain = sources.open_source('tfds:tiny_audio', tfds_data_dir=data_dir)
  assert plain._parse is None  # pylint: disable=protected-access
  assert_same_utterances(as_dict(plain), expected_corpus())

  features = version_dir / 'features.json'
  spec = json.loads(features.read_text())
  spec['featuresDict']['features']['speech'] = {
      'pythonClassName': 'tensorflow_datasets.core.features.audio_feature.Audio',
      'audio': {
          'shape': {'dimensions': ['-1']},
          'dtype': 'int16',
          'sampleRate': '16000',
          'encoding': 'none',
      },
  }
  features.write_text(json.dumps(spec))
  source = sources.open_source('tfds:tiny_audio', tfds_data_dir=data_dir)
  assert source._parse is not None  # pylint: disable=protected-access  # The fallback.
  assert_same_utterances(as_dict(source), expected_corpus())
