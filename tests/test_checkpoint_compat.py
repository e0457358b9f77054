"""Upgrades do not strand runs, and a saved model knows its method.

tests/data/legacy_fc50bab holds tiny wav2vec 2.0 and HuBERT workdirs written by commit fc50bab
(tools/make_legacy_checkpoints.py has the command): before checkpoints recorded their method,
and before a field absent from a saved config compared equal to its default.
"""

import json
import logging
import shutil

import ml_collections
import numpy as np
import pytest

from conftest import REPO
import jaxdisco
from jaxdisco.assets import demo_corpus_dir
from jaxdisco.parallel import mesh as mesh_lib
from jaxdisco.parallel import rules as rules_lib
from jaxdisco.train import checkpoint as ckpt
from jaxdisco import methods
from jaxdisco.errors import ConfigError
from jaxdisco.methods import check_config
from jaxdisco.methods.wav2vec2 import wav2vec2_defaults
from jaxdisco.train.pretrain import train_and_evaluate

LEGACY = REPO / "tests" / "data" / "legacy_fc50bab"


def _legacy_run(name, tmp_path):
  """(a copy of the legacy workdir `name`, its saved run config re-pointed at this checkout)."""
  work = tmp_path / name
  shutil.copytree(LEGACY / name, work)
  corpus = demo_corpus_dir()
  lines = (corpus / "train.tsv").read_text().splitlines()
  manifest = tmp_path / "train.tsv"
  manifest.write_text("\n".join([str(corpus / lines[0].strip())] + lines[1:9]) + "\n")
  config = ml_collections.ConfigDict(json.loads((work / "config.json").read_text()))
  config.data.train_manifest = str(manifest)
  if "labels" in config:
    config.labels.train = str(LEGACY / "labels" / "train.km")
  config.train.num_steps = 3
  config.train.checkpoint_every = config.train.eval_every = 3
  return work, config


def _edit_saved_configs(work, edit):
  """Applies `edit(dict)` to the run config in config.json and in every checkpoint's meta."""
  config_file = work / "config.json"
  config_file.write_text(json.dumps(edit(json.loads(config_file.read_text()))))
  for meta_file in work.glob("checkpoints/*/meta/metadata"):
    meta = json.loads(meta_file.read_text())
    meta["config"] = edit(meta["config"])
    meta_file.write_text(json.dumps(meta))


def _without(config, *paths):
  for path in paths:
    block, field = path.split(".")
    del config[block][field]
  return config


@pytest.mark.parametrize("name", ["wav2vec2", "hubert"])
def test_checkpoints_written_before_the_change_resume_and_load(name, tmp_path, caplog):
  work, config = _legacy_run(name, tmp_path)
  with caplog.at_level(logging.WARNING, logger="jaxdisco"):
    loaded = ckpt.load_pretrained_params(work)
  assert (loaded.method, loaded.step) == (name, 2)
  assert f"method {name!r} inferred from its parameters" in caplog.text
  assert jaxdisco.load_pretrained(work).model_type == name

  summary = train_and_evaluate(config, work)
  assert summary["step"] == 3
  meta = json.loads(next((work / "checkpoints" / "3" / "meta").glob("metadata")).read_text())
  assert meta["method"] == name  # New checkpoints record their method...
  caplog.clear()
  with caplog.at_level(logging.WARNING, logger="jaxdisco"):
    assert ckpt.load_pretrained_params(work).method == name
  assert "inferred" not in caplog.text  # ...and are not guessed at.


def test_fields_absent_from_a_saved_config_stand_for_their_defaults(tmp_path):
  """A checkpoint written before fields existed (here: removed from its saved configs) resumes
  when the config keeps their defaults, and is refused, naming them, when it does not."""
  work, config = _legacy_run("hubert", tmp_path)
  added = (
      "model.feature_projection_layer_norm",
      "model.layer_norm_eps",
      "objective.untie_final_proj",
  )
  _edit_saved_configs(work, lambda c: _without(c, *added))
  other = config.copy_and_resolve_references()
  other.model.layer_norm_eps = 1e-6
  with pytest.raises(
      ckpt.CheckpointMismatchError,
      match=r"model\.layer_norm_eps: checkpoint has 1e-05, config has 1e-06",
  ):
    train_and_evaluate(other, work)
  assert train_and_evaluate(config, work)["step"] == 3


