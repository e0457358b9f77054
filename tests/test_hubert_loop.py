"""The HuBERT loop end to end at toy size on part of the demo corpus: every stage's outputs,
resuming after an interruption without recomputing finished stages, and config errors."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, load_config, shrink_for_tests
from jaxdisco.assets import demo_corpus_dir
from jaxdisco.clustering import kmeans as km
from jaxdisco.clustering import labels as lb
from jaxdisco.clustering.features import load_layer_features
from jaxdisco.data.manifest import read_manifest
from jaxdisco.data.mfcc import num_frames as mfcc_frames
from jaxdisco.models.config import ModelConfig
from jaxdisco.errors import ConfigError
from jaxdisco.train.hubert_loop import check_loop_config, run_hubert_loop

K = 8
STAGES = [
    "mfcc",
    "kmeans_mfcc",
    "train_it1",
    "features_it1",
    "kmeans_it1",
    "train_it2",
    "features_it2",
    "kmeans_it2",
]


def _subset_manifest(path, split, count):
  """The first `count` utterances of a demo split, as a manifest rooted at the corpus."""
  corpus = demo_corpus_dir()
  lines = (corpus / f"{split}.tsv").read_text().splitlines()
  path.write_text("\n".join([str(corpus / lines[0].strip())] + lines[1 : count + 1]) + "\n")
  return str(path)


def _tiny_config(root):
  config = shrink_for_tests(load_config("hubert_demo"))
  config.data.train_manifest = _subset_manifest(root / "train.tsv", "train", 24)
  config.data.valid_manifest = _subset_manifest(root / "valid.tsv", "valid", 6)
  config.data.min_samples = 16_000
  config.optim.warmup_steps = 5
  config.train.eval_every = config.train.checkpoint_every = 10
  config.train.log_every = 10
  loop = config.loop
  loop.mfcc_k = loop.layer_k = K
  loop.layer = 1
  loop.steps = (20, 20)
  loop.kmeans_fraction = 0.5
  loop.kmeans_max_iter = 5
  loop.kmeans_n_init = 1
  loop.utterances_per_shard = 16  # Two train shards: the subset and the shards are exercised.
  return config


def _stamps(directory):
  return {p: os.stat(p).st_mtime_ns for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def loop_run(tmp_path_factory):
  root = tmp_path_factory.mktemp("hubert_loop")
  config = _tiny_config(root)
  work = root / "work"
  first = run_hubert_loop(config, work, stop_after_stage=3)
  done_before = {s: _stamps(work / s) for s in STAGES[:3]}
  absent_before = [s for s in STAGES if not (work / s).exists()]
  final = run_hubert_loop(config, work)
  return config, work, first, done_before, absent_before, final


def test_interrupted_loop_resumes_without_recomputing(loop_run):
  _, work, first, done_before, absent_before, final = loop_run
  assert first["stopped_after"] == 3 and set(first["stages"]) == set(STAGES[:3])
  assert absent_before == STAGES[3:]
  for stage, stamps in done_before.items():
    assert _stamps(work / stage) == stamps, f"{stage} was recomputed"
  assert final["stopped_after"] is None and set(final["stages"]) == set(STAGES)
  for stage in STAGES:
    assert (work / stage / "done.json").exists()
  assert final["stages"]["train_it1"]["step"] == 20
  assert final["stages"]["train_it2"]["step"] == 20


def test_every_stage_output_has_the_right_shape(loop_run):
  config, work, *_, final = loop_run
  model_config = ModelConfig.from_dict(config.model.to_dict())
  for split in ("train", "valid"):
    manifest = read_manifest(config.data[f"{split}_manifest"])
    samples = [int(n) for n in manifest.num_samples]
    ids = [manifest.utterance_id(i) for i in range(len(manifest))]
    expected = {
        "mfcc": ([mfcc_frames(n) for n in samples], 39),
        "features_it1": ([model_config.num_frames(n) for n in samples], model_config.embed_dim),
        "features_it2": ([model_config.num_frames(n) for n in samples], model_config.embed_dim),
    }
    for features_stage, (lengths, dim) in expected.items():
      features, feature_ids = load_layer_features(work / features_stage / split)
      assert feature_ids == ids
      assert [f.shape for f in features] == [(n, dim) for n in lengths]
      kmeans_stage = {"mfcc": "kmeans_mfcc"}.get(
          features_stage, features_stage.replace("features", "kmeans")
      )
      labels = lb.read_km(work / kmeans_stage / f"{split}.km")
      assert [len(x) for x in labels] == lengths  # One line per utterance, one label per frame.
      assert min(x.min() for x in labels) >= 0 and max(x.max() for x in labels) < K
      assert lb.read_ids(lb.ids_path(work / kmeans_stage / f"{split}.km")) == ids
      assert lb.read_dict(work / kmeans_stage / lb.DICT_NAME) == K
      centroids, meta = km.load_centroids(work / kmeans_stage / "centroids")
      assert centroids.shape == (K, dim)
      assert (work / kmeans_stage / f"cooccurrence_{split}.png").stat().st_size > 1000
  rows = json.loads((work / "units_table.json").read_text())
  assert [(r["stage"], r["split"]) for r in rows] == [
      (s, split)
      for split in ("train", "valid")
      for s in ("kmeans_mfcc", "kmeans_it1", "kmeans_it2")
  ]
  for i, row in enumerate(rows):
    assert 0 < row["metrics"]["pnmi"] < 1 and row["k"] == K
    gain = row.get("gain_vs_previous")
    if row["stage"] == "kmeans_mfcc":
      assert gain is None
    else:  # Over the same utterances, so exactly the difference of the rows' PNMI.
      above = rows[i - 1]["metrics"]["pnmi"]
      assert gain["gain"] == pytest.approx(row["metrics"]["pnmi"] - above, abs=1e-9)
      assert gain["std"] > 0 and 0 <= gain["p_positive"] <= 1
  table = (work / "units_table.md").read_text()
  assert (
      "| MFCC k-means | 8 | train |" in table and table.count("\n|") == 8
  )  # Header, rule, 6 rows.


def test_rerun_after_deleting_a_marker_redoes_only_that_stage(loop_run):
  config, work, *_, final = loop_run
  stamps = {s: _stamps(work / s) for s in STAGES[:-1]}
  km_before = (work / "kmeans_it2" / "train.km").read_text()
  (work / "kmeans_it2" / "done.json").unlink()
  (work / "kmeans_it2" / "train.km").unlink()
  again = run_hubert_loop(config, work)
  for stage in STAGES[:-1]:
    assert _stamps(work / stage) == stamps[stage], f"{stage} was recomputed"
  assert (work / "kmeans_it2" / "train.km").read_text() == km_before
  assert again["table"] == final["table"]


def test_stages_done_before_fields_existed_are_kept(loop_run, tmp_path):
  """Markers written before some fields existed (here: removed from them) still hold while
  the config keeps those fields' defaults: the re-run skips every stage."""
  config, work, *_, final = loop_run
  copy = tmp_path / "work"
  shutil.copytree(work, copy)
  for marker in copy.glob("*/done.json"):
    record = json.loads(marker.read_text())
    inputs = record["inputs"]
    for block, field in (("model", "layer_norm_eps"), ("data", "buckets"), ("optim", "b1")):
      inputs.get(block, {}).pop(field, None)
    inputs.pop("kmeans_batch_size", None)  # A loop field, recorded by name.
    inputs.pop("kmeans_algorithm", None)  # Added with the streamed k-means.
    marker.write_text(json.dumps(record))
  stamps = {s: _stamps(copy / s) for s in STAGES}
  again = run_hubert_loop(config, copy)
  assert {s: _stamps(copy / s) for s in STAGES} == stamps
  assert again["table"] == final["table"]
  config = _tiny_config(work.parent)
  config.data.buckets = 2  # Not the default: the stages that read it are refused.
  refused = r"stage 'mfcc'.*\n.*data\.buckets: done with 0, config has 2"
  with pytest.raises(ConfigError, match=refused):
    run_hubert_loop(config, copy)


