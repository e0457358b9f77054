"""Numerical parity with Hugging Face `transformers` (the PyTorch oracle) and checkpoint I/O.

Tiny random-init HF models (no downloads) are imported through jaxdisco.export.huggingface and
must reproduce HF's hidden states and pretraining loss; our params must survive
params -> HF -> params bit-exactly and load into `from_pretrained` with no missing keys.

Measured on CPU (float32), for the record: hidden states agree to <= 9.1e-6 max abs, contrastive
loss / perplexities / total loss to <= 1e-6 relative. With padding, group-norm models are
compared row by row against HF on the unpadded utterance (jaxdisco's layer-0 GroupNorm ignores
padding; HF's includes it); layer-norm models are compared on the padded batch, padded frames
included.
Tolerances below leave ~5-10x margin for other CPUs and library versions.
"""

from __future__ import annotations

import dataclasses
import json
import os

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from transformers.models.wav2vec2 import modeling_wav2vec2 as hf_w2v  # noqa: E402

from jaxdisco.export import huggingface as hf_io  # noqa: E402
from jaxdisco.models.config import ModelConfig  # noqa: E402
from jaxdisco.models.wav2vec2 import Wav2Vec2ForPretraining  # noqa: E402
from jaxdisco.objectives.contrastive import contrastive_logits, wav2vec2_loss  # noqa: E402
from jaxdisco import pretrained as pretrained_lib  # noqa: E402
from jaxdisco.pretrained import load_pretrained  # noqa: E402

torch.set_num_threads(2)

HIDDEN_ATOL = 5e-5
LOSS_RTOL = 1e-5
SAMPLES = 8000  # 24 frames with the standard (10,5)+(3,2)x4+(2,2)x2 stack.
SHORT = 5000  # 15 frames: the padded second utterance.
NUM_NEGATIVES = 10
CODEBOOK = dict(
    num_codevector_groups=2, num_codevectors_per_group=8, codevector_dim=16, proj_codevector_dim=16
)
TINY = dict(
    conv_dim=[32] * 7,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
)
STYLES = {
    # BASE-like: group norm on the first conv, post-LN Transformer, no conv bias.
    "group_postln": dict(feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False),
    # LARGE-like: LayerNorm on every conv, pre-LN ("stable layer norm") Transformer, conv bias.
    "layer_preln": dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True),
}


def _randomize_norms(model):
  """Random-init HF norms are 1/0; make them non-trivial so a swapped scale/bias shows."""
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, (torch.nn.LayerNorm, torch.nn.GroupNorm)):
        module.weight.uniform_(0.5, 1.5)
        module.bias.normal_(0.0, 0.2)
  return model


def _state_dict(model):
  return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def _import(model):
  cfg = hf_io.config_from_hf(model.config.to_dict())
  return cfg, hf_io.params_from_hf(_state_dict(model), cfg)


def _batch(seed):
  """Two utterances; the second holds SHORT samples then zero padding."""
  wav = torch.randn(2, SAMPLES, generator=torch.Generator().manual_seed(seed))
  attention_mask = torch.ones(2, SAMPLES, dtype=torch.long)
  attention_mask[1, SHORT:] = 0
  wav[1, SHORT:] = 0.0
  return wav, attention_mask


def _extract(cfg, params, wav, padding_mask=None):
  model = Wav2Vec2ForPretraining(cfg)
  return model.apply(params, jnp.asarray(wav), padding_mask, method=model.extract_features)


def _max_diff(a, b, rows=None):
  diff = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max(-1)
  return float(diff[rows].max() if rows is not None else diff.max())


def _hf_hidden_states(hf_model, wav, attention_mask):
  """HF's hidden states (L + 1 entries) and last_hidden_state as numpy [batch, frames, dim].

  Group-norm models with padding run row by row on the unpadded utterances: jaxdisco's layer-0
  GroupNorm takes its statistics over valid frames only (a padded row equals the utterance
  alone, as the reference featurizes it), while HF's padded batch includes the padding.
  """
  group_norm = hf_model.config.feat_extract_norm == "group"
  if attention_mask is None or not group_norm:
    with torch.no_grad():
      hf = hf_model(wav, attention_mask=attention_mask, output_hidden_states=True)
    return [h.numpy() for h in hf.hidden_states], hf.last_hidden_state.numpy()
  rows = []
  for b in range(wav.shape[0]):
    length = int(attention_mask[b].sum())
    with torch.no_grad():
      rows.append(hf_model(wav[b : b + 1, :length], output_hidden_states=True))
  frames = hf_model._get_feature_vector_attention_mask(
      rows[0].last_hidden_state.shape[1], attention_mask
  ).shape[1]

  def stack(tensors):
    out = np.zeros((len(tensors), frames, tensors[0].shape[-1]), np.float32)
    for b, t in enumerate(tensors):
      out[b, : t.shape[1]] = t[0].numpy()
    return out

  hidden = [stack([r.hidden_states[i] for r in rows]) for i in range(len(rows[0].hidden_states))]
  return hidden, stack([r.last_hidden_state for r in rows])


