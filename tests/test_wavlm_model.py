"""WavLM encoder: parity with `transformers` `WavLMModel` (the PyTorch oracle) and HF checkpoint
import/export.

WavLM is jaxdisco's wav2vec 2.0 backbone with `model.relative_position_buckets` on. Tiny
random-init HF models (no downloads) use 16 buckets and a maximum distance of 12 frames, so
the 24-frame inputs reach all three bucket regimes (exact below 4 frames, log-spaced up to
12, shared beyond); the bias table, the gate projections and the per-head gate scales are
redrawn large enough that a wrong bucket, gate or order of operations shows.

Measured on CPU (float32), max abs over every hidden state and last_hidden_state, valid frames:
  post-LN / group norm:  unpadded 6.0e-6, padded batch 4.2e-6 (HF row by row, see below);
  pre-LN / layer norm:   unpadded 3.5e-6, padded batch 5.1e-6 (padded frames 4.4e-6).
With padding, group-norm models are compared row by row against HF on the unpadded utterance
(jaxdisco's layer-0 GroupNorm ignores padding, HF's includes it), as in test_hf_parity.py.
The tolerance (HIDDEN_ATOL there, 5e-5) leaves ~10x margin.
"""

from __future__ import annotations

import json

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from transformers.models.wavlm import modeling_wavlm as hf_wavlm  # noqa: E402

from conftest import tiny_model_config  # noqa: E402
from jaxdisco.errors import ConfigError  # noqa: E402
from jaxdisco.export import huggingface as hf_io  # noqa: E402
from jaxdisco.models.config import ModelConfig  # noqa: E402
from jaxdisco.models.hubert import HubertForPretraining  # noqa: E402
from jaxdisco.models.relative_position import relative_position_bucket  # noqa: E402
from jaxdisco.models.transformer import SelfAttention, remat_policy  # noqa: E402
from jaxdisco.models.wav2vec2 import Wav2Vec2Backbone  # noqa: E402
from jaxdisco.pretrained import load_pretrained  # noqa: E402
from test_hf_parity import (  # noqa: E402
    HIDDEN_ATOL,
    SAMPLES,
    SHORT,
    STYLES,
    TINY,
    _batch,
    _check_hidden_states,
    _extract,
    _import,
    _max_diff,
    _our_params,
    _randomize_norms,
    _state_dict,
    _tree_equal,
    _without_heads,
)

TINY_WAVLM = dict(TINY, num_buckets=16, max_bucket_distance=12)


def _randomize_wavlm(model):
  """HF initialises the gate scales to 1 and the gate projection and bias table at std 0.02:
  nearly constant gates and a negligible bias, which would hide mistakes in either."""
  _randomize_norms(model)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, hf_wavlm.WavLMAttention):
        module.gru_rel_pos_const.uniform_(0.5, 2.0)
        module.gru_rel_pos_linear.weight.normal_(0.0, 0.5)
        module.gru_rel_pos_linear.bias.normal_(0.0, 0.5)
        if hasattr(module, "rel_attn_embed"):
          module.rel_attn_embed.weight.normal_(0.0, 1.0)
  return model


@pytest.fixture(scope="module", params=sorted(STYLES))
def wavlm(request):
  torch.manual_seed(0)
  config = transformers.WavLMConfig(**TINY_WAVLM, **STYLES[request.param])
  model = _randomize_wavlm(transformers.WavLMModel(config).eval())
  cfg, params = _import(model)
  return model, cfg, params


def _hf_keys(state):
  """HF's weight-norm parametrization names as the legacy names the exporter writes."""
  return {
      k.replace("parametrizations.weight.original0", "weight_g").replace(
          "parametrizations.weight.original1", "weight_v"
      ): v
      for k, v in state.items()
  }


# ----------------------------------------------------------------------------- forward parity


def test_relative_position_buckets_match_hf():
  offsets = np.arange(-6000, 6001)  # Beyond any max_distance below, and 2 minutes of frames.
  for num_buckets, max_distance in ((320, 800), (16, 12), (8, 20), (33, 50)):
    attention = hf_wavlm.WavLMAttention(16, 4, num_buckets=num_buckets, max_distance=max_distance)
    want = attention._relative_positions_bucket(torch.from_numpy(offsets)).numpy()
    got = relative_position_bucket(offsets, num_buckets, max_distance)
    np.testing.assert_array_equal(got, want, err_msg=f"{num_buckets}/{max_distance}")


