"""Tests for jaxdisco.data: audio reading, manifests and grain pipelines.

The corpus is written on the fly. Utterance `i` holds PCM_16 values
`(i + 1) * 1024 + (t % 1024)` (scaled by 1/32768), exactly representable in
WAV and FLAC, so any row of a batch tells which utterance it came from
(`value // 1024 - 1`) and whether it is a contiguous crop (a +1 ramp).
"""

from __future__ import annotations

import collections
import json

from etils import epath
import numpy as np
import pytest
import soundfile

from jaxdisco.data import audio
from jaxdisco.data import manifest as manifest_lib
from jaxdisco.data import pipeline

SR = 16000
# 12 utterances, some shorter and some longer than CROP.
LENGTHS = [600, 900, 1200, 1500, 1800, 2100, 2400, 2700, 3000, 800, 1700, 2500]
CROP = 1600
BATCH = 4
STEPS_PER_EPOCH = len(LENGTHS) // BATCH


def utterance_ints(i: int, length: int) -> np.ndarray:
  return ((i + 1) * 1024 + np.arange(length) % 1024).astype(np.int16)


def utterance(i: int, length: int) -> np.ndarray:
  return utterance_ints(i, length).astype(np.float32) / 32768


def row_utterance_id(row: np.ndarray) -> int:
  return int(round(float(row[0]) * 32768)) // 1024 - 1


def write_manifest(path, root, entries) -> epath.Path:
  lines = [str(root)] + [f'{name}\t{n}' for name, n in entries]
  path = epath.Path(path)
  path.write_text('\n'.join(lines) + '\n')
  return path


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
  """A 12-utterance corpus (mixed FLAC/WAV) with a relative-root manifest."""
  base = tmp_path_factory.mktemp('corpus')
  (base / 'audio' / 'spk').mkdir(parents=True)
  entries = []
  for i, length in enumerate(LENGTHS):
    name = f'spk/utt{i:02d}.' + ('flac' if i % 2 else 'wav')
    soundfile.write(base / 'audio' / name, utterance_ints(i, length), SR, subtype='PCM_16')
    entries.append((name, length))
  return write_manifest(base / 'train.tsv', 'audio', entries)


@pytest.fixture(scope='module')
def odd_files(tmp_path_factory):
  """Problem files: 22.05 kHz, corrupt, stereo, zero-length."""
  base = tmp_path_factory.mktemp('odd')
  t = np.arange(2205) / 22050
  soundfile.write(base / 'demo.flac', 0.5 * np.sin(2 * np.pi * 440 * t), 22050)
  (base / 'corrupt.flac').write_bytes(np.random.default_rng(0).bytes(4096))
  left = utterance(0, 1000)
  right = -0.25 * np.ones(1000, np.float32)
  soundfile.write(
      base / 'stereo.wav',
      np.stack([left, right], axis=1),
      SR,
      subtype='FLOAT',
  )
  soundfile.write(base / 'empty.wav', np.zeros(0, np.float32), SR)
  return base


# --- audio -------------------------------------------------------------------


def test_read_audio_values_wav_and_flac(corpus):
  manifest = manifest_lib.read_manifest(corpus)
  for i in (0, 1):  # utt00 is WAV, utt01 is FLAC
    waveform = audio.read_audio(manifest.audio_path(i))
    assert waveform.dtype == np.float32
    assert waveform.shape == (LENGTHS[i],)
    np.testing.assert_array_equal(waveform, utterance(i, LENGTHS[i]))
  # str paths work as well as epath.Path.
  assert audio.read_audio(str(manifest.audio_path(0))).shape == (LENGTHS[0],)


def test_read_audio_averages_stereo(odd_files):
  waveform = audio.read_audio(odd_files / 'stereo.wav')
  assert waveform.shape == (1000,)
  np.testing.assert_allclose(waveform, (utterance(0, 1000) - 0.25) / 2)


def test_read_audio_resamples_on_request(odd_files):
  waveform = audio.read_audio(odd_files / 'demo.flac', resample=True)
  assert waveform.dtype == np.float32
  assert abs(waveform.shape[0] - 1600) <= 2  # 0.1 s at 16 kHz
  assert np.abs(waveform).max() <= 1.0
  assert np.abs(waveform).max() > 0.4  # Still the 0.5-amplitude sine.