def _check_hidden_states(hf_model, cfg, params, wav, attention_mask=None):
  """Compares every hidden state, the last one included, and last_hidden_state (both follow
  transformers 5.x: for pre-LN models entry L is before the final LayerNorm, last_hidden_state
  after it); returns (max diff on valid frames, on padded frames)."""
  hf_hidden, hf_last = _hf_hidden_states(hf_model, wav, attention_mask)
  padding_mask = None if attention_mask is None else jnp.asarray(attention_mask.numpy() == 0)
  ours = _extract(cfg, params, wav.numpy(), padding_mask)
  valid = np.asarray(ours.frame_valid)
  if attention_mask is not None:
    expected = hf_model._get_feature_vector_attention_mask(valid.shape[1], attention_mask)
    np.testing.assert_array_equal(valid, expected.numpy())
  num = cfg.num_layers
  assert len(hf_hidden) == len(ours.hidden_states) == num + 1
  pairs = [(hf_hidden[i], ours.hidden_states[i]) for i in range(num + 1)]
  pairs.append((hf_last, ours.last_hidden_state))
  worst_valid = max(_max_diff(a, b, valid) for a, b in pairs)
  row_by_row = attention_mask is not None and cfg.extractor_mode == "default"
  # Padded frames have no unpadded counterpart when HF ran row by row.
  check_pad = not valid.all() and not row_by_row
  worst_pad = max(_max_diff(a, b, ~valid) for a, b in pairs) if check_pad else 0.0
  assert worst_valid <= HIDDEN_ATOL, worst_valid
  return worst_valid, worst_pad


@pytest.fixture(scope="module", params=sorted(STYLES))
def w2v(request):
  torch.manual_seed(0)
  config = transformers.Wav2Vec2Config(
      **TINY, **CODEBOOK, **STYLES[request.param], num_negatives=NUM_NEGATIVES
  )
  model = _randomize_norms(transformers.Wav2Vec2ForPreTraining(config).eval())
  cfg, params = _import(model)
  return model, cfg, params


# ----------------------------------------------------------------------------- forward parity


def test_hidden_states_match_hf(w2v):
  model, cfg, params = w2v
  wav, attention_mask = _batch(seed=1)
  # Unpadded batch: every frame valid.
  full, _ = _check_hidden_states(model.wav2vec2, cfg, params, _batch(seed=2)[0])
  valid, padded = _check_hidden_states(model.wav2vec2, cfg, params, wav, attention_mask)
  # Padded frames: HF zeroes them before the positional conv and masks them as keys, exactly
  # as we do, and still computes their (meaningless) outputs; they agree as well.
  assert padded <= HIDDEN_ATOL, padded
  print(
      f"\n[{cfg.extractor_mode}/pre-LN={cfg.layer_norm_first}] hidden states max abs diff: "
      f"unpadded {full:.2e}, padded batch valid frames {valid:.2e}, padded frames {padded:.2e}"
  )


def test_hidden_states_conventions(w2v):
  """`load_pretrained(...).extract_features` follows transformers 5.x by default, every entry
  included; `hidden_states_convention="transformers4"` gives what HF 5.x returns with
  `tie_last_hidden_states` (the 4.x convention): entry L after the final LayerNorm."""
  model, cfg, params = w2v
  wav = _batch(seed=3)[0]
  pretrained = pretrained_lib.Pretrained(cfg, params)
  with torch.no_grad():
    hf5 = model.wav2vec2(wav, output_hidden_states=True)
  model.config.tie_last_hidden_states = True
  try:
    with torch.no_grad():
      hf4 = model.wav2vec2(wav, output_hidden_states=True)
  finally:
    del model.config.tie_last_hidden_states
  for hf, convention in ((hf5, "transformers5"), (hf4, "transformers4")):
    ours = pretrained.extract_features(wav.numpy(), hidden_states_convention=convention)
    for i, (a, b) in enumerate(zip(hf.hidden_states, ours["hidden_states"], strict=True)):
      assert _max_diff(a, b) <= HIDDEN_ATOL, (convention, i)
    assert _max_diff(hf.last_hidden_state, ours["last_hidden_state"]) <= HIDDEN_ATOL
  # The two differ in the last entry of pre-LN models only; asked for alone, entry L reads
  # the same convention.
  default = pretrained.extract_features(wav.numpy())["hidden_states"]
  old = pretrained.extract_features(wav.numpy(), hidden_states_convention="transformers4")
  last_differs = _max_diff(default[-1], old["hidden_states"][-1]) > 1e-3
  assert last_differs == cfg.layer_norm_first
  only_last = pretrained.extract_features(wav.numpy(), output_layers=[-1])["hidden_states"]
  np.testing.assert_allclose(only_last[0], default[-1], atol=1e-5)