def test_hidden_states_match_hf(wavlm):
  model, cfg, params = wavlm
  assert (cfg.relative_position_buckets, cfg.relative_position_max_distance) == (16, 12)
  full, _ = _check_hidden_states(model, cfg, params, _batch(seed=2)[0])
  wav, attention_mask = _batch(seed=1)
  valid, padded = _check_hidden_states(model, cfg, params, wav, attention_mask)
  assert padded <= HIDDEN_ATOL, padded
  print(
      f"\n[wavlm {cfg.extractor_mode}/pre-LN={cfg.layer_norm_first}] max abs diff: unpadded "
      f"{full:.2e}, padded batch valid frames {valid:.2e}, padded frames {padded:.2e}"
  )
  # The bias matters at this size: without the table the last layer is far off.
  encoder = params["params"]["backbone"]["encoder"]
  no_table = {"embedding": jnp.zeros_like(encoder["relative_position"]["embedding"])}
  ablated = jax.tree.map(lambda x: x, params)  # New dicts, shared arrays.
  ablated["params"]["backbone"]["encoder"]["relative_position"] = no_table
  with torch.no_grad():
    hf = model(_batch(seed=2)[0], output_hidden_states=True)
  ours = _extract(cfg, ablated, _batch(seed=2)[0].numpy())
  assert _max_diff(hf.last_hidden_state, ours.last_hidden_state) > 1e-2


# ----------------------------------------------------------------------------- checkpoints


def test_hf_round_trip_is_lossless(wavlm, tmp_path):
  model, cfg, params = wavlm
  # HF -> ours -> HF: the same tensors under the same names.
  original = _hf_keys(_state_dict(model))
  exported = hf_io.params_to_hf(params, cfg, "wavlm")
  assert sorted(exported) == sorted(original)
  for key, value in original.items():
    np.testing.assert_array_equal(exported[key], value, err_msg=key)
  # Written to disk, transformers loads it as WavLMModel with nothing missing and computes
  # exactly what the original does.
  hf_io.save_hf_checkpoint(tmp_path, cfg, params, "wavlm")
  written = json.loads((tmp_path / "config.json").read_text())
  assert written["architectures"] == ["WavLMModel"] and written["model_type"] == "wavlm"
  loaded, info = transformers.WavLMModel.from_pretrained(tmp_path, output_loading_info=True)
  assert not any(info.values()), info
  wav, attention_mask = _batch(seed=3)
  with torch.no_grad():
    want = model(wav, attention_mask=attention_mask, output_hidden_states=True)
    got = loaded.eval()(wav, attention_mask=attention_mask, output_hidden_states=True)
  for a, b in zip(want.hidden_states, got.hidden_states, strict=True):
    assert torch.equal(a, b)
  assert torch.equal(want.last_hidden_state, got.last_hidden_state)
  # And read back by jaxdisco: the same config and bit-identical params.
  cfg_back, params_back, model_type = hf_io.load_hf_checkpoint(tmp_path)
  assert model_type == "wavlm" and cfg_back == cfg
  _tree_equal(params, params_back)
  # `load_pretrained` (what the tokenizer export and init-from read) sees a WavLM.
  pretrained = load_pretrained(tmp_path)
  assert pretrained.model_type == "wavlm"
  with torch.no_grad():
    plain = model(wav, output_hidden_states=True)
  features = pretrained.extract_features(wav.numpy())
  for a, b in zip(plain.hidden_states, features["hidden_states"], strict=True):
    assert _max_diff(a, b) <= HIDDEN_ATOL


def test_task_model_weights_import():
  """WavLMForCTC holds the backbone under `wavlm.`; its CTC head is dropped."""
  torch.manual_seed(0)
  model = transformers.WavLMForCTC(transformers.WavLMConfig(**TINY_WAVLM, vocab_size=5))
  cfg = hf_io.config_from_hf(model.config.to_dict())
  params = hf_io.params_from_hf(_state_dict(model), cfg)
  _tree_equal(params, hf_io.params_from_hf(_state_dict(model.wavlm), cfg))


@pytest.mark.parametrize("style", sorted(STYLES))
def test_params_round_trip_is_bit_exact(style):
  """Our params (every tensor random, in the tree `init` builds) -> HF -> ours."""
  cfg = hf_io.config_from_hf(transformers.WavLMConfig(**TINY_WAVLM, **STYLES[style]).to_dict())
  params = {"params": {"backbone": _our_params(cfg)["params"]["backbone"]}}
  _tree_equal(params, hf_io.params_from_hf(hf_io.params_to_hf(params, cfg, "wavlm"), cfg))


def test_config_round_trip_and_checks():
  for style in STYLES:
    hf_config = transformers.WavLMConfig(**TINY_WAVLM, **STYLES[style])
    cfg = hf_io.config_from_hf(hf_config.to_dict())
    hf_dict = hf_io.config_to_hf(cfg, "wavlm")
    assert hf_dict["architectures"] == ["WavLMModel"]
    back = hf_io.config_from_hf(transformers.WavLMConfig(**hf_dict).to_dict())
    assert _without_heads(back) == _without_heads(cfg)
  # HF's defaults are the published sizes: 320 buckets, 800 frames.
  base = hf_io.config_from_hf(transformers.WavLMConfig().to_dict())
  assert (base.relative_position_buckets, base.relative_position_max_distance) == (320, 800)
  # A WavLM exported as HuBERT would silently lose its bias; a HuBERT cannot be a WavLM.
  with pytest.raises(ValueError, match="only WavLM checkpoints have the relative position bias"):
    hf_io.config_to_hf(base, "hubert")
  with pytest.raises(ValueError, match="relative_position_buckets > 0"):
    hf_io.config_to_hf(ModelConfig(), "wavlm")
  with pytest.raises(ValueError, match="no quantizer/projection heads"):
    hf_io.params_to_hf({}, base, "wavlm", include_heads=True)
  with pytest.raises(ConfigError, match="relative_position_buckets"):
    ModelConfig(relative_position_buckets=2)
  with pytest.raises(ConfigError, match="relative_position_max_distance"):
    ModelConfig(relative_position_buckets=320, relative_position_max_distance=80)
  with pytest.raises(ConfigError, match="takes no attention bias"):
    ModelConfig(
        relative_position_buckets=320, attention="cudnn", dtype="bfloat16", attention_dropout=0.0
    )


