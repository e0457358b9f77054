"""Unit kinds of a frozen tokenizer: how a waveform becomes one integer id per frame.

A kind is a pure function `ids(spec, weights, waveform, padding_mask) -> ids [batch, frames]`
(int32, -1 on frames computed from padding) plus `make_weights`, which takes what it needs
from a pretrained model at export time. The tokenizer program, the library path
(`jaxdisco.Tokenizer`) and the serialized StableHLO program are all this one function, so
they cannot disagree.

`weights` is `{"encoder": {flat name: array}, "quantizer": {flat name: array}}`, the contents
of `encoder.safetensors` and `quantizer.safetensors` (names are parameter paths joined by
"/"), so a user of the StableHLO program passes the two files' dicts as they load.

| kind       | features                                 | ids                                    |
|------------|------------------------------------------|----------------------------------------|
| `kmeans`   | hidden_states[layer] (`Pretrained` docs) | nearest centroid, [0, K)               |
| `codebook` | quantizer input (post-LN conv features)  | sum_g argmax_g * V**(G-1-g), [0, V**G) |
| `dinosr`   | a DinoSR teacher's hidden_states[layer], instance-normalised per utterance (`export/dinosr_units.py`) | nearest codeword of the model's codebook of that layer, [0, V) |
| `vq_wav2vec` | vq-wav2vec conv encoder output (100 Hz) | its quantizer's codes (gumbel argmax or nearest k-means entry) combined the same way, [0, V**G) |
| `best_rq`  | stacked normalised log-mel frames of the audio (`export/best_rq_units.py`) | the BEST-RQ random-projection quantizer's nearest code, codebooks combined the same way, [0, V**G) |

`vq_wav2vec` reads a vq-wav2vec run (`VqWav2VecConfig`): its `encoder.safetensors` is the
wav2vec 1.0 conv encoder, and `quantizer.safetensors` the gumbel or k-means quantizer. The
wav2vec 2.0 kinds read a `ModelConfig` backbone.

Adding a kind: write `make_weights` and `ids` (any function giving `codes [batch, frames,
groups]` can end in `combine_groups`) and add one entry to `UNIT_KINDS`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxdisco.clustering import kmeans
from jaxdisco.data.normalize import NORMALIZE_EPS
from jaxdisco.errors import TokenizerError
from jaxdisco.export import dinosr_units
from jaxdisco.export.best_rq_units import best_rq_encoder, best_rq_ids, best_rq_weights
from jaxdisco.models.config import ModelConfig
from jaxdisco.models.hidden_states import (
    DEFAULT_HIDDEN_STATES_CONVENTION,
    hidden_states_in_convention,
)
from jaxdisco.models.wav2vec2 import Wav2Vec2Backbone

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class TokenizerSpec:
  """Everything static about a tokenizer program (hashable: a jit static argument).

  config: the source model's full ModelConfig (num_layers is the source's, not the cut), or
    its VqWav2VecConfig for `vq_wav2vec` units;
  layer: hidden_states index the units read (kmeans) and number of Transformer layers run;
  normalize: zero mean / unit variance over each row's valid samples, in the program;
  hidden_states_convention: which tensor hidden_states[layer] is when `layer` is the last
    layer of a pre-LN model (`jaxdisco.models.hidden_states`); the same everywhere else.
  """

  kind: str
  config: Any  # ModelConfig | VqWav2VecConfig
  layer: int
  normalize: bool
  num_groups: int = 1
  num_vars: int = 0
  hidden_states_convention: str = DEFAULT_HIDDEN_STATES_CONVENTION


def flatten(tree: Mapping[str, Any]) -> dict[str, np.ndarray]:
  return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(dict(tree), sep="/").items()}


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  return traverse_util.unflatten_dict(dict(flat), sep="/")


def normalize_rows(waveform: Array, padding_mask: Array) -> Array:
  """Per-row zero mean / unit variance over valid samples (`normalize_waveform` on each
  utterance before padding); padding stays 0. waveform, padding_mask: [batch, samples]."""
  valid = ~padding_mask
  count = jnp.maximum(valid.sum(-1, keepdims=True), 1).astype(jnp.float32)
  mean = jnp.where(valid, waveform, 0.0).sum(-1, keepdims=True) / count
  var = jnp.where(valid, jnp.square(waveform - mean), 0.0).sum(-1, keepdims=True) / count
  return jnp.where(valid, (waveform - mean) / jnp.sqrt(var + NORMALIZE_EPS), 0.0)


def _backbone(spec: TokenizerSpec, weights, waveform: Array, padding_mask: Array):
  if spec.normalize:
    waveform = normalize_rows(waveform, padding_mask)
  return Wav2Vec2Backbone(spec.config).apply(
      {"params": unflatten(weights["encoder"])},
      waveform,
      padding_mask,
      None,
      deterministic=True,
      num_layers=spec.layer,
  )


def combine_groups(codes: Array, num_vars: int) -> Array:
  """codes [batch, frames, groups] in [0, V) -> one id per frame, id = sum_g c_g * V**(G-1-g)
  (for G = 2: g0 * V + g1), int32 in [0, V**G)."""
  groups = codes.shape[-1]
  place = jnp.asarray([num_vars ** (groups - 1 - g) for g in range(groups)], jnp.int32)
  return jnp.sum(codes.astype(jnp.int32) * place, axis=-1)


def _kmeans_ids(spec: TokenizerSpec, weights, waveform: Array, padding_mask: Array) -> Array:
  out = _backbone(spec, weights, waveform, padding_mask)
  hidden = hidden_states_in_convention(
      out.hidden_states,
      out.last_hidden_state,
      spec.hidden_states_convention,
      spec.config.num_layers,
  )
  x = hidden[spec.layer].astype(jnp.float32)  # [batch, frames, dim]
  b, t, d = x.shape
  # The same distance and argmin as `kmeans.assign`, so labels equal the library's.
  ids, _ = kmeans.nearest_centroids(
      x.reshape(b * t, d), weights["quantizer"]["centroids"], jax.lax.Precision.HIGHEST
  )
  return jnp.where(out.frame_valid, ids.reshape(b, t), -1)


def _codebook_ids(spec: TokenizerSpec, weights, waveform: Array, padding_mask: Array) -> Array:
  out = _backbone(spec, weights, waveform, padding_mask)
  q = weights["quantizer"]
  # GumbelQuantizer's logit projection, evaluated like the model does at inference (argmax).
  logits = out.features.astype(jnp.float32) @ q["logits/kernel"] + q["logits/bias"]
  logits = logits.reshape(*logits.shape[:-1], spec.num_groups, spec.num_vars)
  ids = combine_groups(jnp.argmax(logits, axis=-1), spec.num_vars)
  return jnp.where(out.frame_valid, ids, -1)


def _kmeans_weights(pretrained, layer: int, centroids: Optional[np.ndarray]):
  if centroids is None:
    raise TokenizerError(
        "units='kmeans' needs centroids (a save_centroids prefix or a joblib file)"
    )
  dim = pretrained.config.embed_dim
  if centroids.ndim != 2 or centroids.shape[1] != dim:
    raise TokenizerError(f"centroids: expected [k, {dim}] for this model, got {centroids.shape}")
  info = {"vocab_size": int(centroids.shape[0]), "id_mapping": "index of the nearest centroid"}
  return {"centroids": centroids.astype(np.float32)}, info, {}


def _codebook_weights(pretrained, layer: int, centroids: Optional[np.ndarray]):
  del layer
  if centroids is not None:
    raise TokenizerError("units='codebook' uses the model's own quantizer; do not pass centroids")
  head = pretrained.params["params"].get("quantizer")
  if head is None:
    raise TokenizerError(
        "units='codebook' needs the wav2vec 2.0 quantizer, which this checkpoint lacks "
        "(a HuBERT model or a Hugging Face base model has none: use units='kmeans')"
    )
  cfg = pretrained.config
  g, v = cfg.latent_groups, cfg.latent_vars
  info = {
      "vocab_size": int(v**g),
      "id_mapping": f"id = sum_g code_g * {v}**({g - 1} - g) over G={g} groups of V={v}"
      + (" (id = g0*V + g1)" if g == 2 else ""),
      "groups": g,
      "vars_per_group": v,
  }
  return flatten(head), info, {"num_groups": g, "num_vars": v}


def _vq_wav2vec_ids(spec: TokenizerSpec, weights, waveform: Array, padding_mask: Array) -> Array:
  from jaxdisco.models.vq_wav2vec_codes import codes_and_frame_valid  # pylint: disable=g-import-not-at-top

  if spec.normalize:
    waveform = normalize_rows(waveform, padding_mask)
  params = {
      "params": {
          "encoder": unflatten(weights["encoder"]),
          "quantizer": unflatten(weights["quantizer"]),
      }
  }
  codes, frame_valid = codes_and_frame_valid(spec.config, params, waveform, padding_mask)
  return jnp.where(frame_valid, combine_groups(codes, spec.num_vars), -1)


def _vq_wav2vec_weights(pretrained, layer: int, centroids: Optional[np.ndarray]):
  del layer
  if centroids is not None:
    raise TokenizerError("units='vq_wav2vec' uses the model's own quantizer; do not pass centroids")
  params = pretrained.params["params"]
  cfg = pretrained.config
  g, v = cfg.vq_groups, cfg.vq_vars
  info = {
      "vocab_size": int(v**g),
      "id_mapping": f"id = sum_g code_g * {v}**({g - 1} - g) over G={g} groups of V={v}"
      + (" (id = g0*V + g1)" if g == 2 else "")
      + f"; code_g: {cfg.vq_type} quantizer of the vq-wav2vec encoder output ("
      + ("argmax of the logits, no gumbel noise" if cfg.vq_type == "gumbel" else "nearest entry")
      + ")"
      + (", one codebook shared by the groups" if cfg.combine_groups else ""),
      "groups": g,
      "vars_per_group": v,
      "vq_type": cfg.vq_type,
  }
  return flatten(params["quantizer"]), info, {"num_groups": g, "num_vars": v}


# Which kinds a model may use is its method's `unit_kinds`, checked by `export_tokenizer`.
def _backbone_encoder(pretrained, layer: int) -> dict:
  return _cut_backbone(pretrained.params["params"]["backbone"], layer)


def _vq_wav2vec_encoder(pretrained, layer: int) -> dict:
  del layer
  return pretrained.params["params"]["encoder"]


def _cut_backbone(backbone: dict, layers: int) -> dict:
  """Backbone params without Transformer layers >= `layers` (never run by the program)."""
  out = dict(backbone)
  encoder = dict(out["encoder"])
  for name in list(encoder):
    if name.startswith("layer_") and int(name[len("layer_") :]) >= layers:
      del encoder[name]
  out["encoder"] = encoder
  return out


@dataclasses.dataclass(frozen=True)
class UnitKind:
  """make_weights(pretrained, layer, centroids or None) -> (quantizer weights, manifest info,
  extra TokenizerSpec fields); ids(spec, weights, waveform, padding_mask) -> [batch, frames];
  encoder(pretrained, layer) -> the parameter tree stored as encoder.safetensors."""

  make_weights: Callable
  ids: Callable
  uses_layer: bool  # False: units come from the conv features; no Transformer layer is kept.
  encoder: Callable = _backbone_encoder


UNIT_KINDS: dict[str, UnitKind] = {
    "kmeans": UnitKind(_kmeans_weights, _kmeans_ids, uses_layer=True),
    "codebook": UnitKind(_codebook_weights, _codebook_ids, uses_layer=False),
    "vq_wav2vec": UnitKind(
        _vq_wav2vec_weights, _vq_wav2vec_ids, uses_layer=False, encoder=_vq_wav2vec_encoder
    ),
    "dinosr": UnitKind(dinosr_units.make_weights, dinosr_units.ids, uses_layer=True),
    "best_rq": UnitKind(best_rq_weights, best_rq_ids, uses_layer=False, encoder=best_rq_encoder),
}


def get_kind(name: str) -> UnitKind:
  if name not in UNIT_KINDS:
    raise TokenizerError(f"units: expected one of {sorted(UNIT_KINDS)}, got {name!r}")
  return UNIT_KINDS[name]


def tokenize(spec: TokenizerSpec, weights, waveform: Array, padding_mask: Array) -> Array:
  """waveform [batch, samples] float32, padding_mask [batch, samples] bool (True = padding,
  at the end of each row) -> unit ids [batch, frames] int32, -1 on padding frames."""
  return get_kind(spec.kind).ids(spec, weights, waveform, padding_mask)
