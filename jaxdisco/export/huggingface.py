"""Conversion between jaxdisco parameters and Hugging Face `transformers` wav2vec 2.0 / HuBERT
/ WavLM checkpoints (config.json + model.safetensors / pytorch_model.bin).

Our params are the tree of `Wav2Vec2ForPretraining`: `{'params': {'backbone': {...},
'quantizer': ..., 'project_q': ..., 'final_proj': ...}}`, the three heads optional. Every
mapping is a pure relabelling plus transposition, so params -> HF -> params is bit-exact:

  * torch Conv1d weight [out, in, taps]  <-> our kernel [taps, in, out] (also the positional
    conv's weight_v, whose `in` is dim / groups);
  * torch Linear weight [out, in]        <-> our Dense kernel [in, out];
  * torch weight-norm gain [1, 1, taps]  <-> our weight_g [taps] (weight_norm(dim=2): one gain
    per kernel tap);
  * quantizer.codevectors [1, G*V, d/G]  <-> our codevectors [G*V, d/G];
  * WavLM gru_rel_pos_const [1, H, 1, 1] <-> our position_gate scale [H];
  * LayerNorm / GroupNorm weight          <-> our `scale`.

One table, `_entries(cfg)`, lists every (HF key, our path, kind, HF shape); import, export
and the shape checks all read it, so the two directions cannot drift apart.

WavLM is the HuBERT-style backbone with `relative_position_buckets` on: HF's
`encoder.layers.0.attention.rel_attn_embed` (the one bias table, kept in layer 0) maps to our
encoder-level `relative_position` table, and every layer's `gru_rel_pos_linear` /
`gru_rel_pos_const` to that layer's `attention/position_gate`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterator, Mapping, NamedTuple

import numpy as np

from jaxdisco.errors import MissingFileError
from jaxdisco.export.torch_layout import as_numpy, set_path, to_jaxdisco, weight_norm_aliases
from jaxdisco.models.config import ModelConfig, parse_conv_layers

MODEL_TYPES = ("wav2vec2", "hubert", "wavlm")
# The HF base model each model type exports as when it carries no wav2vec 2.0 heads.
_BASE_ARCHITECTURES = {"wav2vec2": "Wav2Vec2Model", "hubert": "HubertModel", "wavlm": "WavLMModel"}
# Prefixes under which the backbone sits in HF task models (Wav2Vec2ForPreTraining / ForCTC /
# HubertForCTC / WavLMForCTC ...); base models (Wav2Vec2Model, ...) store it unprefixed.
_BACKBONE_PREFIXES = ("wav2vec2.", "hubert.", "wavlm.")
# HF task heads that have no counterpart here; their weights are dropped on import.
# (Wav2Vec2ForXVector names its top-level Linear `feature_extractor`, hence the exact names.)
_IGNORED_HEAD_PREFIXES = (
    "lm_head.",
    "projector.",
    "classifier.",
    "layer_weights",
    "tdnn.",
    "objective.",
    "feature_extractor.weight",
    "feature_extractor.bias",
)
# Weight-norm parameter names: legacy `torch.nn.utils.weight_norm` attributes and the
# `parametrizations` form that transformers 5.x modules hold; both are accepted on import.
_POS_CONV = "encoder.pos_conv_embed.conv."
_WEIGHT_NORM_ALIASES = weight_norm_aliases(_POS_CONV)
_HEADS = ("quantizer", "project_q", "final_proj")
# WavLM's gru_rel_pos_linear outputs per head (models/relative_position.py; not imported, so
# that this module stays free of jax).
_GATE_OUTPUTS = 8
SAFETENSORS_NAME = "model.safetensors"
PYTORCH_NAME = "pytorch_model.bin"
CONFIG_NAME = "config.json"


# ----------------------------------------------------------------------------- configs


def config_from_hf(hf_config: Mapping[str, Any]) -> ModelConfig:
  """HF `config.json` dict (Wav2Vec2Config, HubertConfig or WavLMConfig) -> ModelConfig.

  Fields with no HF counterpart (feature_grad_mult, dtype) keep their defaults. Architecture
  options our model does not implement (adapters, batch-normed positional conv, activations
  other than exact GELU) raise instead of silently producing a different network.
  """
  c = dict(hf_config)
  model_type = c.get("model_type", "wav2vec2")
  _check_supported(c)
  conv_dim, kernels, strides = c.get("conv_dim"), c.get("conv_kernel"), c.get("conv_stride")
  if conv_dim is None:  # HF defaults (BASE extractor) when a config omits them.
    conv_dim, kernels, strides = [512] * 7, [10, 3, 3, 3, 3, 2, 2], [5, 2, 2, 2, 2, 2, 2]
  if not len(conv_dim) == len(kernels) == len(strides):
    raise ValueError(
        f"HF config: conv_dim/conv_kernel/conv_stride lengths differ: "
        f"{len(conv_dim)}/{len(kernels)}/{len(strides)}"
    )
  norm = c.get("feat_extract_norm", "group")
  if norm not in ("group", "layer"):
    raise ValueError(f"HF config: feat_extract_norm must be 'group' or 'layer', got {norm!r}")
  final_dim = int(c.get("proj_codevector_dim", 256))
  codevector_dim = int(c.get("codevector_dim", final_dim))
  fields = dict(
      conv_layers=_conv_spec_string(
          [(int(d), int(k), int(s)) for d, k, s in zip(conv_dim, kernels, strides)]
      ),
      extractor_mode="default" if norm == "group" else "layer_norm",
      conv_bias=bool(c.get("conv_bias", False)),
      embed_dim=int(c.get("hidden_size", 768)),
      num_layers=int(c.get("num_hidden_layers", 12)),
      num_heads=int(c.get("num_attention_heads", 12)),
      ffn_dim=int(c.get("intermediate_size", 3072)),
      layer_norm_first=bool(c.get("do_stable_layer_norm", False)),
      pos_conv_kernel=int(c.get("num_conv_pos_embeddings", 128)),
      pos_conv_groups=int(c.get("num_conv_pos_embedding_groups", 16)),
      layer_norm_eps=float(c.get("layer_norm_eps", 1e-5)),
      dropout=float(c.get("hidden_dropout", 0.1)),
      attention_dropout=float(c.get("attention_dropout", 0.1)),
      activation_dropout=float(c.get("activation_dropout", 0.1)),
      dropout_input=float(c.get("feat_proj_dropout", 0.0)),
      dropout_features=float(c.get("feat_quantizer_dropout", 0.0)),
      layerdrop=float(c.get("layerdrop", 0.1)),
      final_dim=final_dim,
      latent_vars=int(c.get("num_codevectors_per_group", 320)),
      latent_groups=int(c.get("num_codevector_groups", 2)),
      # latent_dim 0 means "same as final_dim"; normalising keeps config round trips equal.
      latent_dim=0 if codevector_dim == final_dim else codevector_dim,
      feature_projection_layer_norm=(
          bool(c.get("feat_proj_layer_norm", True)) if model_type == "hubert" else True
      ),
  )
  if model_type == "wavlm":
    fields.update(
        relative_position_buckets=int(c.get("num_buckets", 320)),
        relative_position_max_distance=int(c.get("max_bucket_distance", 800)),
    )
  return ModelConfig(**fields)


def _conv_spec_string(layers: list[tuple[int, int, int]]) -> str:
  """Run-length form of the spec, e.g. "[(512, 10, 5)] + [(512, 3, 2)] * 4 + ...", the form
  configs are written in (so the BASE stack reads back as the default string)."""
  runs: list[list] = []
  for layer in layers:
    if runs and runs[-1][0] == layer:
      runs[-1][1] += 1
    else:
      runs.append([layer, 1])
  return " + ".join(f"[{layer}]" + (f" * {n}" if n > 1 else "") for layer, n in runs)


def _check_supported(c: Mapping[str, Any]) -> None:
  model_type = c.get("model_type", "wav2vec2")
  if model_type not in MODEL_TYPES:
    raise ValueError(
        f"HF config: model_type {model_type!r} is not supported; expected one of " f"{MODEL_TYPES}"
    )
  problems = []
  for key in ("hidden_act", "feat_extract_activation"):
    if c.get(key, "gelu") != "gelu":
      problems.append(f"{key}={c[key]!r} (only 'gelu' is implemented)")
  if c.get("add_adapter"):
    problems.append("add_adapter=True")
  if c.get("adapter_attn_dim") is not None:
    problems.append(f"adapter_attn_dim={c['adapter_attn_dim']}")
  if c.get("conv_pos_batch_norm"):
    problems.append("conv_pos_batch_norm=True")
  if problems:
    raise ValueError(
        "HF config uses options jaxdisco's model does not implement: " + ", ".join(problems)
    )


def config_to_hf(
    cfg: ModelConfig, model_type: str = "wav2vec2", *, architecture: str | None = None
) -> dict[str, Any]:
  """ModelConfig -> complete HF `config.json` dict.

  `architecture` defaults to Wav2Vec2ForPreTraining / HubertModel / WavLMModel. A model with
  the relative position bias is a WavLM and exports only as one. Training-only HF fields that
  ModelConfig does not carry (mask_time_prob, num_negatives, ...) take HF's defaults;
  mask_time_prob stays > 0 so that HF keeps `masked_spec_embed` and loads ours.
  """
  _check_model_type(model_type)
  if model_type != "hubert" and not cfg.feature_projection_layer_norm:
    raise ValueError(
        f"{model_type} checkpoints always have the feature-projection LayerNorm; "
        "feature_projection_layer_norm=False is only expressible as model_type "
        "'hubert'"
    )
  if (model_type == "wavlm") != bool(cfg.relative_position_buckets):
    raise ValueError(
        "only WavLM checkpoints have the relative position bias: model_type 'wavlm' needs "
        "relative_position_buckets > 0 and the other types 0 (got "
        f"{model_type!r}, {cfg.relative_position_buckets})"
    )
  spec = cfg.conv_spec
  if architecture is None:
    pretraining = model_type == "wav2vec2"
    architecture = "Wav2Vec2ForPreTraining" if pretraining else _BASE_ARCHITECTURES[model_type]
  out: dict[str, Any] = {
      "architectures": [architecture],
      "model_type": model_type,
      "conv_dim": [d for d, _, _ in spec],
      "conv_kernel": [k for _, k, _ in spec],
      "conv_stride": [s for _, _, s in spec],
      "num_feat_extract_layers": len(spec),
      "conv_bias": cfg.conv_bias,
      "feat_extract_norm": "group" if cfg.extractor_mode == "default" else "layer",
      "feat_extract_activation": "gelu",
      "hidden_act": "gelu",
      "do_stable_layer_norm": cfg.layer_norm_first,
      "hidden_size": cfg.embed_dim,
      "num_hidden_layers": cfg.num_layers,
      "num_attention_heads": cfg.num_heads,
      "intermediate_size": cfg.ffn_dim,
      "num_conv_pos_embeddings": cfg.pos_conv_kernel,
      "num_conv_pos_embedding_groups": cfg.pos_conv_groups,
      "layer_norm_eps": cfg.layer_norm_eps,
      "hidden_dropout": cfg.dropout,
      "attention_dropout": cfg.attention_dropout,
      "activation_dropout": cfg.activation_dropout,
      "feat_proj_dropout": cfg.dropout_input,
      "layerdrop": cfg.layerdrop,
      "final_dropout": 0.1,
      "apply_spec_augment": True,
      "mask_time_prob": 0.05,
      "mask_time_length": 10,
      "mask_time_min_masks": 2,
      "mask_feature_prob": 0.0,
      "mask_feature_length": 10,
      "mask_feature_min_masks": 0,
      "vocab_size": 32,
      "pad_token_id": 0,
      "bos_token_id": 1,
      "eos_token_id": 2,
      "initializer_range": 0.02,
      "use_weighted_layer_sum": False,
      "classifier_proj_size": 256,
      "ctc_loss_reduction": "sum",
      "ctc_zero_infinity": False,
  }
  if model_type == "wav2vec2":
    out.update(
        {
            "feat_quantizer_dropout": cfg.dropout_features,
            "num_codevectors_per_group": cfg.latent_vars,
            "num_codevector_groups": cfg.latent_groups,
            "codevector_dim": cfg.codevector_dim,
            "proj_codevector_dim": cfg.final_dim,
            "contrastive_logits_temperature": 0.1,
            "num_negatives": 100,
            "diversity_loss_weight": 0.1,
            "add_adapter": False,
            "adapter_attn_dim": None,
        }
    )
  elif model_type == "hubert":
    out.update(
        {"feat_proj_layer_norm": cfg.feature_projection_layer_norm, "conv_pos_batch_norm": False}
    )
  else:
    out.update(
        {
            "num_buckets": cfg.relative_position_buckets,
            "max_bucket_distance": cfg.relative_position_max_distance,
            "add_adapter": False,
        }
    )
  return out


def _check_model_type(model_type: str) -> None:
  if model_type not in MODEL_TYPES:
    raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}")


# ----------------------------------------------------------------------------- key table


class _Entry(NamedTuple):
  hf_key: str  # without any backbone prefix
  path: tuple[str, ...]  # inside params['params']
  kind: str  # "copy", "linear", "conv", "gain", "codevectors", "per_head"
  hf_shape: tuple[int, ...]
  head: str | None  # None for the backbone, else the optional head it belongs to


def _entries(cfg: ModelConfig) -> Iterator[_Entry]:
  """Every parameter of the model, backbone first, then the heads."""
  bb = ("backbone",)

  def vec(hf, path, n, head=None):
    return _Entry(hf, path, "copy", (n,), head)

  def linear(hf, path, n_in, n_out, head=None):
    yield _Entry(hf + ".weight", path + ("kernel",), "linear", (n_out, n_in), head)
    yield _Entry(hf + ".bias", path + ("bias",), "copy", (n_out,), head)

  def norm(hf, path, n):
    yield vec(hf + ".weight", path + ("scale",), n)
    yield vec(hf + ".bias", path + ("bias",), n)

  in_ch = 1
  for i, (ch, k, _) in enumerate(parse_conv_layers(cfg.conv_layers)):
    hf, ours = f"feature_extractor.conv_layers.{i}.", bb + ("feature_encoder", f"conv_{i}")
    yield _Entry(hf + "conv.weight", ours + ("kernel",), "conv", (ch, in_ch, k), None)
    if cfg.conv_bias:
      yield vec(hf + "conv.bias", ours + ("bias",), ch)
    if cfg.extractor_mode == "layer_norm" or i == 0:
      yield from norm(hf + "layer_norm", ours + ("norm",), ch)
    in_ch = ch
  d, conv_dim = cfg.embed_dim, cfg.conv_dim
  if cfg.feature_projection_layer_norm:
    yield from norm("feature_projection.layer_norm", bb + ("feature_norm",), conv_dim)
  yield from linear("feature_projection.projection", bb + ("feature_projection",), conv_dim, d)
  yield vec("masked_spec_embed", bb + ("mask_embedding",), d)
  enc = bb + ("encoder",)
  heads, buckets = cfg.num_heads, cfg.relative_position_buckets
  if buckets:
    yield _Entry(
        "encoder.layers.0.attention.rel_attn_embed.weight",
        enc + ("relative_position", "embedding"),
        "copy",
        (buckets, heads),
        None,
    )
  k = cfg.pos_conv_kernel
  yield _Entry(_POS_CONV + "weight_g", enc + ("pos_conv", "weight_g"), "gain", (1, 1, k), None)
  yield _Entry(
      _POS_CONV + "weight_v",
      enc + ("pos_conv", "weight_v"),
      "conv",
      (d, d // cfg.pos_conv_groups, k),
      None,
  )
  yield vec(_POS_CONV + "bias", enc + ("pos_conv", "bias"), d)
  yield from norm("encoder.layer_norm", enc + ("norm",), d)
  for i in range(cfg.num_layers):
    hf, ours = f"encoder.layers.{i}.", enc + (f"layer_{i}",)
    for hf_name, name in (
        ("q_proj", "query"),
        ("k_proj", "key"),
        ("v_proj", "value"),
        ("out_proj", "out"),
    ):
      yield from linear(hf + "attention." + hf_name, ours + ("attention", name), d, d)
    if buckets:
      gate = ours + ("attention", "position_gate")
      gate_linear = hf + "attention.gru_rel_pos_linear"
      yield from linear(gate_linear, gate + ("proj",), d // heads, _GATE_OUTPUTS)
      yield _Entry(
          hf + "attention.gru_rel_pos_const", gate + ("scale",), "per_head", (1, heads, 1, 1), None
      )
    yield from norm(hf + "layer_norm", ours + ("attention_norm",), d)
    yield from linear(hf + "feed_forward.intermediate_dense", ours + ("ffn_in",), d, cfg.ffn_dim)
    yield from linear(hf + "feed_forward.output_dense", ours + ("ffn_out",), cfg.ffn_dim, d)
    yield from norm(hf + "final_layer_norm", ours + ("ffn_norm",), d)
  gv, cv = cfg.latent_groups * cfg.latent_vars, cfg.codevector_dim
  yield _Entry(
      "quantizer.codevectors",
      ("quantizer", "codevectors"),
      "codevectors",
      (1, gv, cv // cfg.latent_groups),
      "quantizer",
  )
  yield from linear("quantizer.weight_proj", ("quantizer", "logits"), conv_dim, gv, "quantizer")
  yield from linear("project_q", ("project_q",), cv, cfg.final_dim, "project_q")
  yield from linear("project_hid", ("final_proj",), d, cfg.final_dim, "final_proj")


def _to_hf(x: np.ndarray, kind: str, hf_shape: tuple[int, ...]) -> np.ndarray:
  if kind == "linear":
    x = x.T
  elif kind == "conv":
    x = x.transpose(2, 1, 0)
  elif kind in ("gain", "codevectors", "per_head"):
    x = x.reshape(hf_shape)
  return np.ascontiguousarray(x, dtype=np.float32)


def _ours_shape(entry: _Entry) -> tuple[int, ...]:
  s = entry.hf_shape
  return {
      "linear": s[::-1],
      "conv": s[::-1],
      "gain": s[-1:],
      "codevectors": s[1:],
      "per_head": s[1:2],
  }.get(entry.kind, s)


# ----------------------------------------------------------------------------- params


def params_from_hf(state_dict: Mapping[str, Any], cfg: ModelConfig) -> dict[str, Any]:
  """HF state dict (numpy or torch tensors, any supported prefix) -> `{'params': {...}}`.

  Heads (quantizer, project_q, final_proj <- project_hid) are imported when present, each
  all-or-nothing. `masked_spec_embed` is absent from HF models built with mask_time_prob ==
  mask_feature_prob == 0; its slot is then zero-filled, which only matters if the model is
  later run with a time mask. Keys of HF heads we have no use for (lm_head, classifier, ...)
  are ignored; any other unknown key, a missing backbone key or a shape mismatch raises.
  """
  flat = _canonical_keys(state_dict)
  params: dict[str, Any] = {}
  used, missing, bad_shapes = set(), [], []
  head_found: dict[str, list[str]] = {h: [] for h in _HEADS}
  head_missing: dict[str, list[str]] = {h: [] for h in _HEADS}
  for e in _entries(cfg):
    if e.hf_key not in flat:
      if e.head:
        head_missing[e.head].append(e.hf_key)
      elif e.hf_key != "masked_spec_embed":
        missing.append(e.hf_key)
      continue
    used.add(e.hf_key)
    original, value = flat[e.hf_key]
    x = as_numpy(value)
    if tuple(x.shape) != e.hf_shape:
      bad_shapes.append(f"{original}: expected {e.hf_shape}, found {tuple(x.shape)}")
      continue
    if e.head:
      head_found[e.head].append(e.hf_key)
    set_path(params, e.path, to_jaxdisco(x, e.kind))
  if "masked_spec_embed" not in flat:
    set_path(params, ("backbone", "mask_embedding"), np.zeros((cfg.embed_dim,), np.float32))
  errors = []
  if bad_shapes:
    errors.append(
        "shape mismatches (does the config match the checkpoint?):\n  " + "\n  ".join(bad_shapes)
    )
  if missing:
    errors.append(f"missing keys: {missing}")
  for head in _HEADS:
    if head_found[head] and head_missing[head]:
      errors.append(f"head {head!r} is incomplete: missing {head_missing[head]}")
    elif not head_found[head]:
      params.pop(head, None)
  unknown = sorted(
      original
      for k, (original, _) in flat.items()
      if k not in used and not k.startswith(_IGNORED_HEAD_PREFIXES)
  )
  if unknown:
    errors.append(
        f"unexpected keys (not part of a jaxdisco {cfg.num_layers}-layer model nor "
        f"a known HF head): {unknown}"
    )
  if errors:
    raise ValueError("cannot import HF state dict: " + "; ".join(errors))
  return {"params": params}


def _canonical_keys(state_dict: Mapping[str, Any]) -> dict[str, tuple[str, Any]]:
  """Strips the backbone prefix and maps weight-norm aliases to weight_g / weight_v.

  Returns {canonical key: (original key, value)}; errors quote the original keys.
  """
  flat: dict[str, tuple[str, Any]] = {}
  for key, value in state_dict.items():
    name = key
    for prefix in _BACKBONE_PREFIXES:
      if name.startswith(prefix):
        name = name[len(prefix) :]
        break
    name = _WEIGHT_NORM_ALIASES.get(name, name)
    if name in flat:
      raise ValueError(f"HF state dict holds {name!r} twice: as {flat[name][0]!r} and {key!r}")
    flat[name] = (key, value)
  return flat


def _get(tree: Mapping, path: tuple[str, ...]) -> Any:
  for name in path:
    tree = tree[name]
  return tree


def params_to_hf(
    params: Mapping[str, Any],
    cfg: ModelConfig,
    model_type: str = "wav2vec2",
    *,
    include_heads: bool | None = None,
) -> dict[str, np.ndarray]:
  """`{'params': {...}}` (or the inner dict) -> HF state dict of float32 numpy arrays.

  Without heads the keys are those of Wav2Vec2Model / HubertModel / WavLMModel (no prefix); with the
  wav2vec 2.0 heads they are those of Wav2Vec2ForPreTraining (`wav2vec2.` + heads).
  include_heads None: include them when all three are in `params` (wav2vec2 only; HF HuBERT
  and WavLM have no such heads). The positional conv's weight norm is written as
  `weight_g`/`weight_v`, which transformers 5.x renames on load to its
  `parametrizations.weight.original0/1`.
  """
  _check_model_type(model_type)
  inner = params.get("params", params)
  present = [h for h in _HEADS if h in inner]
  if include_heads is None:
    include_heads = model_type == "wav2vec2" and len(present) == len(_HEADS)
  if include_heads:
    if model_type != "wav2vec2":
      raise ValueError(
          f"HF {model_type} models have no quantizer/projection heads; pass include_heads=False"
      )
    if len(present) != len(_HEADS):
      raise ValueError(
          f"include_heads=True but params lack heads " f"{sorted(set(_HEADS) - set(present))}"
      )
  prefix = "wav2vec2." if include_heads else ""
  out: dict[str, np.ndarray] = {}
  for e in _entries(cfg):
    if e.head and not include_heads:
      continue
    try:
      x = np.asarray(_get(inner, e.path))
    except KeyError:
      raise ValueError(f"params lack {'/'.join(e.path)} (needed for HF key {e.hf_key!r})") from None
    if tuple(x.shape) != _ours_shape(e):
      raise ValueError(
          f"params {'/'.join(e.path)}: expected shape {_ours_shape(e)} for this "
          f"config, found {tuple(x.shape)}"
      )
    out[(prefix if e.head is None else "") + e.hf_key] = _to_hf(x, e.kind, e.hf_shape)
  return out


# ----------------------------------------------------------------------------- files


def load_hf_checkpoint(directory: str | os.PathLike) -> tuple[ModelConfig, dict, str]:
  """Reads an HF checkpoint directory -> (ModelConfig, params, model_type).

  Weights come from model.safetensors if present, else pytorch_model.bin (needs torch; loaded
  with weights_only=True so no pickled code runs). Sharded checkpoints are not supported.
  """
  directory = os.fspath(directory)
  config_path = os.path.join(directory, CONFIG_NAME)
  if not os.path.isdir(directory):
    raise MissingFileError(f"HF checkpoint directory {directory!r} does not exist")
  if not os.path.isfile(config_path):
    raise MissingFileError(f"HF checkpoint directory {directory!r} has no {CONFIG_NAME}")
  with open(config_path) as f:
    hf_config = json.load(f)
  cfg = config_from_hf(hf_config)
  model_type = hf_config.get("model_type", "wav2vec2")
  st_path = os.path.join(directory, SAFETENSORS_NAME)
  pt_path = os.path.join(directory, PYTORCH_NAME)
  if os.path.isfile(st_path):
    from safetensors.numpy import load_file

    state_dict = load_file(st_path)
  elif os.path.isfile(pt_path):
    try:
      import torch
    except ImportError:
      raise ImportError(
          f"{pt_path} is a PyTorch pickle and torch is not installed; install "
          f"torch or convert the checkpoint to {SAFETENSORS_NAME}"
      ) from None
    state_dict = torch.load(pt_path, map_location="cpu", weights_only=True)
  else:
    raise MissingFileError(
        f"HF checkpoint directory {directory!r} has neither "
        f"{SAFETENSORS_NAME} nor {PYTORCH_NAME} (sharded checkpoints are "
        "not supported)"
    )
  return cfg, params_from_hf(state_dict, cfg), model_type


def save_hf_checkpoint(
    directory: str | os.PathLike,
    cfg: ModelConfig,
    params: Mapping[str, Any],
    model_type: str = "wav2vec2",
    *,
    include_heads: bool | None = None,
) -> None:
  """Writes config.json + model.safetensors loadable by `transformers` `from_pretrained`.

  With the wav2vec 2.0 heads the checkpoint is a Wav2Vec2ForPreTraining; without them (or
  include_heads=False) a Wav2Vec2Model / HubertModel / WavLMModel, which loads into the base
  model with no missing or unexpected keys.
  """
  from safetensors.numpy import save_file

  state_dict = params_to_hf(params, cfg, model_type, include_heads=include_heads)
  with_heads = any(k.startswith("quantizer.") for k in state_dict)
  if with_heads:
    architecture = "Wav2Vec2ForPreTraining"
  else:
    architecture = _BASE_ARCHITECTURES[model_type]
  hf_config = config_to_hf(cfg, model_type, architecture=architecture)
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, CONFIG_NAME), "w") as f:
    json.dump(hf_config, f, indent=2, sort_keys=True)
  # transformers checks the "format" metadata to know the tensors are PyTorch-layout.
  save_file(state_dict, os.path.join(directory, SAFETENSORS_NAME), metadata={"format": "pt"})