# ----------------------------------------------------------------------------- loss parity


def test_pretraining_loss_matches_hf(w2v):
  model, cfg, params = w2v
  wav, attention_mask = _batch(seed=4)
  if cfg.extractor_mode == "default":
    # HF's group-norm models include padding in the layer-0 statistics (jaxdisco's do not,
    # see _hf_hidden_states); compare the loss on a batch without padding.
    attention_mask = None
  frames = cfg.num_frames(SAMPLES)
  frame_mask = (
      None
      if attention_mask is None
      else model._get_feature_vector_attention_mask(frames, attention_mask)
  )
  np.random.seed(0)  # HF's mask and negative samplers draw from numpy's global RNG.
  mask = hf_w2v._compute_mask_indices(
      (2, frames), mask_prob=0.5, mask_length=2, attention_mask=frame_mask, min_masks=2
  )
  negatives = hf_w2v._sample_negative_indices((2, frames), NUM_NEGATIVES, mask)
  mask_t = torch.tensor(mask)
  with torch.no_grad():
    hf = model(
        wav,
        attention_mask=attention_mask,
        mask_time_indices=mask_t,
        sampled_negative_indices=torch.tensor(negatives, dtype=torch.long),
        return_dict=True,
    )
    # Train mode changes only the quantizer's perplexity: soft softmax instead of hard codes
    # (its codes are gumbel-random, its perplexity is not).
    features = model.wav2vec2(
        wav, attention_mask=attention_mask, mask_time_indices=mask_t
    ).extract_features
    model.quantizer.train()
    try:
      _, hf_soft_perplexity = model.quantizer(features, mask_time_indices=mask_t)
    finally:
      model.quantizer.eval()

  out = Wav2Vec2ForPretraining(cfg).apply(
      params,
      jnp.asarray(wav.numpy()),
      None if attention_mask is None else jnp.asarray(attention_mask.numpy() == 0),
      jnp.asarray(mask),
      temperature=2.0,
      deterministic=True,
      gumbel_key=None,
  )
  # HF indexes the flattened batch*frames axis; ours are frame indices within the utterance.
  ours_negatives = jnp.asarray(negatives - (np.arange(2) * frames)[:, None, None])
  logits = contrastive_logits(
      out.context,
      out.targets,
      out.codes,
      ours_negatives,
      temperature=model.config.contrastive_logits_temperature,
  )
  weights = jnp.asarray(mask) & out.frame_valid
  num_vars = cfg.latent_vars * cfg.latent_groups
  weight = model.config.diversity_loss_weight
  terms = wav2vec2_loss(
      logits,
      weights,
      out.prob_perplexity,
      num_vars,
      out.feature_penalty,
      diversity_weight=weight,
      feature_penalty_weight=0.0,
  )
  num_masked = int(mask.sum())
  assert float(terms.num_masked) == num_masked

  # The negatives-equal-to-positive path (-inf in HF) must actually be exercised.
  codes = np.asarray(out.codes)
  neg_codes = np.take_along_axis(codes[:, None], np.asarray(ours_negatives)[..., None], axis=2)
  assert (neg_codes == codes[:, :, None]).all(-1)[mask].any()

  rel = lambda a, b: abs(float(a) - float(b)) / abs(float(b))
  checks = {
      "contrastive": rel(terms.contrastive_loss, hf.contrastive_loss),
      "code_perplexity": rel(out.code_perplexity, hf.codevector_perplexity),
      "prob_perplexity": rel(out.prob_perplexity, hf_soft_perplexity),
      # HF-style total with the soft perplexity (what training optimises).
      "total": rel(
          terms.loss * terms.num_masked,
          hf.contrastive_loss + weight * num_masked * (num_vars - hf_soft_perplexity) / num_vars,
      ),
  }
  # HF's eval-mode `loss` uses the hard-code perplexity; reproduce it from our terms too.
  eval_terms = wav2vec2_loss(
      logits,
      weights,
      out.code_perplexity,
      num_vars,
      out.feature_penalty,
      diversity_weight=weight,
      feature_penalty_weight=0.0,
  )
  checks["total_eval"] = rel(eval_terms.loss * eval_terms.num_masked, hf.loss)
  print(
      f"\n[{cfg.extractor_mode}/pre-LN={cfg.layer_norm_first}] loss rel diffs: "
      + ", ".join(f"{k} {v:.1e}" for k, v in checks.items())
  )
  for name, value in checks.items():
    assert value <= LOSS_RTOL, (name, value)
  proj = _max_diff(hf.projected_states.numpy(), out.context)
  proj_q = _max_diff(hf.projected_quantized_states.numpy(), out.targets)
  assert max(proj, proj_q) <= HIDDEN_ATOL, (proj, proj_q)


