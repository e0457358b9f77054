"""Where utterances come from: manifests, folders, TFDS datasets, prepared dirs.

Every source is a random-access sequence of `Entry` (`len(source)`,
`source[i]`), so the prepare step can cut it into shards by index range and
hand each shard to a worker process (sources are picklable: they hold paths
and open files lazily). An entry carries either a path to an audio file (read
later, in the worker) or the samples themselves (TFDS, prepared shards).

| source            | how to name it on the command line           | id                  |
|-------------------|----------------------------------------------|---------------------|
| `ManifestSource`  | `path/to/train.tsv`                          | path without suffix |
| `FolderSource`    | `path/to/dir/` (wav/flac/ogg/mp3, recursive) | path without suffix |
| `TfdsSource`      | `tfds:librispeech/clean100:2.1.2@train`      | the `id` feature    |
| `PreparedSource`  | a `prepare-data` output dir (has index.json) | as prepared         |

Ids are the audio path relative to the root, without extension
(`spk/chapter/utt`), so a manifest and a folder over the same files agree.
All paths go through `etils.epath` and may be `gs://` URLs.
"""

from __future__ import annotations

import dataclasses
import io
import json
import pathlib
from typing import Any, Optional, Sequence, Union

from etils import epath
import numpy as np

from jaxdisco.data import labels as labels_lib
from jaxdisco.data import manifest as manifest_lib
from jaxdisco.data import records
from jaxdisco.data.manifest import PathLike
from jaxdisco.errors import MissingFileError

AUDIO_EXTENSIONS = ('.wav', '.flac', '.ogg', '.mp3')
INDEX_FILE = 'index.json'


@dataclasses.dataclass(frozen=True, eq=False)
class Entry:
  """One utterance as a source lists it.

  Attributes:
    id: unique id.
    audio: a path to decode, or int16/float32 `[samples]` already decoded.
    sample_rate: rate of `audio` when it is an array; None for paths (the
      file's header says).
    num_samples: length if the source knows it without decoding, else None.
    labels: int32 `[num_labels]` frame labels, or None.
    transcript: text, or None.
    where: `file:line` (or similar) naming the entry in error messages.
  """

  id: str
  audio: Union[epath.Path, np.ndarray]
  sample_rate: Optional[int] = None
  num_samples: Optional[int] = None
  labels: Optional[np.ndarray] = None
  transcript: Optional[str] = None
  where: str = ''


def _strip_suffix(relative_path: str) -> str:
  return str(pathlib.PurePosixPath(relative_path).with_suffix(''))


class ManifestSource:
  """A fairseq manifest, optionally with `.km` labels and `.wrd` transcripts.

  Label/transcript files must have one line per manifest entry; a different
  count raises `LabelError` at construction, whatever the error policy,
  because no line can be matched to its utterance any more.
  """

  def __init__(
      self,
      manifest: PathLike,
      *,
      labels: Optional[PathLike] = None,
      dictionary: Optional[PathLike] = None,
      transcripts: Optional[PathLike] = None,
  ):
    self.manifest = manifest_lib.read_manifest(manifest)
    self.label_path = epath.Path(labels) if labels else None
    self.labels = None
    if labels:
      symbols = labels_lib.read_dictionary(dictionary) if dictionary else None
      self.labels = labels_lib.read_label_file(labels, symbols, expected_lines=len(self.manifest))
    self.transcripts = None
    if transcripts:
      lines = epath.Path(transcripts).read_text().splitlines()
      if lines and not lines[-1].strip() and len(lines) > len(self.manifest):
        lines.pop()
      if len(lines) != len(self.manifest):
        raise labels_lib.LabelError(
            f'{transcripts}: {len(lines)} transcript lines, but the manifest lists '
            f'{len(self.manifest)} utterances'
        )
      self.transcripts = lines

  def __len__(self) -> int:
    return len(self.manifest)

  def __getitem__(self, i: int) -> Entry:
    # Manifest line numbers: the root is line 1, entry i is line i + 2 (blank
    # lines are rare enough not to track).
    where = f'{self.manifest.path}:{i + 2} ({self.manifest.audio_path(i)})'
    if self.labels is not None:
      where += f', {self.label_path}:{i + 1}'
    return Entry(
        id=_strip_suffix(self.manifest.files[i]),
        audio=self.manifest.audio_path(i),
        num_samples=int(self.manifest.num_samples[i]),
        labels=None if self.labels is None else self.labels[i],
        transcript=None if self.transcripts is None else self.transcripts[i],
        where=where,
    )

  def describe(self) -> str:
    text = f'manifest {self.manifest.path}'
    if self.label_path:
      text += f' labels {self.label_path}'
    if self.transcripts is not None:
      text += ' with transcripts'
    return text


