"""Layer feature dumps: match extract_features per utterance, split across processes, resume
without redoing shards, record their hidden_states convention."""

import json
import os

import numpy as np
import jax
from flax import linen as nn

from jaxdisco.assets import demo_corpus_dir
from jaxdisco.clustering.features import dump_layer_features, load_layer_features
from jaxdisco.data.audio import read_audio
from jaxdisco.data.manifest import read_manifest
from jaxdisco.models.wav2vec2 import Wav2Vec2Backbone
from jaxdisco.pretrained import Pretrained

from conftest import tiny_model_config


def _tiny_model():
  cfg = tiny_model_config()
  variables = Wav2Vec2Backbone(cfg).init(jax.random.key(0), np.zeros((1, 4000), np.float32))
  return Pretrained(cfg, {"params": {"backbone": nn.meta.unbox(variables)["params"]}})


def test_dump_matches_per_utterance_features_and_resumes(tmp_path):
  model = _tiny_model()
  manifest = read_manifest(demo_corpus_dir() / "valid.tsv")
  out = dump_layer_features(
      model, manifest, 1, tmp_path / "dump", utterances_per_shard=6, batch_size=4, progress=None
  )
  features, ids = load_layer_features(out)
  assert ids == [manifest.utterance_id(i) for i in range(len(manifest))]
  for i in (0, 7, 15):
    single = model.extract_features(read_audio(manifest.audio_path(i)), output_layers=[1])
    np.testing.assert_allclose(features[i], np.asarray(single["hidden_states"][0][0]), atol=1e-4)
  shards = sorted(out.glob("features-*.npz"))
  assert len(shards) == 3
  # Two hosts: each writes its shards (k = process_index mod 2) into one directory.
  split = tmp_path / "two_processes"
  for process_index, expect in ((1, [1]), (0, [0, 1, 2])):
    dump_layer_features(
        model,
        manifest,
        1,
        split,
        utterances_per_shard=6,
        batch_size=4,
        process_index=process_index,
        process_count=2,
        progress=None,
    )
    written = sorted(p.name for p in split.glob("features-*.npz"))
    assert written == [shards[k].name for k in expect]
  split_features, split_ids = load_layer_features(split)
  assert split_ids == ids
  for a, b in zip(split_features, features):
    np.testing.assert_array_equal(a, b)
  stamp = os.stat(shards[0]).st_mtime_ns
  shards[2].unlink()  # as if killed before the last shard
  dump_layer_features(model, manifest, 1, out, utterances_per_shard=6, batch_size=4, progress=None)
  assert os.stat(shards[0]).st_mtime_ns == stamp and shards[2].exists()


def test_dump_reads_the_requested_convention_and_reports_progress(tmp_path):
  """The last layer of a pre-LN model, dumped in each hidden_states convention: meta.json
  records it and the frames are that convention's; the dump prints rate and ETA lines."""
  cfg = tiny_model_config(layer_norm_first=True)
  variables = Wav2Vec2Backbone(cfg).init(jax.random.key(0), np.zeros((1, 4000), np.float32))
  model = Pretrained(cfg, {"params": {"backbone": nn.meta.unbox(variables)["params"]}})
  manifest = read_manifest(demo_corpus_dir() / "valid.tsv")
  wav = read_audio(manifest.audio_path(0))
  lines, first_frames = [], {}
  for convention in ("transformers5", "transformers4"):
    out = dump_layer_features(
        model,
        manifest,
        cfg.num_layers,
        tmp_path / convention,
        utterances_per_shard=8,
        batch_size=8,
        hidden_states_convention=convention,
        progress=lines.append,
    )
    assert json.loads((out / "meta.json").read_text())["hidden_states_convention"] == convention
    first_frames[convention] = load_layer_features(out)[0][0]
    single = model.extract_features(wav, hidden_states_convention=convention)
    np.testing.assert_allclose(
        first_frames[convention], np.asarray(single["hidden_states"][-1][0]), atol=1e-4
    )
  # Entry L before (transformers5) and after (transformers4) the final LayerNorm.
  assert not np.allclose(first_frames["transformers5"], first_frames["transformers4"], atol=1e-2)
  final = lines[-1]
  assert final.startswith("features (transformers4) 16/16 utterances (100%)"), lines
  assert "utterances/s" in final and "ETA" in final