# ----------------------------------------------------------------------------- HuBERT


@pytest.mark.parametrize("style", sorted(STYLES))
@pytest.mark.parametrize("feat_proj_layer_norm", [True, False])
def test_hubert_hidden_states_match_hf(style, feat_proj_layer_norm):
  torch.manual_seed(0)
  # mask_time_prob 0: no masked_spec_embed in the checkpoint; the import zero-fills it.
  config = transformers.HubertConfig(
      **TINY,
      **STYLES[style],
      feat_proj_layer_norm=feat_proj_layer_norm,
      mask_time_prob=0.05 if feat_proj_layer_norm else 0.0,
  )
  model = _randomize_norms(transformers.HubertModel(config).eval())
  cfg, params = _import(model)
  assert cfg.feature_projection_layer_norm == feat_proj_layer_norm
  assert ("feature_norm" in params["params"]["backbone"]) == feat_proj_layer_norm
  wav, attention_mask = _batch(seed=5)
  valid, padded = _check_hidden_states(model, cfg, params, wav, attention_mask)
  assert padded <= HIDDEN_ATOL
  print(
      f"\n[hubert {style} feat_proj_ln={feat_proj_layer_norm}] max abs diff {valid:.2e} "
      f"(padded frames {padded:.2e})"
  )


# ----------------------------------------------------------------------------- round trips


def _tree_equal(a, b):
  flat_a = jax.tree_util.tree_flatten_with_path(a)[0]
  flat_b = dict(jax.tree_util.tree_flatten_with_path(b)[0])
  assert [p for p, _ in flat_a] == list(flat_b)
  for path, x in flat_a:
    y = flat_b[path]
    assert np.asarray(x).dtype == np.asarray(y).dtype == np.float32, path
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=str(path))


def _our_params(cfg, seed=0):
  """Random values in the exact tree, shapes and dtype `Wav2Vec2ForPretraining.init` gives
  (shapes via eval_shape: no compute), so every tensor, norms included, is non-trivial."""
  model = Wav2Vec2ForPretraining(cfg)
  wav = jnp.zeros((1, SAMPLES))
  mask = jnp.zeros((1, cfg.num_frames(SAMPLES)), bool)
  shapes = jax.eval_shape(
      lambda: flax.linen.meta.unbox(
          model.init(
              {"params": jax.random.key(0), "dropout": jax.random.key(1)},
              wav,
              None,
              mask,
              temperature=2.0,
          )
      )
  )
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(s.dtype), shapes)


def _our_cfg(style):
  return hf_io.config_from_hf(
      transformers.Wav2Vec2Config(**TINY, **CODEBOOK, **STYLES[style]).to_dict()
  )


@pytest.mark.parametrize("style", sorted(STYLES))
def test_params_round_trip_is_bit_exact(style):
  cfg = _our_cfg(style)
  params = _our_params(cfg)
  for include_heads in (True, False):
    state = hf_io.params_to_hf(params, cfg, include_heads=include_heads)
    back = hf_io.params_from_hf(state, cfg)
    expected = params if include_heads else {"params": {"backbone": params["params"]["backbone"]}}
    _tree_equal(expected, back)
  # HF -> ours -> HF: identical tensors; the parametrization names come back as weight_g/v.
  torch.manual_seed(0)
  hf_model = transformers.Wav2Vec2ForPreTraining(
      transformers.Wav2Vec2Config(**TINY, **CODEBOOK, **STYLES[style])
  )
  original = _state_dict(hf_model)
  exported = hf_io.params_to_hf(hf_io.params_from_hf(original, cfg), cfg)
  renamed = {
      k.replace("parametrizations.weight.original0", "weight_g").replace(
          "parametrizations.weight.original1", "weight_v"
      ): v
      for k, v in original.items()
  }
  assert sorted(exported) == sorted(renamed)
  for key, value in renamed.items():
    np.testing.assert_array_equal(exported[key], value, err_msg=key)