def test_a_field_added_to_a_method_schema_resumes_at_its_default(tmp_path, monkeypatch):
  """A new parameter-shaping field with its default in the method's schema: a run saved before
  it existed resumes under the default and is refused under another value."""
  work, config = _legacy_run("hubert", tmp_path)
  hubert = methods.get_method("hubert")

  def defaults():
    c = hubert.defaults()
    c.objective.label_embedding_dim = 0  # The new field; 0 would mean "as before".
    return c

  extended = hubert.__class__(
      **{
          **{f: getattr(hubert, f) for f in hubert.__dataclass_fields__},
          "defaults": defaults,
          "param_fields": hubert.param_fields + ("objective.label_embedding_dim",),
      }
  )
  monkeypatch.setitem(methods.METHODS, "hubert", lambda: extended)
  config.objective.label_embedding_dim = 32
  with pytest.raises(
      ckpt.CheckpointMismatchError,
      match=r"objective\.label_embedding_dim: checkpoint has 0, config has 32",
  ):
    train_and_evaluate(config, work)
  config.objective.label_embedding_dim = 0
  ckpt.check_compatible(
      json.loads((work / "config.json").read_text()), json.loads(config.to_json()), "test"
  )


@pytest.mark.parametrize(
    "field, value, saved",
    [("labels.num_classes", 9, 8), ("objective.untie_final_proj", False, True)],
)
def test_parameter_shaping_fields_outside_model_are_named(field, value, saved, tmp_path):
  work, config = _legacy_run("hubert", tmp_path)
  block, name = field.split(".")
  config[block][name] = value
  with pytest.raises(
      ckpt.CheckpointMismatchError, match=rf"{field}: checkpoint has {saved}, config has {value}"
  ):
    train_and_evaluate(config, work)
  assert (work / "checkpoints" / "2").exists()  # Nothing was lost.


def test_hubert_checkpoint_exports_as_hubert(tmp_path):
  """The tokenizer and its hf/ copy take the model type from the checkpoint's method."""
  from jaxdisco.export.tokenizer import export_tokenizer

  work = tmp_path / "hubert"
  shutil.copytree(LEGACY / "hubert", work)
  centroids = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32)
  out = export_tokenizer(
      work, tmp_path / "tok", layer=1, centroids=centroids, export_lengths=(), progress=None
  )
  assert json.loads((out / "tokenizer.json").read_text())["model_type"] == "hubert"
  assert json.loads((out / "hf" / "config.json").read_text())["model_type"] == "hubert"


def test_batch_axes_come_from_the_rules_table():
  """Split the batch over `data` only (fsdp ranks then see the same rows): the config check,
  the mesh's batch parallelism and the batch sharding all follow the one rule."""
  config = wav2vec2_defaults()
  config.parallel.data, config.parallel.fsdp = 4, 2
  config.parallel.rules = tuple(
      (name, ("data",) if name == "batch" else axes) for name, axes in config.parallel.rules
  )
  config.data.batch_size = 4  # A multiple of data (4), not of data x fsdp (8).
  config.data.train_manifest = str(demo_corpus_dir() / "train.tsv")
  check_config(config, num_devices=8)
  rules = rules_lib.rules_from_config(config.parallel)
  amesh = mesh_lib.abstract_mesh(config.parallel, 8)
  assert mesh_lib.batch_parallelism(amesh, rules) == 4
  assert rules_lib.batch_sharding(amesh, rules).spec == rules_lib.PartitionSpec(("data",))
  config.data.batch_size = 6
  with pytest.raises(ConfigError, match=r"devices the batch is split over \(data = 4 of 8"):
    check_config(config, num_devices=8)