# ----------------------------------------------------------------------------- jaxdisco side


def _param_paths(model, *args):
  """{'params/...' path: logical axis names} of `model.init(key, waveform, *args)`."""
  boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, SAMPLES)), *args))
  specs = flax.linen.get_partition_spec(boxed)
  leaves = jax.tree_util.tree_flatten_with_path(specs, is_leaf=lambda x: isinstance(x, tuple))[0]
  return {"/".join(str(k.key) for k in path): tuple(spec) for path, spec in leaves}


def test_option_off_leaves_parameters_unchanged_and_on_adds_named_ones():
  off = _param_paths(Wav2Vec2Backbone(tiny_model_config()))
  assert not [p for p in off if "position_gate" in p or "relative_position" in p]
  cfg = tiny_model_config(relative_position_buckets=16, relative_position_max_distance=12)
  on = _param_paths(Wav2Vec2Backbone(cfg))
  added = {p: spec for p, spec in on.items() if p not in off}
  assert set(off) <= set(on)
  assert added.pop("params/encoder/relative_position/embedding") == ("position_buckets", "heads")
  for i in range(cfg.num_layers):
    gate = f"params/encoder/layer_{i}/attention/position_gate/"
    assert added.pop(gate + "scale") == ("heads",)
    assert added.pop(gate + "proj/kernel") == (None, None)
    assert added.pop(gate + "proj/bias") == (None,)
  assert not added
  # The HuBERT head on top is the WavLM pretraining model.
  hubert = _param_paths(HubertForPretraining(cfg, num_classes=(7,)), None, None)
  assert "params/backbone/encoder/relative_position/embedding" in hubert


def test_bias_takes_the_xla_and_dropout_paths_alike():
  """The einsum path (attention dropout active) adds the bias as dot_product_attention does;
  a near-zero rate keeps its dropout from changing anything. A bias also steers an explicit
  "cudnn" module to XLA (this CPU has no cuDNN)."""
  rng = np.random.default_rng(0)
  b, t, dim, heads = 2, 9, 16, 4
  x = rng.standard_normal((b, t, dim)).astype(np.float32)
  key_valid = np.arange(t)[None] < np.array([[t], [t - 3]])
  bias = rng.standard_normal((heads, t, t)).astype(np.float32)
  module = SelfAttention(num_heads=heads, dropout=1e-9, implementation="xla")
  variables = flax.linen.meta.unbox(module.init(jax.random.key(0), x, key_valid, True, bias))
  xla = module.apply(variables, x, key_valid, True, bias)
  einsum = module.apply(variables, x, key_valid, False, bias, rngs={"dropout": jax.random.key(1)})
  np.testing.assert_allclose(np.asarray(einsum), np.asarray(xla), atol=1e-5)
  no_bias = module.apply(variables, x, key_valid, True, np.zeros_like(bias))
  assert np.abs(np.asarray(no_bias) - np.asarray(xla)).max() > 1e-2
  cudnn = SelfAttention(num_heads=heads, implementation="cudnn")
  np.testing.assert_array_equal(
      np.asarray(cudnn.apply(variables, x, key_valid, True, bias)), np.asarray(xla)
  )


def test_training_gradients_reach_the_bias_under_remat():
  cfg = tiny_model_config(
      relative_position_buckets=16, relative_position_max_distance=12, layerdrop=0.0
  )
  model = HubertForPretraining(cfg, num_classes=(7,))
  wav = jnp.asarray(np.random.default_rng(0).standard_normal((2, SAMPLES)), jnp.float32)
  padding = jnp.arange(SAMPLES)[None] >= jnp.array([[SAMPLES], [SHORT]])
  params = flax.linen.meta.unbox(model.init(jax.random.key(0), wav, padding, None))

  def loss(p):
    out = model.apply(
        p, wav, padding, None, deterministic=False, rngs={"dropout": jax.random.key(1)}
    )
    return jnp.sum(jnp.square(out.projections[0]) * out.frame_valid[..., None])

  with remat_policy("full"):
    grads = jax.jit(jax.grad(loss))(params)
  encoder = grads["params"]["backbone"]["encoder"]
  assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))
  assert float(jnp.abs(encoder["relative_position"]["embedding"]).max()) > 0
  assert float(jnp.abs(encoder["layer_1"]["attention"]["position_gate"]["scale"]).max()) > 0