def _without_heads(cfg):
  """HF HuBERT configs carry no wav2vec 2.0 head fields; compare the backbone only."""
  heads = ("final_dim", "latent_vars", "latent_groups", "latent_dim", "dropout_features")
  return dataclasses.replace(cfg, **{k: getattr(ModelConfig(), k) for k in heads})


def test_config_round_trip_and_hf_accepts_it():
  for style in STYLES:
    cfg = _our_cfg(style)
    for model_type, config_cls in (
        ("wav2vec2", transformers.Wav2Vec2Config),
        ("hubert", transformers.HubertConfig),
    ):
      hf_dict = hf_io.config_to_hf(cfg, model_type)
      assert hf_dict["architectures"]
      hf_config = config_cls(**hf_dict)
      back = hf_io.config_from_hf(hf_config.to_dict())
      assert (
          (_without_heads(back) == _without_heads(cfg)) if model_type == "hubert" else back == cfg
      )
  base = ModelConfig()
  assert hf_io.config_from_hf(hf_io.config_to_hf(base)) == base
  no_ln = ModelConfig(feature_projection_layer_norm=False)
  assert _without_heads(
      hf_io.config_from_hf(hf_io.config_to_hf(no_ln, "hubert"))
  ) == _without_heads(no_ln)
  with pytest.raises(ValueError, match="feature_projection_layer_norm"):
    hf_io.config_to_hf(no_ln, "wav2vec2")
  with pytest.raises(ValueError, match="add_adapter"):
    hf_io.config_from_hf({**hf_io.config_to_hf(base), "add_adapter": True})


def test_save_loads_in_transformers_without_missing_keys(w2v, tmp_path):
  model, cfg, params = w2v
  wav, attention_mask = _batch(seed=6)
  backbone_only = {"params": {"backbone": params["params"]["backbone"]}}
  hf_io.save_hf_checkpoint(tmp_path / "base", cfg, backbone_only)
  loaded, info = transformers.Wav2Vec2Model.from_pretrained(
      tmp_path / "base", output_loading_info=True
  )
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  assert not info["mismatched_keys"] and not info["error_msgs"], info
  assert json.loads((tmp_path / "base" / "config.json").read_text())["architectures"] == [
      "Wav2Vec2Model"
  ]
  _check_hidden_states(loaded.eval(), cfg, params, wav, attention_mask)

  hf_io.save_hf_checkpoint(tmp_path / "full", cfg, params)
  loaded, info = transformers.Wav2Vec2ForPreTraining.from_pretrained(
      tmp_path / "full", output_loading_info=True
  )
  assert not any(info.values()), info
  for key, value in model.state_dict().items():
    np.testing.assert_array_equal(loaded.state_dict()[key].numpy(), value.numpy(), err_msg=key)


def test_hubert_save_loads_in_transformers(tmp_path):
  torch.manual_seed(0)
  model = _randomize_norms(
      transformers.HubertModel(transformers.HubertConfig(**TINY, **STYLES["group_postln"])).eval()
  )
  cfg, params = _import(model)
  hf_io.save_hf_checkpoint(tmp_path, cfg, params, "hubert")
  loaded, info = transformers.HubertModel.from_pretrained(tmp_path, output_loading_info=True)
  assert not any(info.values()), info
  cfg2, params2, model_type = hf_io.load_hf_checkpoint(tmp_path)
  assert model_type == "hubert" and cfg2 == cfg
  _tree_equal(params, params2)