class FolderSource:
  """Every audio file under `root` (recursively), sorted by path."""

  def __init__(self, root: PathLike, extensions: Sequence[str] = AUDIO_EXTENSIONS):
    self.root = epath.Path(root)
    if not self.root.is_dir():
      raise MissingFileError(f'{self.root}: expected a directory of audio files')
    extensions = tuple(e.lower() for e in extensions)
    # walk(), not rglob: epath refuses recursive globs (one RPC per match on GCS).
    self.files = sorted(
        str((directory / name).relative_to(self.root))
        for directory, _, names in self.root.walk()
        for name in names
        if epath.Path(name).suffix.lower() in extensions
    )
    if not self.files:
      raise MissingFileError(f'{self.root}: no audio files ({", ".join(extensions)}) found')

  def __len__(self) -> int:
    return len(self.files)

  def __getitem__(self, i: int) -> Entry:
    path = self.root / self.files[i]
    return Entry(id=_strip_suffix(self.files[i]), audio=path, where=str(path))

  def describe(self) -> str:
    return f'folder {self.root}'


def _decode_feature(feature) -> Any:
  """A tf.train.Feature proto -> numpy array / bytes list, without TensorFlow."""
  kind = feature.WhichOneof('kind')
  values = getattr(feature, kind).value
  if kind == 'bytes_list':
    return list(values)
  return np.asarray(values, np.int64 if kind == 'int64_list' else np.float32)


class TfdsSource:
  """A TFDS dataset prepared in the `array_record` file format.

  Reading goes through `tfds.data_source(name, split=..., data_dir=...)`,
  which needs no TensorFlow for features such as `Tensor`, `Text` and
  `Scalar`. Datasets whose features are `tfds.features.Audio` (LibriSpeech's
  `speech`) cannot be loaded that way without TensorFlow, since constructing
  an `Audio` feature imports it; for those (or with `raw=True`) the
  `array_record` files are opened directly and each tf.train.Example is
  parsed with TFDS's own protobuf classes, which is all the decoding TFDS
  would do for an unencoded audio tensor. Encoded audio (bytes) is decoded
  with soundfile.

  Args:
    name: dataset name as for `tfds.data_source`, e.g. `librispeech` or
      `librispeech/clean100:2.1.2`.
    split: e.g. `train`, `train_clean100`.
    data_dir: the TFDS data dir (default: TFDS's).
    audio_key: feature holding the samples; default: the first of `speech`,
      `audio`, `samples` present.
    id_key: feature holding the id; default `id` (else the record index).
    transcript_key: feature holding the transcript (`text`), if present.
    sample_rate: rate of the stored audio in Hz (TFDS audio carries it in
      the feature spec; LibriSpeech is 16 kHz).
  """

  def __init__(
      self,
      name: str,
      *,
      split: str = 'train',
      data_dir: Optional[PathLike] = None,
      audio_key: Optional[str] = None,
      id_key: str = 'id',
      transcript_key: str = 'text',
      sample_rate: int = 16000,
      raw: bool = False,
  ):
    self.name, self.split = name, split
    self.data_dir = str(data_dir) if data_dir else None
    self.audio_key, self.id_key, self.transcript_key = audio_key, id_key, transcript_key
    self.sample_rate = sample_rate
    self.raw = raw
    self._reader = None
    self._parse = None
    self._length = len(self._open())

  def __getstate__(self):
    state = dict(self.__dict__)
    # Reopened lazily in each worker process (readers hold file handles).
    state['_reader'] = state['_parse'] = None
    return state

  def _files(self) -> list[str]:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    data_dir = epath.Path(self.data_dir or tfds.core.constants.DATA_DIR)
    name, _, version = self.name.partition(':')
    base = data_dir / name
    if not version:
      versions = []
      if base.exists():
        versions = [p.name for p in base.iterdir() if p.is_dir() and p.name[:1].isdigit()]
      if not versions:
        raise MissingFileError(f'{base}: no prepared versions of TFDS dataset {name!r}')
      version = max(versions, key=lambda v: tuple(int(x) for x in v.split('.')))
    dataset_name = pathlib.PurePosixPath(name).parts[0]
    pattern = f'{dataset_name}-{self.split}.array_record-*'
    files = sorted(str(p) for p in (base / version).glob(pattern))
    if not files:
      raise MissingFileError(
          f'{base / version}: no {pattern} files (prepare the dataset with '
          "file_format='array_record')"
      )
    return files

  def _open(self):
    if self._reader is None:
      if not self.raw:
        try:
          import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

          self._reader = tfds.data_source(self.name, split=self.split, data_dir=self.data_dir)
          self._parse = None
          return self._reader
        except ModuleNotFoundError as e:
          if 'tensorflow' not in str(e):
            raise
          # Features that need TensorFlow (Audio): read the files directly.
      import grain  # pylint: disable=g-import-not-at-top
      from tensorflow_datasets.proto import tf_example_pb2  # pylint: disable=g-import-not-at-top

      self._reader = grain.sources.ArrayRecordDataSource(self._files())
      self._parse = lambda b: {
          k: _decode_feature(v)
          for k, v in tf_example_pb2.Example.FromString(b).features.feature.items()
      }
    return self._reader

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, i: int) -> Entry:
    reader = self._open()
    example = reader[i]
    if self._parse is not None:
      example = self._parse(example)
    audio_key = self.audio_key or next(
        (k for k in ('speech', 'audio', 'samples') if k in example), None
    )
    if audio_key is None:
      raise KeyError(
          f'TFDS {self.name}[{self.split}][{i}]: no audio feature among '
          f'{sorted(example)}; pass audio_key'
      )
    audio = example[audio_key]
    if isinstance(audio, list):  # Raw path, bytes_list: an encoded file.
      audio = audio[0]
    if isinstance(audio, (bytes, np.bytes_)):
      import soundfile  # pylint: disable=g-import-not-at-top

      audio, _ = soundfile.read(io.BytesIO(audio), dtype='int16')
    audio = np.asarray(audio)
    if audio.dtype.kind == 'i':
      audio = audio.astype(np.int16)
    utterance_id = _text(example.get(self.id_key, str(i)))
    transcript = example.get(self.transcript_key)
    return Entry(
        id=utterance_id,
        audio=audio,
        sample_rate=self.sample_rate,
        num_samples=int(audio.shape[0]),
        transcript=None if transcript is None else _text(transcript),
        where=f'tfds {self.name}[{self.split}][{i}] (id {utterance_id})',
    )

  def describe(self) -> str:
    return f'tfds {self.name} split {self.split}'