def test_read_audio_rejects_wrong_sample_rate(odd_files):
  with pytest.raises(audio.AudioError) as error:
    audio.read_audio(odd_files / 'demo.flac')
  message = str(error.value)
  assert 'demo.flac' in message
  assert '22050 Hz' in message and 'expected 16000 Hz' in message
  assert 'resample' in message


@pytest.mark.parametrize(
    'name, expected_fragment',
    [
        ('missing.flac', 'not found'),
        ('corrupt.flac', 'soundfile failed'),
        ('empty.wav', 'found 0'),
    ],
)
def test_read_audio_errors_name_the_file(odd_files, name, expected_fragment):
  with pytest.raises(audio.AudioError) as error:
    audio.read_audio(odd_files / name)
  assert name in str(error.value)
  assert expected_fragment in str(error.value)


def test_audio_info(odd_files):
  assert audio.audio_info(odd_files / 'demo.flac') == (22050, 2205, 1)
  assert audio.audio_info(odd_files / 'stereo.wav') == (SR, 1000, 2)
  for name in ('corrupt.flac', 'missing.wav'):
    with pytest.raises(audio.AudioError, match=name):
      audio.audio_info(odd_files / name)


# --- manifest ----------------------------------------------------------------


def test_read_manifest_relative_root(corpus):
  manifest = manifest_lib.read_manifest(corpus)
  assert len(manifest) == len(LENGTHS)
  assert manifest.root == corpus.parent / 'audio'
  assert manifest.files[1] == 'spk/utt01.flac'
  assert manifest.num_samples.dtype == np.int64
  np.testing.assert_array_equal(manifest.num_samples, LENGTHS)
  assert manifest.audio_path(1) == corpus.parent / 'audio/spk/utt01.flac'
  assert manifest.utterance_id(1) == 'utt01'
  assert manifest.total_seconds(SR) == pytest.approx(sum(LENGTHS) / SR)


def test_read_manifest_absolute_and_gcs_roots(tmp_path):
  absolute = write_manifest(tmp_path / 'a.tsv', '/data/audio', [('x.flac', 5)])
  assert manifest_lib.read_manifest(absolute).root == epath.Path('/data/audio')
  gcs = write_manifest(tmp_path / 'g.tsv', 'gs://bucket/audio', [('x.flac', 5)])
  root = manifest_lib.read_manifest(gcs).root
  assert str(root) == 'gs://bucket/audio'


@pytest.mark.parametrize(
    'text, line, fragment',
    [
        ('', 1, 'empty manifest'),
        ('audio\n', 2, 'no audio entries'),
        ('audio\na.flac\t10\nb.flac 10\n', 3, 'expected 2 tab-separated'),
        ('audio\na.flac\t10\textra\n', 2, 'found 3'),
        ('audio\na.flac\tten\n', 2, "found 'ten'"),
        ('audio\na.flac\t0\n', 2, "found '0'"),
        ('audio\na.flac\t-5\n', 2, 'positive integer'),
        ('audio\na.flac\t10\nb.flac\t10\na.flac\t12\n', 4, 'duplicate path'),
    ],
)
def test_manifest_errors_name_path_and_line(tmp_path, text, line, fragment):
  path = tmp_path / 'bad.tsv'
  path.write_text(text)
  with pytest.raises(manifest_lib.ManifestError) as error:
    manifest_lib.read_manifest(path)
  assert f'bad.tsv:{line}:' in str(error.value)
  assert fragment in str(error.value)


def test_missing_manifest(tmp_path):
  with pytest.raises(manifest_lib.ManifestError, match='nothere.tsv'):
    manifest_lib.read_manifest(tmp_path / 'nothere.tsv')


def test_verify_manifest(corpus, odd_files, tmp_path):
  manifest_lib.verify_manifest(manifest_lib.read_manifest(corpus))

  bad = write_manifest(
      tmp_path / 'bad.tsv',
      odd_files,
      [('demo.flac', 2205), ('stereo.wav', 999), ('gone.flac', 10)],
  )
  with pytest.raises(manifest_lib.ManifestError) as error:
    manifest_lib.verify_manifest(manifest_lib.read_manifest(bad))
  message = str(error.value)
  assert 'bad.tsv' in message and '3 problem(s)' in message
  assert 'demo.flac: sample rate 22050 Hz, expected 16000 Hz' in message
  assert 'stereo.wav: 1000 samples in the file, manifest says 999' in message
  assert 'gone.flac' in message and 'not found' in message


