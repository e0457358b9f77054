"""Streaming from prepared data: parity with manifests, buckets, mixing, host masks,
determinism, mid-epoch restore, simulated processes, and global arrays."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile

from jaxdisco.data import bucketing
from jaxdisco.data import multihost
from jaxdisco.data import pipeline
from jaxdisco.data import prepare
from jaxdisco.data import sources
from jaxdisco.data import span_masks
from jaxdisco.models.config import conv_output_length

SR = 16000
# 24 utterances from 0.1 s to 0.56 s: spread over three buckets.
LENGTHS = [1600 + 320 * k for k in range(24)]
CONV = ((8, 10, 5), (8, 3, 2), (8, 2, 2))  # 20x downsampling, like a tiny wav2vec.


def ints(i: int, length: int) -> np.ndarray:
  return ((i + 1) * 256 + np.arange(length) % 256).astype(np.int16)


def row_id(row: np.ndarray) -> int:
  return int(round(float(row[0]) * 32768)) // 256 - 1


@pytest.fixture(scope='module')
def corpora(tmp_path_factory):
  """(manifest path, prepared dir) of the same 24 utterances."""
  base = tmp_path_factory.mktemp('stream')
  (base / 'audio').mkdir()
  for i, n in enumerate(LENGTHS):
    soundfile.write(base / 'audio' / f'u{i:02d}.flac', ints(i, n), SR, subtype='PCM_16')
  manifest = base / 'train.tsv'
  manifest.write_text('audio\n' + ''.join(f'u{i:02d}.flac\t{n}\n' for i, n in enumerate(LENGTHS)))
  prepare.prepare(
      sources.open_source(manifest),
      base / 'prepared',
      num_shards=2,
      num_workers=1,
      progress=lambda _: None,
  )
  return manifest, base / 'prepared'


def take(iterator, n):
  return [next(iterator) for _ in range(n)]


def assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert set(x) == set(y)
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def test_prepared_dir_streams_the_same_batches_as_the_manifest(corpora):
  manifest, prepared = corpora
  make = lambda data: list(
      pipeline.make_pretrain_dataset(data, batch_size=4, crop_samples=4000, seed=5, num_epochs=2)
  )
  assert_batches_equal(make(manifest), make(prepared))
  assert_batches_equal(
      list(pipeline.make_eval_dataset(manifest, batch_size=5, crop_samples=3000)),
      list(pipeline.make_eval_dataset(str(prepared), batch_size=5, crop_samples=3000)),
  )


def bucketed(prepared, **kwargs):
  args = dict(batch_size=4, crop_samples=8000, buckets=(3200, 5120), seed=1)
  args.update(kwargs)
  return pipeline.make_pretrain_dataset(prepared, **args)


def test_buckets_give_few_static_shapes_without_padding(corpora):
  _, prepared = corpora
  plan = bucketing.BucketPlan(LENGTHS, (3200, 5120, 8000), 4)
  batches = list(bucketed(prepared, num_epochs=1))
  assert len(batches) == len(plan) == sum(np.bincount(plan.assignment) // 4)
  shapes = {b['waveform'].shape for b in batches}
  assert shapes == {(4, 3200), (4, 5120), (4, 8000)}
  for batch in batches:
    crop = batch['waveform'].shape[1]
    for row, length in zip(batch['waveform'], batch['lengths']):
      i = row_id(row)
      # Crop-down: a row is padded only if its utterance is shorter than the
      # smallest bucket; otherwise it fills its bucket's length.
      assert length == min(LENGTHS[i], crop)
      assert LENGTHS[i] < 3200 or LENGTHS[i] >= crop
  ids = [row_id(r) for b in batches for r in b['waveform']]
  assert len(ids) == len(set(ids))  # Each utterance at most once per epoch.


def test_bucket_lengths_helper():
  assert bucketing.bucket_lengths(16000, 250000, 4) == (16000, 40000, 99840, 250000)
  assert bucketing.bucket_lengths(16000, 16000, 3) == (16000,)
  np.testing.assert_array_equal(
      bucketing.assign_buckets(np.array([10, 3200, 5000, 5120, 9999]), (3200, 5120, 8000)),
      [0, 0, 0, 1, 2],
  )
  with pytest.raises(ValueError, match='no bucket holds a full global batch'):
    bucketing.BucketPlan([100, 200], (100, 200), 3)


@pytest.mark.parametrize('restore_at', [1, 4, 9])
def test_bucketed_restore_mid_epoch_continues_exactly(corpora, restore_at):
  _, prepared = corpora
  spec = span_masks.MaskingSpec(CONV, mask_prob=0.5, mask_length=3, num_negatives=5)
  iterator = iter(bucketed(prepared, masking=spec))
  take(iterator, restore_at)
  state = json.loads(json.dumps(iterator.get_state()))
  expected = take(iterator, 6)
  restored = iter(bucketed(prepared, masking=spec))
  restored.set_state(state)
  assert_batches_equal(expected, take(restored, 6))
  # Same seed, fresh pipeline: same stream; another seed: another one.
  assert_batches_equal(
      take(iter(bucketed(prepared, masking=spec)), 3),
      take(iter(bucketed(prepared, masking=spec)), 3),
  )
  other = take(iter(bucketed(prepared, seed=2)), 3)
  assert [b['waveform'].shape for b in other] != [b['waveform'].shape for b in expected[:3]] or any(
      (x['waveform'] != y['waveform']).any() for x, y in zip(other, expected)
  )


def test_two_processes_same_bucket_disjoint_rows_covering_the_epoch(corpora):
  _, prepared = corpora
  per_process = [
      list(bucketed(prepared, batch_size=2, process_index=p, process_count=2, num_epochs=1))
      for p in range(2)
  ]
  assert len(per_process[0]) == len(per_process[1])
  seen = []
  for a, b in zip(*per_process):
    assert a['waveform'].shape == b['waveform'].shape  # One global shape per step.
    ids_a = {row_id(r) for r in a['waveform']}
    ids_b = {row_id(r) for r in b['waveform']}
    assert not ids_a & ids_b
    seen += [*ids_a, *ids_b]
  plan = bucketing.BucketPlan(LENGTHS, (3200, 5120, 8000), 4, seed=0)
  assert len(seen) == len(set(seen)) == len(plan) * 4  # Everything the epoch plans.

  # Unbucketed: disjoint manifest slices that cover all utterances.
  shards = [
      {
          row_id(r)
          for b in pipeline.make_pretrain_dataset(
              prepared,
              batch_size=3,
              crop_samples=4000,
              num_epochs=1,
              process_index=p,
              process_count=2,
          )
          for r in b['waveform']
      }
      for p in range(2)
  ]
  assert not shards[0] & shards[1] and shards[0] | shards[1] == set(range(24))


def test_mixing_follows_weights(corpora, tmp_path):
  manifest, prepared = corpora
  # A second source: 4 utterances with ids 100..103 (values from ints(100 + k)).
  (tmp_path / 'a').mkdir()
  for k in range(4):
    soundfile.write(tmp_path / 'a' / f'x{k}.wav', ints(100 + k, 2000), SR, subtype='PCM_16')
  other = tmp_path / 'other.tsv'
  other.write_text('a\n' + ''.join(f'x{k}.wav\t2000\n' for k in range(4)))
  ds = pipeline.make_pretrain_dataset(
      [prepared, other], mix_weights=[3, 1], batch_size=4, crop_samples=2000, seed=0
  )
  ids = [row_id(r) for b in take(iter(ds), 20) for r in b['waveform']]
  from_other = sum(i >= 100 for i in ids)
  assert from_other == len(ids) // 4
  assert {i for i in ids if i >= 100} == {100, 101, 102, 103}
  with pytest.raises(ValueError, match='num_epochs=None'):
    pipeline.make_pretrain_dataset([prepared, other], batch_size=4, crop_samples=2000, num_epochs=1)


def test_pipeline_masks_and_negatives(corpora):
  _, prepared = corpora
  spec = span_masks.MaskingSpec(CONV, mask_prob=0.4, mask_length=3, num_negatives=6)
  ds = pipeline.make_pretrain_dataset(
      prepared, batch_size=4, crop_samples=4000, seed=3, masking=spec
  )
  for batch in take(iter(ds), 4):
    frames = int(conv_output_length(4000, CONV))
    mask, negatives = batch['mask'], batch['negatives']
    assert mask.shape == (4, frames) and mask.dtype == bool
    assert negatives.shape == (4, frames, 6) and negatives.dtype == np.int32
    valid = conv_output_length((~batch['padding_mask']).sum(-1), CONV)
    counts = mask.sum(-1)
    assert (counts == counts[0]).all() and counts[0] >= 2  # require_same_masks
    for b in range(4):
      assert not mask[b, valid[b] :].any()
      for t in np.flatnonzero(mask[b]):
        assert mask[b, negatives[b, t]].all()  # Negatives are masked frames...
        assert (negatives[b, t] != t).all()  # ...other than the frame itself.


def test_pipeline_masks_are_the_jitted_loss_masks():
  """The host draw is the loss's own draw: same key, same masks and negatives; and the loss,
  given no masks, draws exactly those (so the two paths cannot drift apart)."""
  from conftest import tiny_model_config
  from jaxdisco.models.wav2vec2 import Wav2Vec2ForPretraining
  from jaxdisco.objectives import wav2vec2 as wav2vec2_objective
  from jaxdisco.methods.wav2vec2 import wav2vec2_defaults

  model_config = tiny_model_config(final_dim=16, latent_vars=8, dropout=0.0, layerdrop=0.0)
  objective = wav2vec2_defaults().objective
  objective.mask_prob, objective.mask_length = 0.65, 3
  objective.num_negatives, objective.cross_sample_negatives = 5, 2
  spec = span_masks.MaskingSpec.from_configs(model_config, objective)
  padding_mask = np.zeros((3, 4000), bool)
  padding_mask[1, 3000:] = True
  host = spec.draw(np.random.default_rng(7), padding_mask)
  key = jax.random.key(int(np.random.default_rng(7).integers(0, 2**31 - 1)))
  in_loss = wav2vec2_objective.draw_masks_and_negatives(
      key, jnp.asarray(padding_mask), model_config.conv_spec, objective
  )
  assert set(host) == set(in_loss) == {'mask', 'negatives', 'cross_negatives'}
  for name in host:
    np.testing.assert_array_equal(host[name], in_loss[name])

  wav = np.random.default_rng(0).standard_normal((3, 4000)).astype(np.float32)
  batch = {'waveform': jnp.asarray(wav), 'padding_mask': jnp.asarray(padding_mask)}
  params = Wav2Vec2ForPretraining(model_config).init(
      jax.random.key(0), batch['waveform'], None, host['mask'], temperature=2.0
  )
  loss = lambda b: wav2vec2_objective.pretraining_loss(
      params, b, key, 0, model_config=model_config, objective=objective, train=False
  )[1]
  draw_key = jax.random.split(key, 3)[0]  # The loss's own split of its key.
  drawn = wav2vec2_objective.draw_masks_and_negatives(
      draw_key, batch['padding_mask'], model_config.conv_spec, objective
  )
  given, own = loss({**batch, **drawn}), loss(batch)
  for name in ('loss', 'accuracy', 'masked_frames'):
    np.testing.assert_array_equal(given[name], own[name])


def test_global_batch_helpers():
  assert multihost.global_batch_to_local(32, process_count=4) == 8
  with pytest.raises(ValueError, match='multiple of the number of processes \\(3\\)'):
    multihost.global_batch_to_local(32, process_count=3)
  mesh = jax.make_mesh((len(jax.devices()),), ('data',))
  local = {
      'waveform': np.ones((len(jax.devices()) * 2, 80), np.float32),
      'lengths': np.arange(len(jax.devices()) * 2, dtype=np.int32),
  }
  global_batch = multihost.make_global_batch(local, mesh)
  assert global_batch['waveform'].shape == local['waveform'].shape
  np.testing.assert_array_equal(np.asarray(global_batch['lengths']), local['lengths'])
  assert global_batch['lengths'].sharding.spec == jax.sharding.PartitionSpec(('data',))


def test_label_crops_stay_aligned_with_audio_crops(tmp_path):
  """Utterances whose samples encode their own label index: every label in a batch must sit
  under the audio samples it was computed from, for manifest + .km and prepared sources."""
  rate, spl = 16000, 320  # 50 Hz labels
  lines, km = ['audio'], []
  (tmp_path / 'audio').mkdir()
  for u, frames in enumerate([40, 57, 23, 66]):
    labels = (np.arange(frames) + 7 * u) % 100
    samples = np.repeat(labels, spl).astype(np.float32) / 128.0  # sample value = label / 128
    soundfile.write(tmp_path / 'audio' / f'u{u}.wav', samples, rate, subtype='FLOAT')
    lines.append(f'u{u}.wav\t{len(samples)}')
    km.append(' '.join(map(str, labels)))
  (tmp_path / 'train.tsv').write_text('\n'.join(lines) + '\n')
  (tmp_path / 'train.km').write_text('\n'.join(km) + '\n')
  prepared = tmp_path / 'prepared'
  prepare.prepare(
      sources.open_source(tmp_path / 'train.tsv', labels=tmp_path / 'train.km'),
      prepared,
      num_shards=1,
      num_workers=0,
      options=prepare.PrepareOptions(label_rate=50),
  )
  for data, kwargs in ((tmp_path / 'train.tsv', {'labels': tmp_path / 'train.km'}), (prepared, {})):
    ds = pipeline.make_pretrain_dataset(
        data, batch_size=2, crop_samples=30 * spl, seed=1, label_rate=50, **kwargs
    )
    for batch in take(iter(ds), 6):
      assert batch['labels'].shape == (2, 30)
      for row in range(2):
        n = int((batch['labels'][row] >= 0).sum())
        assert n == batch['lengths'][row] // spl
        heard = np.round(batch['waveform'][row, : n * spl : spl] * 128).astype(int)
        np.testing.assert_array_equal(heard, batch['labels'][row, :n])
