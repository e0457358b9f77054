"""fairseq wav2vec 2.0 / HuBERT / vq-wav2vec state dicts -> jaxdisco parameters.

`params_from_fairseq_state_dict(state_dict, method, model_config)` takes the `model` entry of a
fairseq checkpoint (the keys of `Wav2Vec2Model`, `HubertModel` or `Wav2VecModel.state_dict()`)
as a plain mapping of arrays (numpy; torch tensors are converted, but torch is never imported
here) and returns `{'params': {...}}` for the jaxdisco module of `method`:

  * "wav2vec2":   `Wav2Vec2ForPretraining` (ModelConfig);
  * "hubert":     `HubertForPretraining` (ModelConfig; label sets and untied projection are read
                  from the shapes of `final_proj` and `label_embs_concat`);
  * "vq_wav2vec": `VqWav2Vec` (VqWav2VecConfig; gumbel or k-means quantizer).

Every entry is a relabelling plus a transposition, listed once in the key tables
(`_backbone_entries`, `_wav2vec2_heads`, `_hubert_heads`, `_vq_wav2vec_entries`; the array
layouts are `torch_layout`'s, shared with the Hugging Face importer):
  * torch Conv1d weight [out, in, taps]      -> kernel [taps, in, out];
  * torch Linear weight [out, in]            -> Dense kernel [in, out];
  * positional conv weight_g [1, 1, taps]    -> weight_g [taps] (weight_norm(dim=2));
  * gumbel `vars` [1, groups' V, d / G]      -> codevectors [groups' V, d / G];
  * k-means `embedding` [V, books, d / G]    -> codebook [books, V, d / G];
  * k-means grouped 1x1 conv [dim, dim/G, 1] -> projection [G, dim/G (in), dim/G (out)];
  * ConvTranspose2d step projection [in, out, 1, steps] -> step_projection [steps, in, out];
  * LayerNorm / GroupNorm weight             -> scale.
fairseq builds no `post_extract_proj` when the conv channels equal the model dimension; the
projection jaxdisco always has is then the identity. Heads (wav2vec 2.0: quantizer, project_q,
final_proj; HuBERT: final_proj, label_embs_concat) are imported when present, each
all-or-nothing. A missing key, an unexpected key (an option jaxdisco does not implement, such
as `target_glu` or an input quantizer) or a shape that does not fit `model_config` raises
ValueError naming the keys. The mapping does not read fairseq's config: choosing
`model_config` to match the checkpoint is the caller's job.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping, NamedTuple

import numpy as np

from jaxdisco.export.torch_layout import as_numpy, set_path, to_jaxdisco, weight_norm_aliases

METHODS = ("wav2vec2", "hubert", "vq_wav2vec")

# Weight-norm parameters as torch.nn.utils.weight_norm names them, and as the
# `parametrizations` API (torch >= 2.1 modules) does; both are accepted.
_POS_CONV = "encoder.pos_conv.0."
_WEIGHT_NORM_ALIASES = weight_norm_aliases(_POS_CONV)


class _Entry(NamedTuple):
  key: str  # fairseq state-dict key
  path: tuple[str, ...]  # inside params['params']
  kind: str  # how the array is rearranged: a `torch_layout.to_jaxdisco` kind
  shape: tuple[int, ...]  # fairseq shape
  head: str | None  # None: required; else the optional head it belongs to


def params_from_fairseq_state_dict(
    state_dict: Mapping[str, Any], method: str, model_config
) -> dict[str, Any]:
  """fairseq model state dict -> `{'params': {...}}` of float32 numpy arrays.

  state_dict: {key: array} as `model.state_dict()` names them (the `model` entry of a fairseq
  `.pt` checkpoint); method: "wav2vec2", "hubert" or "vq_wav2vec"; model_config: the
  `ModelConfig` (wav2vec2, hubert) or `VqWav2VecConfig` (vq_wav2vec) the checkpoint was made
  with. Raises ValueError for missing, unexpected or misshapen keys.
  """
  if method not in METHODS:
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")
  flat = {_WEIGHT_NORM_ALIASES.get(k, k): (k, v) for k, v in state_dict.items()}
  if len(flat) != len(state_dict):
    raise ValueError("fairseq state dict holds the positional conv's weight norm twice")
  if method == "vq_wav2vec":
    entries = list(_vq_wav2vec_entries(model_config))
  else:
    heads = (
        _wav2vec2_heads(model_config) if method == "wav2vec2" else _hubert_heads(model_config, flat)
    )
    entries = list(_backbone_entries(model_config, flat)) + list(heads)
  params: dict[str, Any] = {}
  used, missing, bad_shapes = set(), [], []
  head_found: dict[str, list[str]] = {}
  head_missing: dict[str, list[str]] = {}
  for e in entries:
    if e.key not in flat:
      (head_missing.setdefault(e.head, []) if e.head else missing).append(e.key)
      continue
    used.add(e.key)
    original, value = flat[e.key]
    x = as_numpy(value)
    if tuple(x.shape) != e.shape:
      bad_shapes.append(f"{original}: expected {e.shape}, found {tuple(x.shape)}")
      continue
    if e.head:
      head_found.setdefault(e.head, []).append(e.key)
    set_path(params, e.path, to_jaxdisco(x, e.kind))
  if method != "vq_wav2vec" and "post_extract_proj.weight" not in flat:
    # Conv channels == model dim (else the table asked for the key and it is listed missing).
    d = model_config.embed_dim
    set_path(params, ("backbone", "feature_projection", "kernel"), np.eye(d, dtype=np.float32))
    set_path(params, ("backbone", "feature_projection", "bias"), np.zeros(d, np.float32))
  errors = []
  if bad_shapes:
    errors.append(
        "shape mismatches (does the config match the checkpoint?):\n  " + "\n  ".join(bad_shapes)
    )
  if missing:
    errors.append(f"missing keys: {missing}")
  for head in sorted(set(head_found) | set(head_missing)):
    if head in head_found and head in head_missing:
      errors.append(f"head {head!r} is incomplete: missing {head_missing[head]}")
    elif head not in head_found:
      params.pop(head, None)
  unknown = sorted(original for k, (original, _) in flat.items() if k not in used)
  if unknown:
    errors.append(f"unexpected keys (not part of this jaxdisco {method} model): {unknown}")
  if errors:
    raise ValueError(f"cannot import fairseq {method} state dict: " + "; ".join(errors))
  return {"params": params}


# ----------------------------------------------------------------------------- key tables


def _linear(key, path, n_in, n_out, head=None, bias=True) -> Iterator[_Entry]:
  yield _Entry(key + ".weight", path + ("kernel",), "linear", (n_out, n_in), head)
  if bias:
    yield _Entry(key + ".bias", path + ("bias",), "copy", (n_out,), head)


def _norm(key, path, n, head=None) -> Iterator[_Entry]:
  yield _Entry(key + ".weight", path + ("scale",), "copy", (n,), head)
  yield _Entry(key + ".bias", path + ("bias",), "copy", (n,), head)


def _backbone_entries(cfg, flat) -> Iterator[_Entry]:
  """The wav2vec 2.0 / HuBERT backbone (`Wav2Vec2Backbone`)."""
  if not cfg.feature_projection_layer_norm:
    raise ValueError(
        "fairseq wav2vec 2.0 / HuBERT models always have the feature LayerNorm "
        "(`layer_norm`); model_config.feature_projection_layer_norm must be True"
    )
  bb = ("backbone",)
  in_ch = 1
  for i, (ch, k, _) in enumerate(cfg.conv_spec):
    key, ours = f"feature_extractor.conv_layers.{i}.", bb + ("feature_encoder", f"conv_{i}")
    yield _Entry(key + "0.weight", ours + ("kernel",), "conv", (ch, in_ch, k), None)
    if cfg.conv_bias:
      yield _Entry(key + "0.bias", ours + ("bias",), "copy", (ch,), None)
    # Sequential(conv, dropout, norm, GELU); layer norm sits inside Sequential(T, LN, T).
    if cfg.extractor_mode == "layer_norm":
      yield from _norm(key + "2.1", ours + ("norm",), ch)
    elif i == 0:
      yield from _norm(key + "2", ours + ("norm",), ch)
    in_ch = ch
  d = cfg.embed_dim
  yield from _norm("layer_norm", bb + ("feature_norm",), cfg.conv_dim)
  if "post_extract_proj.weight" in flat or cfg.conv_dim != d:
    yield from _linear("post_extract_proj", bb + ("feature_projection",), cfg.conv_dim, d)
  yield _Entry("mask_emb", bb + ("mask_embedding",), "copy", (d,), None)
  enc = bb + ("encoder",)
  k = cfg.pos_conv_kernel
  yield _Entry(_POS_CONV + "weight_g", enc + ("pos_conv", "weight_g"), "gain", (1, 1, k), None)
  yield _Entry(
      _POS_CONV + "weight_v",
      enc + ("pos_conv", "weight_v"),
      "conv",
      (d, d // cfg.pos_conv_groups, k),
      None,
  )
  yield _Entry(_POS_CONV + "bias", enc + ("pos_conv", "bias"), "copy", (d,), None)
  yield from _norm("encoder.layer_norm", enc + ("norm",), d)
  for i in range(cfg.num_layers):
    key, ours = f"encoder.layers.{i}.", enc + (f"layer_{i}",)
    for theirs, name in (("q", "query"), ("k", "key"), ("v", "value"), ("out", "out")):
      yield from _linear(f"{key}self_attn.{theirs}_proj", ours + ("attention", name), d, d)
    yield from _norm(key + "self_attn_layer_norm", ours + ("attention_norm",), d)
    yield from _linear(key + "fc1", ours + ("ffn_in",), d, cfg.ffn_dim)
    yield from _linear(key + "fc2", ours + ("ffn_out",), cfg.ffn_dim, d)
    yield from _norm(key + "final_layer_norm", ours + ("ffn_norm",), d)


def _wav2vec2_heads(cfg) -> Iterator[_Entry]:
  g, v, cv = cfg.latent_groups, cfg.latent_vars, cfg.codevector_dim
  yield _Entry(
      "quantizer.vars",
      ("quantizer", "codevectors"),
      "codevectors",
      (1, g * v, cv // g),
      "quantizer",
  )
  yield from _linear(
      "quantizer.weight_proj", ("quantizer", "logits"), cfg.conv_dim, g * v, "quantizer"
  )
  yield from _linear("project_q", ("project_q",), cv, cfg.final_dim, "project_q")
  yield from _linear("final_proj", ("final_proj",), cfg.embed_dim, cfg.final_dim, "final_proj")


def _hubert_heads(cfg, flat) -> Iterator[_Entry]:
  """final_proj [final_dim * label sets (untied) or final_dim, embed] and label_embs_concat
  [sum of classes, final_dim]: the label sets' sizes are not in the config, so the expected
  shapes take the checkpoint's class count and projection width, checking the dimensions the
  config fixes."""
  out = cfg.final_dim
  if "final_proj.weight" in flat:
    width = as_numpy(flat["final_proj.weight"][1]).shape[0]
    out = width if width % cfg.final_dim == 0 else cfg.final_dim
  classes = 0
  if "label_embs_concat" in flat:
    classes = as_numpy(flat["label_embs_concat"][1]).shape[0]
  yield from _linear("final_proj", ("final_proj",), cfg.embed_dim, out, "final_proj")
  yield _Entry(
      "label_embs_concat",
      ("label_embeddings",),
      "copy",
      (classes, cfg.final_dim),
      "label_embeddings",
  )


def _vq_wav2vec_entries(cfg) -> Iterator[_Entry]:
  """`Wav2VecModel` with a gumbel or k-means quantizer and the conv aggregator."""
  in_ch = 1
  for i, (ch, k, _) in enumerate(cfg.conv_spec):
    key = f"feature_extractor.conv_layers.{i}."  # Sequential(conv, dropout, GroupNorm, act)
    yield _Entry(key + "0.weight", ("encoder", f"conv_{i}", "kernel"), "conv", (ch, in_ch, k), None)
    yield from _norm(key + "2", ("encoder", f"norm_{i}"), ch)
    in_ch = ch
  dim, g, v = cfg.encoder_dim, cfg.vq_groups, cfg.vq_vars
  books = 1 if cfg.combine_groups else g
  q, vq = ("quantizer",), "vector_quantizer."
  if cfg.vq_type == "gumbel":
    cv = cfg.codevector_dim
    yield _Entry(vq + "vars", q + ("codevectors",), "codevectors", (1, books * v, cv // g), None)
    if cfg.vq_depth == 1:
      yield from _linear(vq + "weight_proj", q + ("logits",), dim, g * v)
    else:
      width = dim
      for j in range(cfg.vq_depth - 1):  # Sequential(Sequential(Linear, act), ..., Linear)
        yield from _linear(f"{vq}weight_proj.{j}.0", q + (f"logits_hidden_{j}",), width, 2 * dim)
        width = 2 * dim
      yield from _linear(f"{vq}weight_proj.{cfg.vq_depth - 1}", q + ("logits",), width, g * v)
  else:
    yield _Entry(vq + "embedding", q + ("codebook",), "kmeans_codebook", (v, books, dim // g), None)
    yield _Entry(
        vq + "projection.0.weight", q + ("projection",), "grouped_1x1", (dim, dim // g, 1), None
    )
    yield from _norm(vq + "projection.1", q + ("norm",), dim)
  in_ch = cfg.codevector_dim
  for i, (ch, k, _) in enumerate(cfg.aggregator_spec):
    key = f"feature_aggregator.conv_layers.{i}."  # Sequential(pad, conv, dropout, norm, act)
    ours = ("aggregator", f"conv_{i}")
    yield _Entry(key + "1.weight", ours + ("kernel",), "conv", (ch, in_ch, k), None)
    if cfg.aggregator_bias:
      yield _Entry(key + "1.bias", ours + ("bias",), "copy", (ch,), None)
    yield from _norm(key + "3", ("aggregator", f"norm_{i}"), ch)
    if in_ch != ch:
      yield _Entry(
          f"feature_aggregator.residual_proj.{i}.weight",
          ("aggregator", f"residual_proj_{i}", "kernel"),
          "conv",
          (ch, in_ch, 1),
          None,
      )
    in_ch = ch
  steps, cv = cfg.prediction_steps, cfg.codevector_dim
  key = "wav2vec_predictions.project_to_steps."
  yield _Entry(key + "weight", ("step_projection",), "steps", (in_ch, cv, 1, steps), None)
  yield _Entry(key + "bias", ("step_bias",), "copy", (cv,), None)
