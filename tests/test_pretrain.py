"""The wav2vec 2.0 trainer end to end on the shipped demo corpus, at tiny size."""

import json
import shutil

import jax
import numpy as np
import pytest
import soundfile as sf

import jaxdisco
from jaxdisco.data.audio import AudioError
from jaxdisco.data.manifest import ManifestError
from jaxdisco.train.checkpoint import CheckpointMismatchError, load_pretrained_params
from jaxdisco.errors import ConfigError
from jaxdisco.train.metrics import read_metrics
from jaxdisco.train.pretrain import train_and_evaluate

REQUIRED_METRICS = (
    "step",
    "loss",
    "contrastive_loss",
    "diversity_loss",
    "code_perplexity",
    "accuracy",
    "learning_rate",
    "grad_norm",
    "steps_per_sec",
)


def test_run_writes_checkpoints_metrics_and_plot(tiny_demo_config, tmp_path):
  summary = train_and_evaluate(tiny_demo_config, tmp_path)
  rows = read_metrics(tmp_path)
  train_rows = [r for r in rows if "loss" in r]
  assert [r["step"] for r in train_rows] == [1, 2, 3, 4, 5, 6]
  for key in REQUIRED_METRICS:
    assert all(np.isfinite(r[key]) for r in train_rows), key
  assert any("valid_loss" in r for r in rows)
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == [
      "3",
      "6",
  ]
  assert (tmp_path / "curves.png").stat().st_size > 10_000
  assert list(tmp_path.glob("events.out.tfevents.*"))
  assert summary["step"] == 6
  method, config, params, step = load_pretrained_params(tmp_path)
  assert method == "wav2vec2" and step == 6 and config.embed_dim == 32
  assert params["params"]["backbone"]["mask_embedding"].shape == (32,)
  # The user-facing loader reads the same workdir and runs the trained encoder.
  import jaxdisco
  from jaxdisco.models.wav2vec2 import Wav2Vec2ForPretraining

  wav = np.random.default_rng(0).standard_normal((2, 8000)).astype(np.float32)
  features = jaxdisco.load_pretrained(tmp_path).extract_features(wav)
  model = Wav2Vec2ForPretraining(config)
  direct = model.apply(params, wav, None, method=model.extract_features)
  assert len(features["hidden_states"]) == config.num_layers + 1
  # Jitted vs eager XLA programs fuse differently: float32 rounding, ~2e-6.
  np.testing.assert_allclose(features["last_hidden_state"], direct.last_hidden_state, atol=1e-5)


def test_relative_workdir(tiny_demo_config, tmp_path, monkeypatch):
  """The README runs `--workdir demo-run`: a relative path must work (Orbax wants absolute)."""
  monkeypatch.chdir(tmp_path)
  tiny_demo_config.train.num_steps = 3
  tiny_demo_config.data.valid_manifest = ""
  summary = train_and_evaluate(tiny_demo_config, "relative-run")
  assert summary["step"] == 3
  assert (tmp_path / "relative-run" / "checkpoints" / "3").exists()
  # ... and so must loading it back the README's way, `jaxdisco.load_pretrained("demo-run")`.
  model = jaxdisco.load_pretrained("relative-run")
  out = model.extract_features(np.zeros((1, 16_000), np.float32))
  assert out["last_hidden_state"].shape == (1, 49, tiny_demo_config.model.embed_dim)


def test_resume_after_stop_equals_uninterrupted_run(tiny_demo_config, tmp_path):
  full = tmp_path / "full"
  train_and_evaluate(tiny_demo_config, full)
  resumed = tmp_path / "resumed"
  first = train_and_evaluate(tiny_demo_config, resumed, stop_after=4)
  assert first["preempted"] and first["step"] == 4
  train_and_evaluate(tiny_demo_config, resumed)
  losses = lambda d: {r["step"]: r["loss"] for r in read_metrics(d) if "loss" in r}
  full_losses, resumed_losses = losses(full), losses(resumed)
  assert list(resumed_losses) == [1, 2, 3, 4, 5, 6]
  for step in (5, 6):  # steps run after the restart: same data, same keys, same params
    np.testing.assert_allclose(resumed_losses[step], full_losses[step], rtol=1e-6)
  p_full = load_pretrained_params(full).params
  p_resumed = load_pretrained_params(resumed).params
  for a, b in zip(jax.tree.leaves(p_full), jax.tree.leaves(p_resumed)):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_checkpoint_from_another_config_is_refused(tiny_demo_config, tmp_path):
  tiny_demo_config.train.num_steps = 3
  train_and_evaluate(tiny_demo_config, tmp_path)
  tiny_demo_config.model.embed_dim = 64
  with pytest.raises(
      CheckpointMismatchError, match=r"model\.embed_dim: checkpoint has 32, config has 64"
  ):
    train_and_evaluate(tiny_demo_config, tmp_path)
  assert (tmp_path / "checkpoints" / "3").exists()  # nothing was lost