def _text(value) -> str:
  if isinstance(value, list):
    value = value[0]
  if isinstance(value, np.ndarray):
    value = value.item()
  return value.decode() if isinstance(value, bytes) else str(value)


class PreparedSource:
  """The output of `prepare-data`: ArrayRecord shards plus `index.json`.

  `num_samples` and ids come from the index, so bucketing and filtering need
  no reads; `source[i]` reads one record (random access) and decodes it.
  """

  def __init__(self, directory: PathLike):
    self.directory = epath.Path(directory)
    index_path = self.directory / INDEX_FILE
    if not index_path.exists():
      raise MissingFileError(
          f'{index_path}: not a prepared directory (run `jaxdisco prepare-data` first, '
          'or it is still running)'
      )
    self.index = json.loads(index_path.read_text())
    utterances = self.index['utterances']
    self.ids: list[str] = utterances['id']
    self.num_samples = np.asarray(utterances['num_samples'], np.int64)
    self.sample_rate = int(self.index['sample_rate'])
    self._reader = None

  def __getstate__(self):
    state = dict(self.__dict__)
    state['_reader'] = None
    return state

  def _open(self):
    if self._reader is None:
      import grain  # pylint: disable=g-import-not-at-top

      # Records are in index order: shard files are listed in order and the
      # index lists each shard's utterances in record order.
      paths = [str(self.directory / name) for name in self.index['shards']]
      self._reader = grain.sources.ArrayRecordDataSource(paths)
    return self._reader

  def __len__(self) -> int:
    return len(self.ids)

  def read(self, i: int) -> records.Utterance:
    """The `i`-th utterance, decoded."""
    return records.decode(self._open()[i])

  def __getitem__(self, i: int) -> Entry:
    utterance = self.read(i)
    return Entry(
        id=utterance.id,
        audio=utterance.samples,
        sample_rate=utterance.sample_rate,
        num_samples=utterance.num_samples,
        labels=utterance.labels,
        transcript=utterance.transcript,
        where=f'{self.directory}[{i}] (id {utterance.id})',
    )

  def describe(self) -> str:
    return f'prepared {self.directory}'


Source = Union[ManifestSource, FolderSource, TfdsSource, PreparedSource]


def is_prepared_dir(path: PathLike) -> bool:
  path = epath.Path(path)
  return path.is_dir() and (path / INDEX_FILE).exists()


def open_source(
    spec: PathLike,
    *,
    labels: Optional[PathLike] = None,
    dictionary: Optional[PathLike] = None,
    transcripts: Optional[PathLike] = None,
    tfds_data_dir: Optional[PathLike] = None,
) -> Source:
  """Opens a source from its command-line name (see the module docstring).

  `tfds:NAME[@SPLIT]` is a TFDS dataset (split `train` by default); a `.tsv`
  file is a manifest; a directory with `index.json` is a prepared dataset;
  any other directory is a folder of audio files.
  """
  spec_text = str(spec)
  if spec_text.startswith('tfds:'):
    name, _, split = spec_text[len('tfds:') :].partition('@')
    return TfdsSource(name, split=split or 'train', data_dir=tfds_data_dir)
  path = epath.Path(spec)
  if path.is_dir():
    if (path / INDEX_FILE).exists():
      return PreparedSource(path)
    return FolderSource(path)
  if labels is None and dictionary is not None:
    raise labels_lib.LabelError('a dictionary was given without a label file')
  return ManifestSource(path, labels=labels, dictionary=dictionary, transcripts=transcripts)
