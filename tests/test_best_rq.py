"""BEST-RQ: the on-device log-mel front end and the random-projection quantizer against numpy
references, frame geometry with padding, a tiny run that learns with its quantizer frozen,
resume == uninterrupted, the config checks, and both unit kinds through `jaxdisco.Tokenizer`."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from conftest import load_config, tiny_run_config
from jaxdisco import methods
from jaxdisco.assets import demo_corpus_dir
from jaxdisco.data import mfcc
from jaxdisco.errors import ConfigError
from jaxdisco.models import log_mel
from jaxdisco.models.config import conv_output_length
from jaxdisco.quantizers.random_projection import RandomProjectionQuantizer, random_projection_ids


def _numpy_normalized_log_mel(wav: np.ndarray, bins: int = 80) -> np.ndarray:
  """Kaldi fbank with np.fft (the repo's MFCC steps without the DCT), then per-bin
  normalisation over the utterance: an independent float64 reference."""
  frames = np.lib.stride_tricks.sliding_window_view(wav.astype(np.float64), 400)[::160]
  raw = mfcc._log_mel(frames, mfcc.povey_window(), mfcc.mel_filterbank(16000, bins))
  return (raw - raw.mean(0)) / np.sqrt(raw.var(0) + log_mel.NORM_EPS)


def test_log_mel_front_end_matches_a_numpy_fft_reference_with_padding():
  rng = np.random.default_rng(0)
  lengths = [16000, 9999, 4321]
  wav = np.zeros((3, 16000), np.float32)
  pad = np.ones((3, 16000), bool)
  for row, n in enumerate(lengths):
    wav[row, :n] = rng.standard_normal(n) * 0.1 * (row + 1)
    pad[row, :n] = False
  got, valid = jax.jit(log_mel.normalized_log_mel)(jnp.asarray(wav), jnp.asarray(pad))
  got, valid = np.asarray(got), np.asarray(valid)
  assert list(valid) == [mfcc.num_frames(n) for n in lengths]
  for row, n in enumerate(lengths):
    ref = _numpy_normalized_log_mel(wav[row, :n])
    np.testing.assert_allclose(got[row, : len(ref)], ref, atol=2e-3)
    assert not got[row, len(ref) :].any()  # Padding frames are 0.
  # Raw energies: float32 DFT matmul vs float64 rfft.
  frames = np.lib.stride_tricks.sliding_window_view(wav[0].astype(np.float64), 400)[::160]
  raw_ref = mfcc._log_mel(frames, mfcc.povey_window(), mfcc.mel_filterbank(16000, 80))
  np.testing.assert_allclose(np.asarray(log_mel.log_mel(jnp.asarray(wav[:1])))[0], raw_ref, atol=1e-4)


def test_quantizer_ids_match_numpy_nearest_code_and_golden_values():
  rng = np.random.default_rng(1)
  x = rng.standard_normal((2, 5, 320)).astype(np.float32)
  proj = rng.standard_normal((2, 320, 16)).astype(np.float32) * 0.1
  codes = rng.standard_normal((2, 32, 16)).astype(np.float32)
  codes /= np.linalg.norm(codes, axis=-1, keepdims=True)
  ids = np.asarray(random_projection_ids(jnp.asarray(x), jnp.asarray(proj), jnp.asarray(codes)))
  # numpy: L2 distance between the L2-normalised projection and every code, per codebook.
  ref = np.zeros((2, 5, 2), np.int64)
  for g in range(2):
    z = x.astype(np.float64) @ proj[g]
    z /= np.linalg.norm(z, axis=-1, keepdims=True)
    dist = np.linalg.norm(z[..., None, :] - codes[g].astype(np.float64), axis=-1)
    ref[..., g] = dist.argmin(-1)
  np.testing.assert_array_equal(ids, ref)
  assert ids[0, :, 0].tolist() == GOLDEN_IDS, ids[0, :, 0].tolist()

  # The module's init: Xavier-uniform projection, unit-norm standard-normal codes.
  q = RandomProjectionQuantizer(320, vocab=64, code_dim=16, num_codebooks=2)
  params = nn.meta.unbox(q.init(jax.random.key(0), jnp.zeros((1, 320))))["params"]
  bound = np.sqrt(6.0 / (320 + 16))
  assert params["projection"].shape == (2, 320, 16)
  assert np.abs(params["projection"]).max() <= bound and np.abs(params["projection"]).max() > 0.9 * bound
  np.testing.assert_allclose(np.linalg.norm(params["codebooks"], axis=-1), 1.0, rtol=1e-5)


# Codebook 0, utterance 0 of the fixed inputs above (numpy reference at the time of writing).
GOLDEN_IDS = [29, 7, 29, 29, 31]


def test_log_mel_frame_counts_agree_with_num_frames_and_padding():
  """For stacking (D, 4, 4) and two stride-2 stages: the conv subsampling over mel frames gives
  `num_frames` frames, `frame_validity` counts the valid ones, and a padded row's features equal
  the utterance's alone."""
  from conftest import tiny_model_config
  from jaxdisco.models.feature_encoder import ConvFeatureEncoder
  from jaxdisco.models.wav2vec2 import frame_validity

  lengths = [16000, 15999, 4001, 1040, 1039, 700]
  width = 16000
  rng = np.random.default_rng(2)
  wav = np.zeros((len(lengths), width), np.float32)
  pad = np.ones_like(wav, bool)
  for row, n in enumerate(lengths):
    wav[row, :n], pad[row, :n] = rng.standard_normal(n), False
  for conv_layers in ("[(16, 4, 4)]", "[(16, 3, 2)] * 2"):
    cfg = tiny_model_config(frontend="log_mel", conv_layers=conv_layers)
    assert cfg.frame_stride == 640  # 40 ms.
    encoder = ConvFeatureEncoder(cfg.conv_spec, "default", True)

    def features(w, p, params=None):
      mel, mel_lengths = log_mel.normalized_log_mel(w, p)
      if params is None:
        return encoder.init(jax.random.key(0), mel, mel_lengths)
      return encoder.apply(params, mel, mel_lengths)

    params = features(jnp.asarray(wav[:1]), jnp.asarray(pad[:1]))
    out = np.asarray(features(jnp.asarray(wav), jnp.asarray(pad), params))
    assert out.shape[1] == cfg.num_frames(width)
    expected = [max(0, int(conv_output_length(n, cfg.geometry_spec))) for n in lengths]
    assert expected == [max(0, cfg.num_frames(n)) for n in lengths]
    valid = frame_validity(jnp.asarray(pad), width, cfg, len(lengths))
    assert np.asarray(valid.sum(-1)).tolist() == expected
    for row in (2,):  # Group norm over valid frames: padding changes nothing.
      n, frames = lengths[row], expected[row]
      alone = np.asarray(features(jnp.asarray(wav[row : row + 1, :n]), None, params))
      assert alone.shape[1] == frames
      np.testing.assert_allclose(out[row, :frames], alone[0], atol=1e-4)


def _config(num_steps=6):
  config = tiny_run_config("best_rq_demo")
  config.data.train_manifest = str(demo_corpus_dir() / "train.tsv")
  config.train.num_steps = num_steps
  return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A tiny BEST-RQ run of 150 steps on the demo corpus (the front end and recipe of the demo)."""
  from jaxdisco.train.pretrain import train_and_evaluate

  workdir = tmp_path_factory.mktemp("best_rq") / "run"
  config = _config(150)
  config.train.log_every = 10
  config.train.eval_every = config.train.checkpoint_every = 150
  train_and_evaluate(config, workdir)
  return config, workdir


def test_tiny_run_learns_and_never_moves_the_frozen_quantizer(trained):
  from jaxdisco.train.checkpoint import load_pretrained_params
  from jaxdisco.train.metrics import read_metrics

  config, workdir = trained
  rows = [r for r in read_metrics(workdir) if "accuracy" in r and "loss" in r]
  assert all(np.isfinite(r["loss"]) for r in rows)
  start = np.mean([r["accuracy"] for r in rows[:2]])
  end = np.mean([r["accuracy"] for r in rows[-3:]])
  assert end > start + 0.05, (start, end)
  assert np.mean([r["loss"] for r in rows[-3:]]) < rows[0]["loss"] - 0.3, (rows[0], rows[-1])
  # The quantizer is the init's, bit for bit, after 150 updates with weight decay.
  method = methods.get_method("best_rq")
  model_config = method.check(config)
  init = method.boxed_init_fn(
      model_config, config, (config.data.batch_size, config.data.crop_samples), config.train.seed
  )
  initial = nn.meta.unbox(jax.jit(init)())["params"]
  loaded = load_pretrained_params(workdir)
  assert loaded.method == "best_rq"
  params = loaded.params["params"] if "params" in loaded.params else loaded.params
  for name in ("projection", "codebooks"):
    np.testing.assert_array_equal(params["quantizer"][name], initial["quantizer"][name])
  assert not np.allclose(params["heads"]["kernel"], initial["heads"]["kernel"])
  assert "mask_embedding" not in params["backbone"]  # Noise masking has none.


def test_resume_equals_an_uninterrupted_run(tmp_path):
  from jaxdisco.train.checkpoint import load_pretrained_params
  from jaxdisco.train.pretrain import train_and_evaluate

  train_and_evaluate(_config(), tmp_path / "full")
  train_and_evaluate(_config(), tmp_path / "resumed", stop_after=3)
  train_and_evaluate(_config(), tmp_path / "resumed")
  full = load_pretrained_params(tmp_path / "full").params
  resumed = load_pretrained_params(tmp_path / "resumed").params
  for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(resumed)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_checks_name_the_field_and_the_waveform_front_end_trains():
  base = load_config("best_rq_base")
  methods.check_config(base)
  for field, value, message in [
      ("quantizer.vocab", 1, "quantizer.vocab"),
      ("quantizer.code_dim", 0, "quantizer.code_dim"),
      ("quantizer.stack_frames", 2, "quantizer.stack_frames"),
      ("objective.mask_prob", 0.0, "objective.mask_prob"),
      ("objective.mask_length", 0, "objective.mask_length"),
      ("model.mask_noise_std", -1.0, "model.mask_noise_std"),
      ("model.frontend", "spectrogram", "model.frontend"),
  ]:
    bad = load_config("best_rq_base")
    block, name = field.split(".")
    bad[block][name] = value
    with pytest.raises(ConfigError, match=message):
      methods.check_config(bad)
  # The waveform encoder as the front end: 20 ms frames, so 2 stacked mel frames, and the mask
  # embedding (noise needs log-mel input frames).
  wave = _config()
  wave.model.frontend = "waveform"
  wave.model.conv_layers = "[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2"
  wave.model.mask_noise_std = 0.1
  with pytest.raises(ConfigError, match="model.mask_noise_std"):
    methods.check_config(wave)
  wave.model.mask_noise_std = 0.0
  with pytest.raises(ConfigError, match="quantizer.stack_frames=2"):
    methods.check_config(wave)
  wave.quantizer.stack_frames = 2
  wave.model.num_layers = 1
  method = methods.get_method("best_rq")
  model_config = methods.check_config(wave)
  params = nn.meta.unbox(jax.jit(method.boxed_init_fn(model_config, wave, (2, 16000), 0))())
  assert "mask_embedding" in params["params"]["backbone"]
  wav = jnp.asarray(np.random.default_rng(0).standard_normal((2, 16000)), jnp.float32)
  batch = {"waveform": wav, "padding_mask": jnp.zeros((2, 16000), bool).at[1, 9000:].set(True)}
  loss, metrics = jax.jit(lambda p: method.loss_fn(model_config, wave)(p, batch, jax.random.key(0), 0, True))(params)
  assert np.isfinite(float(loss)) and float(metrics["masked_frames"]) > 0


def test_both_unit_kinds_export_and_round_trip_through_the_tokenizer(trained, tmp_path):
  from jaxdisco import Tokenizer
  from jaxdisco.export.tokenizer import export_tokenizer
  from jaxdisco.models.best_rq import quantizer_targets
  from jaxdisco.quantizers.random_projection import RandomProjectionQuantizer as RPQ
  from jaxdisco.train.checkpoint import load_pretrained_params

  config, workdir = trained
  rng = np.random.default_rng(3)
  wav = rng.standard_normal((2, 16000)).astype(np.float32)
  pad = np.zeros_like(wav, bool)
  pad[1, 10000:] = True
  centroids = rng.standard_normal((5, config.model.embed_dim)).astype(np.float32)
  kinds = {"best_rq": dict(units="best_rq"), "kmeans": dict(units="kmeans", layer=1, centroids=centroids)}
  for name, kwargs in kinds.items():
    out = export_tokenizer(workdir, tmp_path / name, export_lengths=(16000,), progress=None, **kwargs)
    manifest = json.loads((out / "tokenizer.json").read_text())
    assert manifest["model_type"] == "best_rq" and manifest["hf"] is None
    assert not (out / "hf").exists()
    assert manifest["frame_rate"] == 25.0
    tok = Tokenizer.load(out)
    ids = tok.encode_batch(wav, pad)
    np.testing.assert_array_equal(ids, tok.encode_batch(wav, pad, backend="stablehlo"))
    assert ids.shape == (2, 24) and (ids[1, 15:] == -1).all() and (ids[:, :15] >= 0).all()
    assert len(tok.encode(wav[1, :10000])) == 15
    np.testing.assert_array_equal(tok.encode(wav[1, :10000]), ids[1, :15])
    if name == "best_rq":
      assert manifest["vocab_size"] == config.quantizer.vocab and manifest["layer"] is None
      # The units are the targets training predicted (normalize as the run: data.normalize).
      params = load_pretrained_params(workdir).params
      params = params["params"] if "params" in params else params
      model_config = methods.get_method("best_rq").check(config)
      from jaxdisco.export.unit_kinds import normalize_rows

      x = normalize_rows(jnp.asarray(wav), jnp.asarray(pad))
      q = RPQ(4 * model_config.mel_bins, config.quantizer.vocab, config.quantizer.code_dim)
      targets, _ = quantizer_targets(
          lambda s: q.apply({"params": params["quantizer"]}, s),
          model_config, 4, x, jnp.asarray(pad), 24,
      )
      np.testing.assert_array_equal(ids[0], np.asarray(targets)[0, :, 0])
      np.testing.assert_array_equal(ids[1, :15], np.asarray(targets)[1, :15, 0])
    else:
      assert manifest["vocab_size"] == 5 and ids.max() < 5