def test_load_pretrained_from_hf_directory(w2v, tmp_path):
  model, cfg, params = w2v
  model.save_pretrained(tmp_path)  # HF's own writer: parametrizations.* names, wav2vec2. prefix.
  pretrained = load_pretrained(tmp_path)
  assert pretrained.config == cfg and pretrained.model_type == "wav2vec2"
  _tree_equal(params, pretrained.params)
  wav, attention_mask = _batch(seed=7)
  padding_mask = attention_mask.numpy() == 0
  out = pretrained.extract_features(wav.numpy(), padding_mask)
  ref = _extract(cfg, params, wav.numpy(), jnp.asarray(padding_mask))
  assert out["last_hidden_state"].shape == (2, cfg.num_frames(SAMPLES), cfg.embed_dim)
  assert len(out["hidden_states"]) == cfg.num_layers + 1
  np.testing.assert_array_equal(out["frame_valid"], ref.frame_valid)
  for a, b in zip(
      out["hidden_states"] + (out["last_hidden_state"],),
      ref.hidden_states + (ref.last_hidden_state,),
      strict=True,
  ):
    np.testing.assert_allclose(a, b, atol=1e-5)  # jit vs op-by-op fusion
  # Compiled once per input shape: a second call with the same shapes does not retrace.
  cache_size = pretrained_lib._run._cache_size()
  pretrained.extract_features(wav.numpy() * 0.5, padding_mask)
  assert pretrained_lib._run._cache_size() == cache_size
  # One utterance as a 1-D array: a batch of one, same as its row of the batch.
  single = pretrained.extract_features(wav[0].numpy())
  np.testing.assert_allclose(single["last_hidden_state"][0], ref.last_hidden_state[0], atol=1e-5)
  # A subset of layers runs only as deep as needed and returns them in the order asked.
  some = pretrained.extract_features(wav.numpy(), padding_mask, output_layers=(1, 0))
  assert len(some["hidden_states"]) == 2
  np.testing.assert_allclose(some["hidden_states"][0], ref.hidden_states[1], atol=1e-5)
  np.testing.assert_allclose(some["hidden_states"][1], ref.hidden_states[0], atol=1e-5)
  # pytorch_model.bin (torch pickle, weights_only) loads the same params.
  torch.save(model.state_dict(), tmp_path / hf_io.PYTORCH_NAME)
  os.remove(tmp_path / hf_io.SAFETENSORS_NAME)
  _tree_equal(params, hf_io.load_hf_checkpoint(tmp_path)[1])


def test_clear_errors(w2v, tmp_path):
  model, cfg, params = w2v
  with pytest.raises(FileNotFoundError, match="does not exist"):
    hf_io.load_hf_checkpoint(tmp_path / "nope")
  with pytest.raises(FileNotFoundError, match="config.json"):
    hf_io.load_hf_checkpoint(tmp_path)
  (tmp_path / "config.json").write_text(json.dumps(hf_io.config_to_hf(cfg)))
  with pytest.raises(FileNotFoundError, match="model.safetensors"):
    hf_io.load_hf_checkpoint(tmp_path)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    load_pretrained(tmp_path / "nope")
  # A training workdir also holds a config.json (the run config, no model_type): it must be
  # handed to the jaxdisco checkpoint reader, not parsed as an HF config.
  (tmp_path / "workdir").mkdir()
  (tmp_path / "workdir" / "config.json").write_text(json.dumps({"model": {}}))
  with pytest.raises(ValueError, match="not a Hugging Face directory|neither a Hugging Face"):
    load_pretrained(tmp_path / "workdir")

  state = _state_dict(model)
  # Known HF heads are dropped silently; anything else is an error naming the keys.
  hf_io.params_from_hf({**state, "lm_head.weight": np.zeros((3, 32), np.float32)}, cfg)
  with pytest.raises(ValueError, match="wav2vec2.encoder.mystery"):
    hf_io.params_from_hf({**state, "wav2vec2.encoder.mystery": np.zeros(1)}, cfg)
  bad = dict(state)
  bad["wav2vec2.encoder.layers.1.feed_forward.intermediate_dense.weight"] = np.zeros((65, 32))
  with pytest.raises(
      ValueError, match=r"intermediate_dense.weight: expected \(64, 32\), " r"found \(65, 32\)"
  ):
    hf_io.params_from_hf(bad, cfg)
  missing = {k: v for k, v in state.items() if "layers.1.final_layer_norm" not in k}
  with pytest.raises(ValueError, match="missing keys.*layers.1.final_layer_norm"):
    hf_io.params_from_hf(missing, cfg)
  # Heads are optional but each is all-or-nothing.
  no_heads = {k: v for k, v in state.items() if k.startswith("wav2vec2.")}
  assert set(hf_io.params_from_hf(no_heads, cfg)["params"]) == {"backbone"}
  with pytest.raises(ValueError, match="head 'quantizer' is incomplete"):
    hf_io.params_from_hf({k: v for k, v in state.items() if k != "quantizer.codevectors"}, cfg)
