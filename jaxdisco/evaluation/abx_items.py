"""ABX item files from phone alignments (the ZeroSpeech 2021 / libri-light format).

An item file is a header line then one line per item::

    #file onset offset #phone prev-phone next-phone speaker
    6295-244435-0009 0.2925 0.4725 IH L NG 6295

Each item is a phone with its left and right neighbours (its context) and its speaker. ABX
compares items of two phones in the same context (and speaker), so the context columns decide
which items are comparable; the onset and offset decide which frames are compared. libri-light's
`dev-clean.item` spans the whole triphone (the onset is the previous phone's start, the offset
the next phone's end: consecutive items overlap, as in the example above), which is
`span="triphone"` here; the phoneme item files of ZeroSpeech's ABX 2 (`zerospeech-libriabx2`)
span the central phone only, `span="phone"`.

Items are made from every run of three non-silence phones inside an utterance: a phone next to
a silence or an utterance edge has no phonetic context and is left out, as libri-light's files
leave out phones next to pauses.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Iterable, Mapping, Optional, Sequence, Union

from etils import epath

from jaxdisco.errors import MissingFileError, UserError

PathLike = Union[str, os.PathLike, epath.Path]
HEADER = "#file onset offset #phone prev-phone next-phone speaker"
# Labels that mean "no phone": espeak pauses (the demo corpus maps them to `sil`), Kaldi / MFA /
# TIMIT silences, short pauses and spoken noise.
DEFAULT_SILENCES = ("sil", "SIL", "sp", "spn", "<sil>", "h#", "pau", "")


class ItemFileError(UserError, ValueError):
  """An item file or speaker list is malformed; the message names the file and line."""


@dataclasses.dataclass(frozen=True)
class Item:
  """One ABX item: frames `[onset, offset)` seconds of `file`, phone `phone` between `prev`
  and `next`, said by `speaker`."""

  file: str
  onset: float
  offset: float
  phone: str
  prev: str
  next: str
  speaker: str


def triphone_items(
    alignments: Mapping[str, Sequence[tuple[str, float, float]]],
    speakers: Mapping[str, str],
    *,
    span: str = "triphone",
    silences: Iterable[str] = DEFAULT_SILENCES,
) -> list[Item]:
  """Items of every non-silence phone whose neighbours are non-silence phones.

  Args:
    alignments: utterance id -> contiguous `(phone, start_s, end_s)` (`units.read_alignments`).
    speakers: utterance id -> speaker; utterances without a speaker are an error (across-speaker
      ABX would silently treat them as one speaker otherwise).
    span: "triphone" (onset of the previous phone to offset of the next, libri-light's
      dev/test item files) or "phone" (the central phone only, ABX 2's phoneme items).
    silences: labels that are not phones.

  Returns:
    items in alignment order.
  """
  if span not in ("triphone", "phone"):
    raise ValueError(f"span must be 'triphone' or 'phone', got {span!r}")
  missing = [u for u in alignments if u not in speakers]
  if missing:
    raise ItemFileError(f"{len(missing)} utterance(s) have no speaker, e.g. {missing[:5]}")
  silences = frozenset(silences)
  items = []
  for utt, segments in alignments.items():
    for (p0, s0, _), (p1, s1, e1), (p2, _, e2) in zip(segments, segments[1:], segments[2:]):
      if p0 in silences or p1 in silences or p2 in silences:
        continue
      onset, offset = (s0, e2) if span == "triphone" else (s1, e1)
      items.append(Item(utt, onset, offset, p1, p0, p2, str(speakers[utt])))
  return items


def write_item_file(path: PathLike, items: Sequence[Item]) -> epath.Path:
  """Writes `items` with the header line; times with 4 decimals (0.1 ms, as libri-light)."""
  for item in items:
    bad = [v for v in (item.file, item.phone, item.prev, item.next, item.speaker) if not v or any(
        c.isspace() for c in v)]
    if bad:
      raise ItemFileError(f"item fields must be non-empty and without spaces, got {bad[0]!r}")
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  lines = [HEADER] + [
      f"{i.file} {i.onset:.4f} {i.offset:.4f} {i.phone} {i.prev} {i.next} {i.speaker}"
      for i in items
  ]
  path.write_text("\n".join(lines) + "\n")
  return path


def read_item_file(path: PathLike) -> list[Item]:
  """Reads an item file (the first line is a header and is skipped, as the reference does)."""
  path = epath.Path(path)
  if not path.exists():
    raise MissingFileError(f"{path}: item file not found")
  items = []
  for number, line in enumerate(path.read_text().splitlines()[1:], start=2):
    fields = line.split()
    if not fields:
      continue
    if len(fields) != 7:
      raise ItemFileError(
          f"{path}:{number}: expected 7 columns ({HEADER}), got {len(fields)}"
      )
    file, onset, offset, phone, prev, nxt, speaker = fields
    try:
      items.append(Item(file, float(onset), float(offset), phone, prev, nxt, speaker))
    except ValueError as e:
      raise ItemFileError(f"{path}:{number}: onset/offset must be numbers: {line!r}") from e
  return items


def read_speakers(path: Optional[PathLike], ids: Iterable[str]) -> dict[str, str]:
  """Utterance id -> speaker, from a JSONL file of `{"id": ..., "speaker": ...}` (or `"voice"`,
  as the demo corpus' `meta.jsonl`); without a file, the id up to its first '-' (LibriSpeech's
  `speaker-chapter-utterance` ids)."""
  ids = list(ids)
  if path is None:
    return {u: u.split("-", 1)[0] for u in ids}
  path = epath.Path(path)
  if not path.exists():
    raise MissingFileError(f"{path}: speaker file not found")
  out = {}
  for number, line in enumerate(path.read_text().splitlines(), start=1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
      speaker = record["speaker"] if "speaker" in record else record["voice"]
      out[str(record["id"])] = str(speaker)
    except (ValueError, KeyError, TypeError) as e:
      raise ItemFileError(
          f'{path}:{number}: expected {{"id": ..., "speaker": ...}} (or "voice")'
      ) from e
  return out
