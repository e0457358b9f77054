"""Checks of the shipped demo corpus (jaxdisco/assets/demo_corpus).

The first group only reads the committed files; the last test regenerates a
few utterances with tools/make_demo_corpus.py and needs espeak-ng.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "jaxdisco" / "assets" / "demo_corpus"
SCRIPT = REPO / "tools" / "make_demo_corpus.py"
SPLITS = ("train", "valid")
EXT_SPLITS = ("train_ext", "valid_ext")
SR = 16000


def read_manifest(path: Path):
  lines = path.read_text().splitlines()
  root = Path(lines[0])
  if not root.is_absolute():
    root = path.parent / root
  rows = []
  for line in lines[1:]:
    name, n = line.split("\t")
    rows.append((name, int(n)))
  return root, rows


def read_jsonl(path: Path):
  return [json.loads(line) for line in path.read_text().splitlines()]


def check_alignment(phones, duration: float) -> None:
  assert phones, "empty alignment"
  assert phones[0][1] == 0.0
  for (_, _, end), (_, start, _) in zip(phones, phones[1:]):
    assert start == pytest.approx(end, abs=1e-6), "alignment not contiguous"
  for label, start, end in phones:
    assert isinstance(label, str) and label
    assert end > start
  assert abs(phones[-1][2] - duration) <= 0.010


def check_split(corpus: Path, split: str):
  """Validate one split; returns (ids, phone labels)."""
  root, rows = read_manifest(corpus / f"{split}.tsv")
  assert rows
  words = (corpus / f"{split}.wrd").read_text().splitlines()
  aligns = read_jsonl(corpus / f"{split}.align.jsonl")
  assert len(words) == len(rows) == len(aligns)
  ids, labels = [], set()
  for (name, num_samples), text, align in zip(rows, words, aligns):
    utt_id = Path(name).stem
    assert align["id"] == utt_id
    assert text.strip()
    info = sf.info(str(root / name))
    assert info.samplerate == SR and info.channels == 1
    assert info.frames == num_samples
    check_alignment(align["phones"], num_samples / SR)
    ids.append(utt_id)
    labels.update(p[0] for p in align["phones"])
  return ids, labels


def test_demo_corpus_files():
  ids = {}
  labels = set()
  for split in SPLITS:
    split_ids, split_labels = check_split(CORPUS, split)
    assert len(set(split_ids)) == len(split_ids)
    ids[split] = set(split_ids)
    labels |= split_labels
  assert not ids["train"] & ids["valid"]
  assert "sil" in labels
  assert len(labels) >= 30
  for split in EXT_SPLITS:
    ids[split] = set(check_split(CORPUS, split)[0])
  # The extended splits start with the shipped ones, in order, and add new sentences only.
  for split in SPLITS:
    lines = (CORPUS / f"{split}.tsv").read_text().splitlines()
    assert (CORPUS / f"{split}_ext.tsv").read_text().splitlines()[: len(lines)] == lines
  assert len(ids["train_ext"]) == 4 * len(ids["train"]) and len(ids["valid_ext"]) > len(
      ids["valid"]
  )
  assert not ids["train_ext"] & ids["valid_ext"]
  meta = read_jsonl(CORPUS / "meta.jsonl")
  assert {m["id"] for m in meta} == ids["train_ext"] | ids["valid_ext"]
  texts = [m["text"] for m in meta]
  assert len(set(texts)) == len(texts)
  assert {m["id"] for m in meta if m["split"] in SPLITS} == ids["train"] | ids["valid"]
  # Every audio file is listed in a manifest (no stale leftovers).
  assert {p.stem for p in (CORPUS / "audio").glob("*.flac")} == ids["train"] | ids["valid"]
  extra = ids["train_ext"] | ids["valid_ext"]
  assert {p.stem for p in (CORPUS / "audio").glob("*.ogg")} == extra - ids["train"] - ids["valid"]


def test_extended_splits_decode_through_the_loader():
  # Ogg Opus needs a libsndfile built with it (the soundfile wheels are); a lossy codec still
  # keeps the speech: the phone segments' energy separates silence from speech.
  from jaxdisco.data.audio import read_audio  # pylint: disable=g-import-not-at-top

  root, rows = read_manifest(CORPUS / "train_ext.tsv")
  aligns = read_jsonl(CORPUS / "train_ext.align.jsonl")
  name, num_samples = rows[-1]
  assert name.endswith(".ogg")
  wav = read_audio(root / name)
  assert wav.shape == (num_samples,) and wav.dtype.name == "float32"
  assert 0.5 < float(abs(wav).max()) < 1.1
  energy = {"sil": [], "speech": []}
  for phone, start, end in aligns[-1]["phones"]:
    segment = wav[int(start * SR) : int(end * SR)]
    energy["sil" if phone == "sil" else "speech"].append(float((segment**2).mean()))
  assert max(energy["sil"]) * 100 < sum(energy["speech"]) / len(energy["speech"])


def test_demo_corpus_size():
  size = sum(p.stat().st_size for p in CORPUS.rglob("*") if p.is_file())
  assert size < 13e6, f"demo corpus grew to {size / 1e6:.1f} MB"


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_make_demo_corpus_script(tmp_path):
  pytest.importorskip("soxr")
  out = tmp_path / "corpus"
  subprocess.run(
      [sys.executable, str(SCRIPT), "--out", str(out), "--num-train", "2", "--num-valid", "1"]
      + ["--num-train-ext", "2", "--num-valid-ext", "1"],
      check=True,
      capture_output=True,
      text=True,
  )
  for name in ("README.md", "meta.jsonl"):
    assert (out / name).is_file()
  train_ids, labels = check_split(out, "train")
  valid_ids, _ = check_split(out, "valid")
  assert len(train_ids) == 2 and len(valid_ids) == 1
  assert check_split(out, "train_ext")[0] == train_ids + ["ext-0001", "ext-0002"]
  assert check_split(out, "valid_ext")[0] == valid_ids + ["ext-0003"]
  assert "sil" in labels and len(labels) > 5
  for align in read_jsonl(out / "train.align.jsonl"):
    phones = align["phones"]
    assert phones[0][0] == "sil" and phones[-1][0] == "sil"


def test_make_demo_corpus_rejects_a_negative_count(tmp_path):
  pytest.importorskip("soxr")
  out = tmp_path / "corpus"
  run = subprocess.run(
      [sys.executable, str(SCRIPT), "--out", str(out), "--num-train-ext", "-1"],
      capture_output=True,
      text=True,
  )
  assert run.returncode == 2
  assert "--num-train-ext: expected a count >= 0, got -1" in run.stderr
  assert not out.exists()  # Nothing written, nothing removed.
