"""`jaxdisco probe-layers` and `layer_probe.choose_layer` on a tiny HuBERT workdir (2 layers,
tests/data/legacy_fc50bab) with the demo corpus alignments."""

import json
import subprocess
import sys

import pytest

from conftest import REPO
from jaxdisco.assets import demo_corpus_dir
from jaxdisco.evaluation import layer_probe
from jaxdisco.pretrained import load_pretrained

MODEL = REPO / "tests" / "data" / "legacy_fc50bab" / "hubert"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  corpus = demo_corpus_dir()
  lines = (corpus / "train.tsv").read_text().splitlines()
  tmp = tmp_path_factory.mktemp("probe")
  (tmp / "m.tsv").write_text("\n".join([str(corpus / lines[0].strip())] + lines[1:25]) + "\n")
  return tmp / "m.tsv", corpus / "train.align.jsonl", corpus / "meta.jsonl"


def test_choose_layer_scores_every_layer_and_says_why(corpus):
  manifest, alignments, speakers = corpus
  choice = layer_probe.choose_layer(
      load_pretrained(MODEL), manifest, alignments, k=8, speakers=speakers, max_frames=2000
  )
  assert [r["layer"] for r in choice.scores] == [0, 1, 2]
  assert choice.criterion == "abx across-within"
  best = min(r["abx"]["across-within"] for r in choice.scores)
  chosen = next(r for r in choice.scores if r["layer"] == choice.layer)
  assert chosen["abx"]["across-within"] == best
  assert f"layer {choice.layer}: lowest ABX across-within" in choice.reason
  for r in choice.scores:  # 24 utterances leave 2 within-speaker triples: any rate may come.
    assert 0 < r["pnmi"] < 1 and 0 <= r["abx"]["within-within"] <= 1
  json.dumps(choice.to_json())  # A record the HuBERT loop can write as is.
  # Without items, PNMI decides; ties in ABX within the tolerance go to PNMI.
  no_abx = [dict(r, abx={}) for r in choice.scores]
  by_pnmi = layer_probe.choose_from_scores(no_abx)
  assert by_pnmi.criterion == "pnmi"
  assert by_pnmi.layer == max(no_abx, key=lambda r: r["pnmi"])["layer"]
  tied = layer_probe.choose_from_scores(choice.scores, tolerance=1.0)
  assert tied.layer == by_pnmi.layer


def test_probe_layers_command_writes_table_and_curve(corpus, tmp_path):
  manifest, alignments, speakers = corpus
  run = subprocess.run(
      [sys.executable, "-m", "jaxdisco.cli", "probe-layers", "--model", str(MODEL),
       "--manifest", str(manifest), "--alignments", str(alignments), "--speakers",
       str(speakers), "--k", "8", "--max-frames", "2000", "--skip-abx", "--out",
       str(tmp_path / "probe")],
      capture_output=True, text=True, check=False, timeout=600,
  )
  assert run.returncode == 0, run.stderr
  assert "| layer | PNMI |" in run.stdout and "chosen: layer" in run.stdout
  assert (tmp_path / "probe" / "probe.png").read_bytes()[:4] == b"\x89PNG"
  assert json.loads((tmp_path / "probe" / "probe.json").read_text())["criterion"] == "pnmi"
