"""grain input pipelines: raw waveforms cropped into fixed-shape batches.

Pretraining pipeline, per process::

    manifest indices -> drop short utterances -> this process's slice
      -> shuffle (new order every epoch) -> repeat -> read audio
      -> random crop / zero-pad to crop_samples -> batch -> IterDataset

Every batch has the same shapes, so the jitted train step compiles once.
Everything up to `to_iter_dataset()` is a random-access `MapDataset`, so the
iterator's whole state is one integer (the next batch index): checkpointing it
with `it.get_state()` and restoring with `it.set_state()` resumes with exactly
the next batch, crops included, because the crop RNG is keyed by the example's
position in the stream rather than by how many examples were drawn before.

Batches are dicts of numpy arrays:
  waveform: float32 `[batch, crop_samples]`, zero where padded.
  padding_mask: bool `[batch, crop_samples]`, True where a sample is padding
    (the inverse of Hugging Face's `attention_mask`).
  lengths: int32 `[batch]`, number of valid samples per row.
Eval batches also carry:
  example_mask: bool `[batch]`, False for dummy rows filling the last batch.
  index: int32 `[batch]`, the manifest index of each row (-1 for dummies).
With `masking=` (see `span_masks.MaskingSpec`), pretraining batches also carry:
  mask: bool `[batch, frames]`, negatives: int32 `[batch, frames, K]` (and
  cross_negatives), drawn on the host so the jitted loss uses them as inputs.

Sources: a manifest (`Manifest` or `.tsv` path) or a directory written by
`jaxdisco prepare-data` (`sources.PreparedSource` or its path). Several sources
(a list) are mixed with `mix_weights`, each shuffled and repeated on its own,
so the proportions hold at every point of the stream.

Length bucketing (`buckets=`): instead of one crop length, a few (see
`bucketing.py`); each batch is one bucket, and every process holds the same
bucket at the same step, so global arrays have one shape per step and jit
compiles one program per bucket.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence, Union

import grain
import numpy as np

from jaxdisco.data import audio
from jaxdisco.data import bucketing
from jaxdisco.data import labels as labels_lib
from jaxdisco.data import manifest as manifest_lib
from jaxdisco.data import records
from jaxdisco.data import sources as sources_lib
from jaxdisco.data import span_masks
from jaxdisco.data.normalize import normalize_waveform

ManifestLike = Union[manifest_lib.Manifest, sources_lib.PreparedSource, manifest_lib.PathLike]


class _ManifestReader:
  """Decodes utterance `i` of a manifest from its audio file."""

  def __init__(self, manifest, sample_rate: int, resample: bool, labels=None):
    self.manifest = manifest
    self._labels = labels  # Optional per-utterance int32 arrays, manifest order.
    self.name = str(manifest.path)
    self.num_samples = manifest.num_samples
    self._sample_rate = sample_rate
    self._resample = resample

  def __len__(self) -> int:
    return len(self.manifest)

  def read(self, index: int) -> np.ndarray:
    return audio.read_audio(
        self.manifest.audio_path(index),
        sample_rate=self._sample_rate,
        resample=self._resample,
    )

  def read_item(self, index: int):
    """(waveform, labels or None)."""
    return self.read(index), None if self._labels is None else self._labels[index]


class _PreparedReader:
  """Reads utterance `i` of a prepared directory (one ArrayRecord read)."""

  def __init__(self, source: sources_lib.PreparedSource, sample_rate: int):
    if source.sample_rate != sample_rate:
      raise ValueError(
          f'{source.directory} was prepared at {source.sample_rate} Hz, the pipeline '
          f'expects {sample_rate} Hz (prepare again with --sample-rate={sample_rate})'
      )
    self.source = source
    self.name = str(source.directory)
    self.num_samples = source.num_samples

  def __len__(self) -> int:
    return len(self.source)

  def read(self, index: int) -> np.ndarray:
    return records.int16_to_float(self.source.read(index).samples)

  def read_item(self, index: int):
    """(waveform, labels or None): one record read for both."""
    utterance = self.source.read(index)
    return records.int16_to_float(utterance.samples), utterance.labels


def _as_reader(data: ManifestLike, sample_rate: int, resample: bool, labels=None):
  if isinstance(data, sources_lib.PreparedSource):
    return _PreparedReader(data, sample_rate)
  if not isinstance(data, manifest_lib.Manifest):
    if sources_lib.is_prepared_dir(data):
      return _PreparedReader(sources_lib.PreparedSource(data), sample_rate)
    data = manifest_lib.read_manifest(data)
  if labels is not None:
    labels = labels_lib.read_label_file(labels, expected_lines=len(data))
  return _ManifestReader(data, sample_rate, resample, labels)


def _derive_seed(seed: int, *salt: int) -> int:
  """Hashes `seed` (plus salt) into an unrelated 32-bit seed.

  grain's shuffle uses `seed + epoch` as the per-epoch seed, so raw seeds 0
  and 1 would give the same order shifted by one epoch; hashing first makes
  nearby user seeds produce unrelated streams.
  """
  return int(np.random.SeedSequence([seed, *salt]).generate_state(1)[0])


def _fit_to_length(waveform: np.ndarray, crop_samples: int, start: int) -> dict[str, np.ndarray]:
  """Crops `waveform[start:start+crop_samples]` or zero-pads it to fit.

  Returns one example: waveform `[crop_samples]`, padding_mask
  `[crop_samples]`, lengths `[]`.
  """
  segment = waveform[start : start + crop_samples]
  length = segment.shape[0]
  padded = np.zeros(crop_samples, np.float32)
  padded[:length] = segment
  padding_mask = np.ones(crop_samples, bool)
  padding_mask[:length] = False
  return {
      'waveform': padded,
      'padding_mask': padding_mask,
      'lengths': np.int32(length),
  }


class _ReadAndCrop:
  """Reads utterance `index` and crops it; picklable for grain workers.

  With `samples_per_label` (sample_rate / label_rate, e.g. 320 for 50 Hz HuBERT labels), crops
  start on a label boundary and carry `labels` int32 `[crop_samples // samples_per_label]`, -1
  past the end of the utterance's labels.
  """

  def __init__(self, reader, crop_samples: int, normalize: bool, samples_per_label: int = 0):
    self._reader = reader
    self._crop_samples = crop_samples
    self._normalize = normalize
    self._samples_per_label = samples_per_label

  def _read(self, index: int) -> np.ndarray:
    waveform = self._reader.read(index)
    # Normalize the whole utterance before cropping, as the reference does,
    # so a crop's statistics don't depend on where it was cut.
    return normalize_waveform(waveform) if self._normalize else waveform

  def random_crop(self, index: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    step = self._samples_per_label
    if not step:
      waveform = self._read(index)
      excess = waveform.shape[0] - self._crop_samples
      start = int(rng.integers(0, excess + 1)) if excess > 0 else 0
      return _fit_to_length(waveform, self._crop_samples, start)
    waveform, labels = self._reader.read_item(index)
    if labels is None:
      raise ValueError(f'{self._reader.name}: utterance {index} has no labels')
    if self._normalize:
      waveform = normalize_waveform(waveform)
    excess = waveform.shape[0] - self._crop_samples
    start = step * int(rng.integers(0, excess // step + 1)) if excess > 0 else 0
    example = _fit_to_length(waveform, self._crop_samples, start)
    example['labels'] = _crop_labels(labels, start // step, self._crop_samples // step)
    return example

  def crop_from_start(self, index: int) -> dict[str, np.ndarray]:
    step = self._samples_per_label
    if index < 0:  # A dummy row that pads the last eval batch.
      example = _fit_to_length(np.zeros(0, np.float32), self._crop_samples, 0)
      if step:
        example['labels'] = np.full(self._crop_samples // step, -1, np.int32)
      example.update(example_mask=np.bool_(False), index=np.int32(-1))
      return example
    if not step:
      example = _fit_to_length(self._read(index), self._crop_samples, 0)
    else:
      waveform, labels = self._reader.read_item(index)
      if self._normalize:
        waveform = normalize_waveform(waveform)
      example = _fit_to_length(waveform, self._crop_samples, 0)
      example['labels'] = _crop_labels(labels, 0, self._crop_samples // step)
    example.update(example_mask=np.bool_(True), index=np.int32(index))
    return example


def _crop_labels(labels, first: int, count: int) -> np.ndarray:
  """labels[first:first + count] as int32, -1 past the end."""
  out = np.full(count, -1, np.int32)
  chunk = np.asarray(labels[first:][:count], np.int32)
  out[: len(chunk)] = chunk
  return out


class _BucketedBatch:
  """Global step -> this process's batch of one bucket (see bucketing.py)."""

  def __init__(
      self,
      reader,
      plan: bucketing.BucketPlan,
      normalize: bool,
      seed: int,
      process_index: int,
      process_count: int,
      samples_per_label: int = 0,
  ):
    self._reader = reader
    self._plan = plan
    self._samples_per_label = samples_per_label
    self._normalize = normalize
    self._seed = seed
    self._process_index = process_index
    self._process_count = process_count

  def __call__(self, step: int, _) -> dict[str, np.ndarray]:
    rows, crop = self._plan.batch(step, self._process_index, self._process_count)
    rng = np.random.default_rng([self._seed, step])
    cropper = _ReadAndCrop(self._reader, crop, self._normalize, self._samples_per_label)
    examples = [cropper.random_crop(int(i), rng) for i in rows]
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