def test_verify_manifest_truncates_long_lists(odd_files, tmp_path):
  entries = [(f'gone{i}.flac', 10) for i in range(15)]
  path = write_manifest(tmp_path / 'many.tsv', odd_files, entries)
  with pytest.raises(manifest_lib.ManifestError) as error:
    manifest_lib.verify_manifest(manifest_lib.read_manifest(path))
  assert 'and 5 more problems' in str(error.value)
  assert 'gone9.flac' in str(error.value)
  assert 'gone10.flac' not in str(error.value)


# --- pretraining pipeline ----------------------------------------------------


def take(iterator, n):
  return [next(iterator) for _ in range(n)]


def batch_ids(batch) -> list[int]:
  return [row_utterance_id(row) for row in batch['waveform']]


def test_pretrain_batches_shapes_masks_and_crops(corpus):
  ds = pipeline.make_pretrain_dataset(corpus, batch_size=BATCH, crop_samples=CROP, num_epochs=1)
  batches = list(ds)
  assert len(batches) == STEPS_PER_EPOCH
  seen = []
  for batch in batches:
    assert set(batch) == {'waveform', 'padding_mask', 'lengths'}
    assert batch['waveform'].shape == (BATCH, CROP)
    assert batch['waveform'].dtype == np.float32
    assert batch['padding_mask'].shape == (BATCH, CROP)
    assert batch['padding_mask'].dtype == bool
    assert batch['lengths'].shape == (BATCH,)
    assert batch['lengths'].dtype == np.int32
    for row, mask, length in zip(batch['waveform'], batch['padding_mask'], batch['lengths']):
      i = row_utterance_id(row)
      seen.append(i)
      assert length == min(LENGTHS[i], CROP)
      np.testing.assert_array_equal(mask, np.arange(CROP) >= length)
      assert not row[length:].any()
      ints = np.round(row[:length] * 32768).astype(np.int64)
      if LENGTHS[i] <= CROP:  # Padded: the whole utterance, unshifted.
        np.testing.assert_array_equal(ints, utterance_ints(i, LENGTHS[i]))
      else:  # Cropped: a contiguous piece of the ramp.
        assert set(np.diff(ints) % 1024) == {1}
  assert sorted(seen) == list(range(len(LENGTHS)))


def test_same_seed_same_batches_different_seed_different_order(corpus):
  def first_batches(seed):
    ds = pipeline.make_pretrain_dataset(corpus, batch_size=BATCH, crop_samples=CROP, seed=seed)
    return take(iter(ds), 2 * STEPS_PER_EPOCH)

  a, b, c = first_batches(0), first_batches(0), first_batches(1)
  for x, y in zip(a, b):
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])
  assert [batch_ids(x) for x in a] != [batch_ids(x) for x in c]


def test_epochs_are_reshuffled(corpus):
  ds = pipeline.make_pretrain_dataset(
      corpus, batch_size=BATCH, crop_samples=CROP, num_epochs=3, seed=7
  )
  ids = [i for batch in ds for i in batch_ids(batch)]
  epochs = [ids[k : k + len(LENGTHS)] for k in range(0, len(ids), len(LENGTHS))]
  assert len(epochs) == 3
  for epoch in epochs:
    assert sorted(epoch) == list(range(len(LENGTHS)))
  assert epochs[0] != epochs[1] and epochs[1] != epochs[2]


def test_unshuffled_order_is_manifest_order(corpus):
  ds = pipeline.make_pretrain_dataset(
      corpus, batch_size=BATCH, crop_samples=CROP, shuffle=False, num_epochs=1
  )
  assert [i for batch in ds for i in batch_ids(batch)] == list(range(len(LENGTHS)))


@pytest.mark.parametrize('restore_at', [1, STEPS_PER_EPOCH, STEPS_PER_EPOCH + 1])
def test_checkpoint_restore_continues_exactly(corpus, restore_at):
  def make():
    return pipeline.make_pretrain_dataset(corpus, batch_size=BATCH, crop_samples=CROP, seed=3)

  iterator = iter(make())
  take(iterator, restore_at)
  # The state must survive a round trip through JSON (how it is saved).
  state = json.loads(json.dumps(iterator.get_state()))
  expected = take(iterator, 2 * STEPS_PER_EPOCH)

  restored = iter(make())
  restored.set_state(state)
  for want, got in zip(expected, take(restored, 2 * STEPS_PER_EPOCH)):
    for key in want:
      np.testing.assert_array_equal(want[key], got[key])