def chosen_is_best(probe):
  return probe["layer"] == max(probe["scores"], key=lambda r: (r["pnmi"], -r["layer"]))["layer"]


def test_auto_layer_is_chosen_by_the_probe_and_used_by_the_next_stages(loop_run, tmp_path):
  """loop.layer='auto' on the finished iteration 1 of the module's loop: a probe stage scores
  every hidden state on train utterances (PNMI of k-means at layer_k) and records its choice; the feature dump,
  the k-means centroids' metadata and the unit table all use that layer."""
  config, work, *_ = loop_run
  auto = tmp_path / "auto"
  for stage in STAGES[:3]:
    shutil.copytree(work / stage, auto / stage)
  config = _tiny_config(work.parent)
  config.loop.layer = "auto"
  config.loop.probe_utterances = 12
  result = run_hubert_loop(config, auto, stop_after_stage=6)
  probe = json.loads((auto / "probe_it1" / "probe.json").read_text())
  assert [r["layer"] for r in probe["scores"]] == [0, 1, 2]
  chosen = probe["layer"]
  assert all(0 <= r["pnmi"] <= 1 for r in probe["scores"])
  # PNMI at layer_k decides by default (loop.probe_abx=False): the best k-means units.
  assert probe["criterion"] == "pnmi" and "highest PNMI" in probe["reason"]
  assert chosen_is_best(probe)
  assert result["stages"]["probe_it1"]["layer"] == chosen
  assert result["stages"]["features_it1"]["train"]["layer"] == chosen
  _, meta = km.load_centroids(auto / "kmeans_it1" / "centroids")
  assert meta["layer"] == chosen
  assert f"iteration 1, layer {chosen} k-means" in result["table_markdown"]
  assert (auto / "probe_it1" / "probe.png").stat().st_size > 0