class _AddMasks:
  """random_map: adds host-drawn span masks and negatives to a batch."""

  def __init__(self, spec: span_masks.MaskingSpec):
    self._spec = spec

  def __call__(self, batch, rng: np.random.Generator):
    return span_masks.add_masks(batch, rng, self._spec)


def _read_options(num_threads: int, prefetch_batches: int) -> grain.ReadOptions:
  # grain's default buffer is 500 elements; with batches of raw audio that is
  # gigabytes of host memory per process, so keep it to a few batches.
  return grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch_batches)


def make_pretrain_dataset(
    manifest: Union[ManifestLike, Sequence[ManifestLike]],
    *,
    batch_size: int,
    crop_samples: int,
    min_samples: int = 0,
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: Optional[int] = None,
    normalize: bool = False,
    process_index: int = 0,
    process_count: int = 1,
    sample_rate: int = 16000,
    resample: bool = False,
    num_threads: int = 8,
    prefetch_batches: int = 8,
    buckets: Union[None, int, Sequence[int]] = None,
    mix_weights: Optional[Sequence[float]] = None,
    masking: Optional[span_masks.MaskingSpec] = None,
    num_workers: int = 0,
    labels: Optional[manifest_lib.PathLike] = None,
    label_rate: Optional[float] = None,
) -> grain.IterDataset:
  """Builds this process's stream of fixed-shape training batches.

  Args:
    manifest: a `Manifest`, a manifest path, a prepared directory (or
      `PreparedSource`), or a list of these to mix.
    batch_size: utterances per batch on this process (the global batch is
      `batch_size * process_count`; see `multihost.global_batch_to_local`).
    crop_samples: every row is cropped (randomly) or zero-padded to this; with
      `buckets`, the largest bucket.
    min_samples: utterances shorter than this (per the manifest/index) are
      dropped.
    seed: seeds the shuffle, the crop offsets and the masks.
    shuffle: shuffle utterances, differently in every epoch.
    num_epochs: passes over the data; None repeats forever (required when
      mixing). With a finite number, process shards may differ in size by one
      utterance, so train for a fixed number of steps rather than until the
      stream ends.
    normalize: zero mean / unit variance per utterance (the reference's
      `normalize=True`, used for the LARGE models).
    process_index: this process's index (`jax.process_index()`).
    process_count: number of processes (`jax.process_count()`).
    sample_rate: expected sample rate in Hz.
    resample: resample files at another rate instead of raising.
    num_threads: threads reading batches in parallel.
    prefetch_batches: batches buffered ahead of the consumer.
    buckets: None for one crop length; an int for that many lengths spaced
      geometrically from `max(min_samples, crop_samples // 4)` to
      `crop_samples`; or the lengths themselves (all <= `crop_samples`, which
      is added as the largest).
    mix_weights: one weight per source when `manifest` is a list (default
      uniform).
    masking: draw span masks / negatives in the pipeline (see
      `span_masks.MaskingSpec.from_configs`).
    labels: a `.km` label file (one line per manifest entry) for a manifest
      source; prepared directories carry their labels already.
    label_rate: labels per second (HuBERT: 100 for MFCC targets, 50 for
      model units); with it, crops start on label boundaries and batches
      carry `labels` int32 `[batch, crop_samples * label_rate / sample_rate]`
      (-1 past an utterance's end).
    num_workers: >0 reads in that many grain worker processes
      (`mp_prefetch`); worth it when decoding FLAC is the bottleneck. grain's
      workers need absl flags parsed (true under the `jaxdisco` CLI; in a
      notebook call `absl.flags.FLAGS.mark_as_parsed()` first).

  Returns:
    An `IterDataset`; `iter()` of it is checkpointable with
    `get_state()` / `set_state()` (or grain's Orbax handlers). Batches: see
    the module docstring.

  Raises:
    ValueError: bad arguments, or `min_samples` drops every utterance.
  """
  if batch_size <= 0 or crop_samples <= 0:
    raise ValueError(
        f'batch_size and crop_samples must be positive, got {batch_size=}, ' f'{crop_samples=}'
    )
  if not 0 <= process_index < process_count:
    raise ValueError(f'need 0 <= {process_index=} < {process_count=}')
  many = isinstance(manifest, (list, tuple))
  data = list(manifest) if many else [manifest]
  if mix_weights is not None and len(mix_weights) != len(data):
    raise ValueError(f'{len(mix_weights)} mix_weights for {len(data)} sources')
  if len(data) > 1 and num_epochs is not None:
    raise ValueError('mixing several sources needs num_epochs=None (each repeats on its own)')
  samples_per_label = 0
  if label_rate:
    samples_per_label = int(round(sample_rate / label_rate))
    if samples_per_label * label_rate != sample_rate or crop_samples % samples_per_label:
      raise ValueError(
          f'label_rate={label_rate} Hz must divide sample_rate={sample_rate} and '
          f'crop_samples={crop_samples} into whole labels'
      )
  readers = [_as_reader(d, sample_rate, resample, labels) for d in data]
  bucket_set = None
  if buckets is not None:
    if isinstance(buckets, int):
      smallest = min(max(min_samples, crop_samples // 4, 1), crop_samples)
      bucket_set = bucketing.bucket_lengths(smallest, crop_samples, buckets)
    else:
      if max(buckets) > crop_samples:
        raise ValueError(f'buckets {tuple(buckets)} exceed crop_samples={crop_samples}')
      bucket_set = tuple(sorted(set(buckets) | {crop_samples}))

  streams = []
  for k, reader in enumerate(readers):
    source_seed = seed if k == 0 else _derive_seed(seed, 100 + k)
    keep = _keep_long_enough(reader, min_samples)
    if bucket_set is None:
      streams.append(
          _example_stream(
              reader,
              keep,
              crop_samples=crop_samples,
              normalize=normalize,
              seed=source_seed,
              shuffle=shuffle,
              num_epochs=num_epochs,
              process_index=process_index,
              process_count=process_count,
              samples_per_label=samples_per_label,
          )
      )
    else:
      plan = bucketing.BucketPlan(
          reader.num_samples[keep],
          bucket_set,
          batch_size * process_count,
          seed=_derive_seed(source_seed, 3),
          shuffle=shuffle,
      )
      batches = _BucketedBatch(
          _Subset(reader, keep),
          plan,
          normalize,
          _derive_seed(source_seed, 1, process_index),
          process_index,
          process_count,
          samples_per_label,
      )
      ds = grain.MapDataset.range(len(plan)).repeat(num_epochs).map_with_index(batches)
      streams.append(ds)

  ds = streams[0] if len(streams) == 1 else grain.MapDataset.mix(streams, mix_weights)
  if bucket_set is None:
    ds = ds.batch(batch_size, drop_remainder=True)
  if masking is not None:
    ds = ds.random_map(_AddMasks(masking), seed=_derive_seed(seed, 2, process_index))
  ds = ds.to_iter_dataset(_read_options(num_threads, prefetch_batches))
  if num_workers > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return ds


class _Subset:
  """A reader restricted to `indices` (so bucket plans index densely)."""

  def __init__(self, reader, indices: np.ndarray):
    self._reader = reader
    self._indices = indices
    self.name = reader.name

  def read(self, index: int) -> np.ndarray:
    return self._reader.read(int(self._indices[index]))

  def read_item(self, index: int):
    return self._reader.read_item(int(self._indices[index]))


def _keep_long_enough(reader, min_samples: int) -> np.ndarray:
  # Filtering on the manifest's lengths up front (rather than grain's
  # `filter`, which leaves holes) keeps the dataset dense, so every process
  # shard and every batch is a plain index range and state is one integer.
  keep = np.flatnonzero(reader.num_samples >= min_samples)
  dropped = len(reader) - len(keep)
  if dropped:
    logging.info(
        '%s: dropped %d of %d utterances shorter than min_samples=%d',
        reader.name,
        dropped,
        len(reader),
        min_samples,
    )
  if not len(keep):
    raise ValueError(
        f'{reader.name}: all {len(reader)} utterances are shorter than '
        f'min_samples={min_samples} (longest has '
        f'{reader.num_samples.max()} samples)'
    )
  return keep


def _example_stream(
    reader,
    keep: np.ndarray,
    *,
    crop_samples: int,
    normalize: bool,
    seed: int,
    shuffle: bool,
    num_epochs: Optional[int],
    process_index: int,
    process_count: int,
    samples_per_label: int = 0,
) -> grain.MapDataset:
  """This process's shuffled, repeated, cropped examples of one source."""
  shard = keep[process_index::process_count].tolist()
  if not shard:
    raise ValueError(
        f'{reader.name}: process {process_index} of {process_count} got no '
        f'utterances ({len(keep)} utterances in total)'
    )
  cropper = _ReadAndCrop(reader, crop_samples, normalize, samples_per_label)
  ds = grain.MapDataset.source(shard)
  if shuffle:
    # Shuffle before repeat: grain folds the epoch number into the shuffle
    # seed, so each epoch is a fresh permutation of this shard.
    ds = ds.shuffle(seed=_derive_seed(seed, 0))
  ds = ds.repeat(num_epochs)
  # Crop RNG is keyed by (seed, position in the stream): deterministic,
  # resumable, different across epochs and across processes.
  return ds.random_map(cropper.random_crop, seed=_derive_seed(seed, 1, process_index))


def make_eval_dataset(
    manifest: ManifestLike,
    *,
    batch_size: int,
    crop_samples: int,
    normalize: bool = False,
    process_index: int = 0,
    process_count: int = 1,
    sample_rate: int = 16000,
    resample: bool = False,
    num_threads: int = 8,
    prefetch_batches: int = 8,
    labels: Optional[manifest_lib.PathLike] = None,
    label_rate: Optional[float] = None,
) -> grain.IterDataset:
  """Builds one deterministic pass over the manifest in fixed-shape batches.

  Each utterance is cropped from its start (or zero-padded) to
  `crop_samples`. The last batch is filled with dummy rows (all padding,
  `lengths` 0, `example_mask` False) so shapes stay static. With several
  processes every process yields the same number of batches, so collective
  ops in an eval step line up.

  Args:
    manifest: a `Manifest`, a manifest path, or a prepared directory.
    batch_size: rows per batch on this process.
    crop_samples: row length in samples.
    normalize: per-utterance zero mean / unit variance, as in training.
    process_index: this process's index.
    process_count: number of processes.
    sample_rate: expected sample rate in Hz.
    resample: resample files at another rate instead of raising.
    num_threads: threads reading batches in parallel.
    prefetch_batches: batches buffered ahead of the consumer.

  Returns:
    A finite `IterDataset` of batches with `example_mask` and `index` added
    (see the module docstring).
  """
  if batch_size <= 0 or crop_samples <= 0:
    raise ValueError(
        f'batch_size and crop_samples must be positive, got {batch_size=}, ' f'{crop_samples=}'
    )
  if not 0 <= process_index < process_count:
    raise ValueError(f'need 0 <= {process_index=} < {process_count=}')
  reader = _as_reader(manifest, sample_rate, resample, labels)
  samples_per_label = int(round(sample_rate / label_rate)) if label_rate else 0

  shard = list(range(process_index, len(reader), process_count))
  # Pad every process to the same whole number of batches (the largest
  # shard, rounded up); index -1 marks a dummy row.
  largest_shard = -(-len(reader) // process_count)
  num_batches = -(-largest_shard // batch_size)
  shard += [-1] * (num_batches * batch_size - len(shard))

  cropper = _ReadAndCrop(reader, crop_samples, normalize, samples_per_label)
  ds = grain.MapDataset.source(shard).map(cropper.crop_from_start)
  ds = ds.batch(batch_size, drop_remainder=True)
  return ds.to_iter_dataset(_read_options(num_threads, prefetch_batches))
