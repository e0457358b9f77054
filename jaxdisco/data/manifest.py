"""fairseq-style audio manifests.

A manifest is a TSV file::

    /root/dir/of/audio
    speaker1/utt001.flac<TAB>52480
    speaker1/utt002.flac<TAB>31200

The first line is the root directory; every following line is a path relative
to the root and its length in samples. Keeping lengths in the manifest lets the
pipeline drop short utterances and plan batches without opening any audio.

A relative root is resolved against the manifest file's own directory (so a
corpus directory can be moved or shipped as a package asset); an absolute or
`gs://` root is used as is.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Optional, Union

from etils import epath
import numpy as np

from jaxdisco.data import audio
from jaxdisco.errors import UserError

PathLike = Union[str, os.PathLike, epath.Path]

# verify_manifest lists this many problems in full, then just counts the rest.
_MAX_LISTED_PROBLEMS = 10


class ManifestError(UserError, ValueError):
  """A manifest file is malformed or disagrees with the audio it lists."""


@dataclasses.dataclass(frozen=True, eq=False)
class Manifest:
  """A parsed manifest.

  `eq=False` because `num_samples` is an array (array `==` is elementwise, so
  a generated `__eq__`/`__hash__` would be wrong); manifests compare by
  identity.

  Attributes:
    path: the manifest file itself.
    root: the resolved root directory of the audio files.
    files: `[num_files]` paths relative to `root`, in manifest order.
    num_samples: int64 `[num_files]` length of each file in samples.
  """

  path: epath.Path
  root: epath.Path
  files: tuple[str, ...]
  num_samples: np.ndarray

  def __len__(self) -> int:
    return len(self.files)

  def audio_path(self, i: int) -> epath.Path:
    """The full path of the `i`-th file."""
    return self.root / self.files[i]

  def utterance_id(self, i: int) -> str:
    """The `i`-th file's name without directory or extension."""
    return pathlib.PurePosixPath(self.files[i]).stem

  def total_seconds(self, sample_rate: int) -> float:
    """Total duration of the corpus at `sample_rate` Hz."""
    return float(self.num_samples.sum()) / sample_rate

  def select(self, indices) -> "Manifest":
    """The manifest of the files at `indices`, in that order (same root and path)."""
    indices = [int(i) for i in indices]
    return dataclasses.replace(
        self,
        files=tuple(self.files[i] for i in indices),
        num_samples=np.asarray(self.num_samples)[indices],
    )


def _resolve_root(manifest_path: epath.Path, root: str) -> epath.Path:
  if '://' in root or os.path.isabs(root):
    return epath.Path(root)
  return manifest_path.parent / root


def read_manifest(path: PathLike) -> Manifest:
  """Parses a manifest file.

  Args:
    path: local path or `gs://` URL of the manifest.

  Returns:
    The parsed `Manifest`.

  Raises:
    ManifestError: naming the manifest and the 1-based line number of the
      problem: missing or empty file, no entries, a line without exactly two
      tab-separated fields, a non-positive or non-integer length, or a path
      listed twice.
  """
  path = epath.Path(path)
  if not path.exists():
    raise ManifestError(f'{path}: manifest file not found')
  lines = path.read_text().splitlines()
  if not lines or not lines[0].strip():
    raise ManifestError(
        f'{path}:1: empty manifest (expected the audio root directory on ' 'line 1)'
    )
  root = _resolve_root(path, lines[0].strip())

  files: list[str] = []
  num_samples: list[int] = []
  first_line_of: dict[str, int] = {}
  for line_number, line in enumerate(lines[1:], start=2):
    if not line.strip():
      continue  # Tolerate blank lines (e.g. an editor's trailing newlines).
    fields = line.split('\t')
    if len(fields) != 2:
      raise ManifestError(
          f'{path}:{line_number}: expected 2 tab-separated fields '
          f'(relative_path<TAB>num_samples), found {len(fields)}: {line!r}'
      )
    relative_path, length_text = fields
    try:
      length = int(length_text)
    except ValueError:
      length = None
    if length is None or length <= 0:
      raise ManifestError(
          f'{path}:{line_number}: expected a positive integer number of '
          f'samples, found {length_text!r}'
      )
    if relative_path in first_line_of:
      raise ManifestError(
          f'{path}:{line_number}: duplicate path {relative_path!r} (first '
          f'listed on line {first_line_of[relative_path]})'
      )
    first_line_of[relative_path] = line_number
    files.append(relative_path)
    num_samples.append(length)

  if not files:
    raise ManifestError(
        f'{path}:2: no audio entries after the root line (expected lines of '
        'relative_path<TAB>num_samples)'
    )
  return Manifest(
      path=path,
      root=root,
      files=tuple(files),
      num_samples=np.asarray(num_samples, dtype=np.int64),
  )


def verify_manifest(manifest: Manifest, *, sample_rate: Optional[int] = 16000) -> None:
  """Checks every file's header against the manifest.

  Reads headers only, so it is cheap per file but still one open per file:
  meant for start-up on small and medium corpora, not 60k hours on GCS.

  Args:
    manifest: the manifest to check.
    sample_rate: the expected rate in Hz; None skips the rate check (e.g.
      when the pipeline resamples on the fly).

  Raises:
    ManifestError: listing up to 10 problems (missing or unreadable files,
      wrong sample rate, length differing from the manifest), then a count of
      the rest.
  """
  problems: list[str] = []
  for i, relative_path in enumerate(manifest.files):
    try:
      file_rate, frames, _ = audio.audio_info(manifest.audio_path(i))
    except audio.AudioError as e:
      problems.append(str(e))
      continue
    if sample_rate is not None and file_rate != sample_rate:
      problems.append(f'{relative_path}: sample rate {file_rate} Hz, expected ' f'{sample_rate} Hz')
    if frames != manifest.num_samples[i]:
      problems.append(
          f'{relative_path}: {frames} samples in the file, manifest says '
          f'{manifest.num_samples[i]}'
      )

  if problems:
    listed = problems[:_MAX_LISTED_PROBLEMS]
    message = '\n  '.join(listed)
    if len(problems) > len(listed):
      message += f'\n  ... and {len(problems) - len(listed)} more problems'
    raise ManifestError(
        f'{manifest.path}: {len(problems)} problem(s) with the listed audio '
        f'(root {manifest.root}):\n  {message}'
    )