def test_processes_see_disjoint_shards_covering_all(corpus):
  shards = []
  for process_index in range(2):
    ds = pipeline.make_pretrain_dataset(
        corpus,
        batch_size=2,
        crop_samples=CROP,
        num_epochs=1,
        process_index=process_index,
        process_count=2,
    )
    shards.append({i for batch in ds for i in batch_ids(batch)})
  assert not shards[0] & shards[1]
  assert shards[0] | shards[1] == set(range(len(LENGTHS)))


def test_min_samples_filters_before_reading(corpus):
  ds = pipeline.make_pretrain_dataset(
      corpus, batch_size=1, crop_samples=CROP, num_epochs=1, min_samples=2000
  )
  ids = {i for batch in ds for i in batch_ids(batch)}
  assert ids == {i for i, n in enumerate(LENGTHS) if n >= 2000}
  with pytest.raises(ValueError, match='min_samples=5000'):
    pipeline.make_pretrain_dataset(corpus, batch_size=1, crop_samples=CROP, min_samples=5000)


def test_normalize_uses_valid_samples_only(corpus):
  ds = pipeline.make_pretrain_dataset(
      corpus,
      batch_size=BATCH,
      crop_samples=CROP,
      num_epochs=1,
      shuffle=False,
      normalize=True,
  )
  batch = next(iter(ds))  # Utterances 0-3, all shorter than CROP.
  for i, (row, length) in enumerate(zip(batch['waveform'], batch['lengths'])):
    raw = utterance(i, LENGTHS[i])
    # layer_norm semantics, eps 1e-5 as in the reference.
    expected = (raw - raw.mean()) / np.sqrt(raw.var() + 1e-5)
    np.testing.assert_allclose(row[:length], expected, rtol=1e-4, atol=1e-5)
    assert not row[length:].any()  # Padding stays exactly zero.

  # On louder audio (variance >> eps) that is zero mean, unit variance.
  loud = np.random.default_rng(0).normal(0.1, 0.3, 5000).astype(np.float32)
  normalized = pipeline.normalize_waveform(loud)
  assert abs(normalized.mean()) < 1e-5
  assert normalized.std() == pytest.approx(1.0, abs=1e-3)


# --- eval pipeline -----------------------------------------------------------


def test_eval_covers_every_utterance_once(corpus):
  batch_size = 5  # 12 utterances -> 3 batches, 3 dummy rows.
  batches = list(pipeline.make_eval_dataset(corpus, batch_size=batch_size, crop_samples=CROP))
  assert len(batches) == 3
  counts = collections.Counter()
  for batch in batches:
    assert batch['waveform'].shape == (batch_size, CROP)
    assert batch['example_mask'].dtype == bool
    for k in range(batch_size):
      if not batch['example_mask'][k]:
        assert batch['index'][k] == -1 and batch['lengths'][k] == 0
        assert batch['padding_mask'][k].all()
        assert not batch['waveform'][k].any()
        continue
      i = int(batch['index'][k])
      counts[i] += 1
      length = min(LENGTHS[i], CROP)
      assert batch['lengths'][k] == length
      # Cropped from the start: the first `length` samples of the utterance.
      np.testing.assert_array_equal(
          batch['waveform'][k, :length], utterance(i, LENGTHS[i])[:length]
      )
  assert counts == {i: 1 for i in range(len(LENGTHS))}
  assert (~batches[-1]['example_mask']).sum() == 3


def test_eval_processes_get_equal_batch_counts(corpus):
  per_process = [
      list(
          pipeline.make_eval_dataset(
              corpus,
              batch_size=4,
              crop_samples=CROP,
              process_index=p,
              process_count=5,
          )
      )
      for p in range(5)
  ]
  assert {len(batches) for batches in per_process} == {1}
  indices = [
      int(i)
      for batches in per_process
      for batch in batches
      for i in batch['index'][batch['example_mask']]
  ]
  assert sorted(indices) == list(range(len(LENGTHS)))
