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
"""

from __future__ import annotations

import logging
from typing import Optional, Union

import grain
import numpy as np

from jaxdisco.data import audio
from jaxdisco.data import manifest as manifest_lib

ManifestLike = Union[manifest_lib.Manifest, manifest_lib.PathLike]

# Same epsilon as torch's layer_norm, which is how the reference normalizes.
_NORMALIZE_EPS = 1e-5


def _as_manifest(manifest: ManifestLike) -> manifest_lib.Manifest:
  if isinstance(manifest, manifest_lib.Manifest):
    return manifest
  return manifest_lib.read_manifest(manifest)


def _derive_seed(seed: int, *salt: int) -> int:
  """Hashes `seed` (plus salt) into an unrelated 32-bit seed.

  grain's shuffle uses `seed + epoch` as the per-epoch seed, so raw seeds 0
  and 1 would give the same order shifted by one epoch; hashing first makes
  nearby user seeds produce unrelated streams.
  """
  return int(np.random.SeedSequence([seed, *salt]).generate_state(1)[0])


def normalize_waveform(waveform: np.ndarray) -> np.ndarray:
  """Zero mean, unit variance over all of `waveform` (float32 `[samples]`)."""
  mean = waveform.mean()
  variance = waveform.var()
  return ((waveform - mean) / np.sqrt(variance + _NORMALIZE_EPS)).astype(
      np.float32
  )


def _fit_to_length(
    waveform: np.ndarray, crop_samples: int, start: int
) -> dict[str, np.ndarray]:
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
  """Reads utterance `index` and crops it; picklable for grain workers."""

  def __init__(
      self,
      manifest: manifest_lib.Manifest,
      crop_samples: int,
      normalize: bool,
      sample_rate: int,
      resample: bool,
  ):
    self._manifest = manifest
    self._crop_samples = crop_samples
    self._normalize = normalize
    self._sample_rate = sample_rate
    self._resample = resample

  def _read(self, index: int) -> np.ndarray:
    waveform = audio.read_audio(
        self._manifest.audio_path(index),
        sample_rate=self._sample_rate,
        resample=self._resample,
    )
    # Normalize the whole utterance before cropping, as the reference does,
    # so a crop's statistics don't depend on where it was cut.
    return normalize_waveform(waveform) if self._normalize else waveform

  def random_crop(
      self, index: int, rng: np.random.Generator
  ) -> dict[str, np.ndarray]:
    waveform = self._read(index)
    excess = waveform.shape[0] - self._crop_samples
    start = int(rng.integers(0, excess + 1)) if excess > 0 else 0
    return _fit_to_length(waveform, self._crop_samples, start)

  def crop_from_start(self, index: int) -> dict[str, np.ndarray]:
    if index < 0:  # A dummy row that pads the last eval batch.
      example = _fit_to_length(
          np.zeros(0, np.float32), self._crop_samples, 0
      )
      example.update(example_mask=np.bool_(False), index=np.int32(-1))
      return example
    example = _fit_to_length(self._read(index), self._crop_samples, 0)
    example.update(example_mask=np.bool_(True), index=np.int32(index))
    return example


def _read_options(num_threads: int, prefetch_batches: int) -> grain.ReadOptions:
  # grain's default buffer is 500 elements; with batches of raw audio that is
  # gigabytes of host memory per process, so keep it to a few batches.
  return grain.ReadOptions(
      num_threads=num_threads, prefetch_buffer_size=prefetch_batches
  )


def make_pretrain_dataset(
    manifest: ManifestLike,
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
) -> grain.IterDataset:
  """Builds this process's stream of fixed-shape training batches.

  Args:
    manifest: a `Manifest` or the path of a manifest file.
    batch_size: utterances per batch on this process.
    crop_samples: every row is cropped (randomly) or zero-padded to this.
    min_samples: utterances shorter than this (per the manifest) are dropped.
    seed: seeds both the shuffle and the crop offsets.
    shuffle: shuffle utterances, differently in every epoch.
    num_epochs: passes over the data; None repeats forever. With a finite
      number, process shards may differ in size by one utterance, so train for
      a fixed number of steps rather than until the stream ends.
    normalize: zero mean / unit variance per utterance (the reference's
      `normalize=True`, used for the LARGE models).
    process_index: this process's index (`jax.process_index()`).
    process_count: number of processes (`jax.process_count()`).
    sample_rate: expected sample rate in Hz.
    resample: resample files at another rate instead of raising.
    num_threads: threads reading batches in parallel.
    prefetch_batches: batches buffered ahead of the consumer.

  Returns:
    An `IterDataset`; `iter()` of it is checkpointable with
    `get_state()` / `set_state()`. Batches: see the module docstring.

  Raises:
    ValueError: bad arguments, or `min_samples` drops every utterance.
  """
  if batch_size <= 0 or crop_samples <= 0:
    raise ValueError(
        f'batch_size and crop_samples must be positive, got {batch_size=}, '
        f'{crop_samples=}'
    )
  if not 0 <= process_index < process_count:
    raise ValueError(f'need 0 <= {process_index=} < {process_count=}')
  manifest = _as_manifest(manifest)

  # Filtering on the manifest's lengths up front (rather than grain's
  # `filter`, which leaves holes) keeps the dataset dense, so every process
  # shard and every batch is a plain index range and state is one integer.
  keep = np.flatnonzero(manifest.num_samples >= min_samples)
  dropped = len(manifest) - len(keep)
  if dropped:
    logging.info(
        '%s: dropped %d of %d utterances shorter than min_samples=%d',
        manifest.path, dropped, len(manifest), min_samples,
    )
  if not len(keep):
    raise ValueError(
        f'{manifest.path}: all {len(manifest)} utterances are shorter than '
        f'min_samples={min_samples} (longest has '
        f'{manifest.num_samples.max()} samples)'
    )

  shard = keep[process_index::process_count].tolist()
  if not shard:
    raise ValueError(
        f'{manifest.path}: process {process_index} of {process_count} got no '
        f'utterances ({len(keep)} utterances in total)'
    )
  reader = _ReadAndCrop(
      manifest, crop_samples, normalize, sample_rate, resample
  )
  ds = grain.MapDataset.source(shard)
  if shuffle:
    # Shuffle before repeat: grain folds the epoch number into the shuffle
    # seed, so each epoch is a fresh permutation of this shard.
    ds = ds.shuffle(seed=_derive_seed(seed, 0))
  ds = ds.repeat(num_epochs)
  # Crop RNG is keyed by (seed, position in the stream): deterministic,
  # resumable, different across epochs and across processes.
  ds = ds.random_map(
      reader.random_crop, seed=_derive_seed(seed, 1, process_index)
  )
  ds = ds.batch(batch_size, drop_remainder=True)
  return ds.to_iter_dataset(_read_options(num_threads, prefetch_batches))


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
) -> grain.IterDataset:
  """Builds one deterministic pass over the manifest in fixed-shape batches.

  Each utterance is cropped from its start (or zero-padded) to
  `crop_samples`. The last batch is filled with dummy rows (all padding,
  `lengths` 0, `example_mask` False) so shapes stay static. With several
  processes every process yields the same number of batches, so collective
  ops in an eval step line up.

  Args:
    manifest: a `Manifest` or the path of a manifest file.
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
        f'batch_size and crop_samples must be positive, got {batch_size=}, '
        f'{crop_samples=}'
    )
  if not 0 <= process_index < process_count:
    raise ValueError(f'need 0 <= {process_index=} < {process_count=}')
  manifest = _as_manifest(manifest)

  shard = list(range(process_index, len(manifest), process_count))
  # Pad every process to the same whole number of batches (the largest
  # shard, rounded up); index -1 marks a dummy row.
  largest_shard = -(-len(manifest) // process_count)
  num_batches = -(-largest_shard // batch_size)
  shard += [-1] * (num_batches * batch_size - len(shard))

  reader = _ReadAndCrop(
      manifest, crop_samples, normalize, sample_rate, resample
  )
  ds = grain.MapDataset.source(shard).map(reader.crop_from_start)
  ds = ds.batch(batch_size, drop_remainder=True)
  return ds.to_iter_dataset(_read_options(num_threads, prefetch_batches))
