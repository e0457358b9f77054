"""HuBERT frame labels: `.km` files, `dict.km.txt`, and the label-rate check.

A label file has one line per manifest entry, in manifest order, holding that
utterance's space-separated frame labels (k-means unit ids at `label_rate` Hz,
50 Hz for HuBERT BASE)::

    12 12 45 45 45 7 ...

`dict.km.txt` is a fairseq dictionary: one `symbol count` line per label. Here
a label's index is its line number in the dictionary (0-based). fairseq puts
four special symbols (<s>, <pad>, </s>, <unk>) in front, so its indices are
ours plus 4; jaxdisco has no use for those specials, and storing 0-based ids
lets the loss use them as class indices directly.

The alignment check mirrors fairseq's "audio and label duration differ"
warning, with the tolerance in frames: an utterance of `n` samples should have
`n * label_rate / sample_rate` labels, and anything further than
`tolerance_frames` (default one frame: conv-encoder rounding) means the label
file was computed from different audio (another trim, rate or corpus).
"""

from __future__ import annotations

from typing import Optional, Sequence

from etils import epath
import numpy as np

from jaxdisco.data.manifest import PathLike
from jaxdisco.errors import UserError


class LabelError(UserError, ValueError):
  """A label or dictionary file is malformed or does not fit the manifest."""


def read_dictionary(path: PathLike) -> dict[str, int]:
  """Reads a fairseq `dict.*.txt`: symbol -> 0-based index (line order).

  Raises:
    LabelError: naming the file and line of a malformed or duplicate entry.
  """
  path = epath.Path(path)
  if not path.exists():
    raise LabelError(f'{path}: dictionary file not found')
  symbols: dict[str, int] = {}
  for line_number, line in enumerate(path.read_text().splitlines(), start=1):
    if not line.strip():
      continue
    fields = line.split()
    if len(fields) != 2:
      raise LabelError(f'{path}:{line_number}: expected "symbol count", found {line!r}')
    if fields[0] in symbols:
      raise LabelError(f'{path}:{line_number}: duplicate symbol {fields[0]!r}')
    symbols[fields[0]] = len(symbols)
  if not symbols:
    raise LabelError(f'{path}: empty dictionary')
  return symbols


def read_label_file(
    path: PathLike,
    dictionary: Optional[dict[str, int]] = None,
    *,
    expected_lines: Optional[int] = None,
) -> list[np.ndarray]:
  """Reads a `.km` file into one int32 `[num_labels]` array per line.

  Args:
    path: the label file.
    dictionary: symbol -> index (see `read_dictionary`); None parses each
      label as an integer as written.
    expected_lines: the manifest's number of entries; a different count is
      an error, since nothing can tell which line is missing.

  Raises:
    LabelError: naming the file and line: unknown symbol, non-integer label,
      or a line count that differs from `expected_lines`.
  """
  path = epath.Path(path)
  if not path.exists():
    raise LabelError(f'{path}: label file not found')
  lines = path.read_text().splitlines()
  # One trailing empty line is an editor's newline, not an utterance.
  while lines and not lines[-1].strip() and (expected_lines is None or len(lines) > expected_lines):
    lines.pop()
  if expected_lines is not None and len(lines) != expected_lines:
    raise LabelError(
        f'{path}: {len(lines)} label lines, but the manifest lists {expected_lines} '
        'utterances (labels must be one line per manifest entry, in order)'
    )
  labels = []
  for line_number, line in enumerate(lines, start=1):
    tokens = line.split()
    if dictionary is not None:
      unknown = [t for t in tokens if t not in dictionary]
      if unknown:
        raise LabelError(f'{path}:{line_number}: label {unknown[0]!r} is not in the dictionary')
      values = [dictionary[t] for t in tokens]
    else:
      try:
        values = [int(t) for t in tokens]
      except ValueError as e:
        raise LabelError(f'{path}:{line_number}: expected integer labels: {e}') from e
    labels.append(np.asarray(values, np.int32))
  return labels


def expected_num_labels(num_samples: int, label_rate: float, sample_rate: int) -> float:
  """Labels an utterance of `num_samples` should have at `label_rate` Hz."""
  return num_samples * label_rate / sample_rate


def alignment_problem(
    num_samples: int,
    num_labels: int,
    *,
    label_rate: float,
    sample_rate: int = 16000,
    tolerance_frames: float = 1.0,
) -> Optional[str]:
  """None if the label count fits the audio length, else a message saying how not."""
  expected = expected_num_labels(num_samples, label_rate, sample_rate)
  if abs(num_labels - expected) <= tolerance_frames:
    return None
  return (
      f'audio and label duration differ: {num_samples} samples = '
      f'{num_samples / sample_rate:.3f} s at {sample_rate} Hz expects '
      f'{expected:.1f} labels at {label_rate:g} Hz (+-{tolerance_frames:g}), found '
      f'{num_labels} ({num_labels / label_rate:.3f} s)'
  )


def check_alignment(
    num_samples: Sequence[int],
    labels: Sequence[np.ndarray],
    *,
    label_rate: float,
    sample_rate: int = 16000,
    tolerance_frames: float = 1.0,
) -> list[tuple[int, str]]:
  """`(index, message)` for every utterance whose labels do not fit its length."""
  problems = []
  for i, (n, label) in enumerate(zip(num_samples, labels)):
    problem = alignment_problem(
        int(n),
        len(label),
        label_rate=label_rate,
        sample_rate=sample_rate,
        tolerance_frames=tolerance_frames,
    )
    if problem:
      problems.append((i, problem))
  return problems