def test_bad_config_value_names_the_field(tiny_demo_config, tmp_path):
  tiny_demo_config.objective.mask_length = 40  # 8000-sample minimum crop is only 24 frames
  with pytest.raises(ConfigError, match=r"objective\.mask_length \(40 frames\).*data\.min_samples"):
    train_and_evaluate(tiny_demo_config, tmp_path)
  tiny_demo_config.objective.mask_length = 10
  tiny_demo_config.model.extractor_mode = "batch_norm"
  with pytest.raises(ConfigError, match=r"model\.extractor_mode"):
    train_and_evaluate(tiny_demo_config, tmp_path)


def _copy_corpus(tmp_path, corrupt_index):
  """A copy of the first 12 demo utterances with one replaced by garbage bytes."""
  from jaxdisco.assets import demo_corpus_dir

  src = demo_corpus_dir()
  lines = (src / "train.tsv").read_text().splitlines()[1:13]
  audio = tmp_path / "audio"
  audio.mkdir()
  for line in lines:
    shutil.copy(src / "audio" / line.split("\t")[0], audio)
  bad = audio / lines[corrupt_index].split("\t")[0]
  bad.write_bytes(b"not audio at all" * 100)
  manifest = tmp_path / "train.tsv"
  manifest.write_text("\n".join(["audio"] + lines) + "\n")
  return manifest, bad.name


def test_corrupt_audio_is_reported_before_training(tiny_demo_config, tmp_path):
  manifest, bad = _copy_corpus(tmp_path, 5)
  tiny_demo_config.data.train_manifest = str(manifest)
  with pytest.raises(ManifestError, match=bad):
    train_and_evaluate(tiny_demo_config, tmp_path / "run")


def test_corrupt_audio_mid_run_stops_with_file_name_and_keeps_checkpoints(
    tiny_demo_config, tmp_path
):
  manifest, bad = _copy_corpus(tmp_path, 5)
  good_copy = tmp_path / "good.flac"
  from jaxdisco.assets import demo_corpus_dir

  shutil.copy(demo_corpus_dir() / "audio" / bad, good_copy)
  (tmp_path / "audio" / bad).write_bytes(good_copy.read_bytes())  # healthy for the first run
  tiny_demo_config.data.train_manifest = str(manifest)
  tiny_demo_config.data.verify_files = False
  tiny_demo_config.data.valid_manifest = ""
  tiny_demo_config.train.num_steps = 12
  train_and_evaluate(tiny_demo_config, tmp_path / "run", stop_after=3)
  # The file goes bad while the job is down; 9 more steps cover every utterance 3 times.
  (tmp_path / "audio" / bad).write_bytes(b"not audio at all" * 100)
  with pytest.raises(AudioError, match=bad) as info:
    train_and_evaluate(tiny_demo_config, tmp_path / "run")
  assert any("training stopped at step" in note for note in getattr(info.value, "__notes__", []))
  kept = [p.name for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.isdigit()]
  assert "3" in kept  # what was saved before the bad file stays on disk


def test_wrong_sample_rate_is_reported(tiny_demo_config, tmp_path):
  audio = tmp_path / "audio"
  audio.mkdir()
  sf.write(audio / "a.flac", np.zeros(22050 * 2, np.float32), 22050)
  manifest = tmp_path / "train.tsv"
  manifest.write_text(f"audio\na.flac\t{22050 * 2}\n")
  tiny_demo_config.data.train_manifest = str(manifest)
  with pytest.raises(ManifestError, match=r"a\.flac.*22050.*16000"):
    train_and_evaluate(tiny_demo_config, tmp_path / "run")


def test_empty_manifest_is_reported(tiny_demo_config, tmp_path):
  manifest = tmp_path / "train.tsv"
  manifest.write_text("")
  tiny_demo_config.data.train_manifest = str(manifest)
  with pytest.raises(ManifestError, match="train.tsv"):
    train_and_evaluate(tiny_demo_config, tmp_path / "run")


def test_trains_from_prepared_shards_with_buckets_and_pipeline_masks(tiny_demo_config, tmp_path):
  from jaxdisco.assets import demo_corpus_dir
  from jaxdisco.data import prepare, sources

  prepared = tmp_path / "prepared"
  prepare.prepare(
      sources.open_source(demo_corpus_dir() / "train.tsv"), prepared, num_shards=2, num_workers=0
  )
  c = tiny_demo_config
  c.data.train_manifest = str(prepared)
  c.data.buckets = 2
  c.data.masks_in_pipeline = True
  c.train.num_steps = 4
  summary = train_and_evaluate(c, tmp_path / "run")
  assert summary["step"] == 4
  assert all(np.isfinite(r["loss"]) for r in read_metrics(tmp_path / "run") if "loss" in r)