def test_streamed_kmeans_stage_fits_every_train_frame_from_the_dump(loop_run, tmp_path):
  """loop.kmeans_algorithm='streamed' on the module's MFCC dump: the k-means stage streams all
  train frames from the shards (no kmeans_fraction subset) and writes the usual outputs."""
  config, work, *_ = loop_run
  streamed = tmp_path / "streamed"
  shutil.copytree(work / "mfcc", streamed / "mfcc")
  config = _tiny_config(work.parent)
  config.loop.kmeans_algorithm = "streamed"
  result = run_hubert_loop(config, streamed, stop_after_stage=2)
  frames = sum(len(f) for f in load_layer_features(work / "mfcc" / "train")[0])
  summary = result["stages"]["kmeans_mfcc"]
  assert summary["fit_frames"] == frames
  centroids, meta = km.load_centroids(streamed / "kmeans_mfcc" / "centroids")
  assert centroids.shape == (K, 39) and meta["fit_frames"] == frames
  original = json.loads((work / "kmeans_mfcc" / "done.json").read_text())["summary"]
  assert original["fit_frames"] < frames  # The mini-batch stage fitted on kmeans_fraction.
  # Lloyd on every frame is no worse per frame than mini-batch on half of them (to 5%).
  assert summary["inertia_per_frame"] <= 1.05 * original["inertia_per_frame"]
  labels = lb.read_km(streamed / "kmeans_mfcc" / "train.km")
  assert sum(len(u) for u in labels) == frames


def test_auto_layer_without_alignments_takes_half_the_depth(tmp_path):
  from jaxdisco.train import hubert_loop

  config = check_loop_config(_tiny_config(tmp_path))
  config.loop.layer, config.loop.train_alignments = "auto", ""
  config.model.num_layers = 12
  summary = hubert_loop._probe(config, tmp_path / "unused", tmp_path / "probe")
  assert summary["layer"] == 6 and "no loop.train_alignments" in summary["reason"]


def test_finished_stage_with_other_settings_is_refused(loop_run):
  config, work, *_ = loop_run
  config = _tiny_config(work.parent)
  config.loop.kmeans_seed = 1
  with pytest.raises(ConfigError, match="kmeans_mfcc.*\n.*kmeans_seed"):
    run_hubert_loop(config, work)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("data.train_manifest", "/nonexistent/train.tsv", "data.train_manifest"),
        ("loop.mfcc_k", 1, "loop.mfcc_k: expected K >= 2"),
        ("loop.layer_k", 0, "loop.layer_k: expected K >= 2"),
        ("loop.layer", 3, r"loop.layer: expected 0..model.num_layers=2 or 'auto', got 3"),
        ("loop.layer", "best", r"loop.layer: expected .* or 'auto', got 'best'"),
        ("loop.probe_utterances", 0, "loop.probe_utterances: expected >= 1"),
        ("loop.steps", (20,), "loop.steps"),
        ("loop.feature_label_rate", 100.0, "loop.feature_label_rate"),
        ("loop.mfcc_label_rate", 50.0, "loop.mfcc_label_rate"),
        ("loop.kmeans_fraction", 0.0, "loop.kmeans_fraction"),
        ("loop.kmeans_algorithm", "faiss", "loop.kmeans_algorithm: expected 'minibatch' or"),
        ("loop.train_alignments", "/nonexistent.jsonl", "loop.train_alignments"),
    ],
)
def test_bad_config_names_the_field(field, value, message, tmp_path):
  config = _tiny_config(tmp_path)
  block, name = field.split(".")
  config[block][name] = value
  with pytest.raises(ConfigError, match=message):
    check_loop_config(config)


def test_cli_reports_a_bad_field(tmp_path):
  result = subprocess.run(
      [
          sys.executable,
          "-m",
          "jaxdisco.cli",
          "hubert-iterate",
          "--config",
          str(REPO / "configs" / "hubert_demo.py"),
          "--workdir",
          str(tmp_path / "work"),
          "--config.loop.mfcc_k=1",
      ],
      capture_output=True,
      text=True,
      check=False,
      timeout=120,
  )
  assert result.returncode != 0
  assert "loop.mfcc_k: expected K >= 2, got 1" in result.stderr
  assert not (tmp_path / "work" / "mfcc").exists()
