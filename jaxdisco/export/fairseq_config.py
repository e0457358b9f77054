"""A fairseq checkpoint's config -> jaxdisco's method, typed model config and run-config fields.

fairseq's model options (`cfg["model"]` of `Wav2Vec2Config`, `HubertConfig`, `Wav2VecConfig`,
or the same names in a legacy `args` Namespace) fall into three groups, listed per model below:
  * mapped: an option jaxdisco's model has, under its jaxdisco name (`encoder_layers` ->
    `model.num_layers`); the mapped run-config fields (`objective.label_rate`, ...) are
    returned too, for the caller to compare or apply;
  * fixed: an architecture option jaxdisco implements at one value only (`activation_fn` must be
    "gelu", `target_glu` False, ...). Any other value is refused, naming the fairseq field:
    the parameters would compute something jaxdisco's model does not;
  * recipe: training-only options (masking, negatives, temperatures of the schedule, dropout of
    models jaxdisco trains without it, activation checkpointing, fp16). They do not change what
    the parameters compute, so they are not read: a continued-pretraining run takes its recipe
    from its own config.
A `cfg` field in none of the groups (one from a newer fairseq) is refused when it is set
(truthy), since jaxdisco cannot know what it changes. A field missing from the checkpoint stands
for fairseq's default (`FAIRSEQ_DEFAULTS`). Legacy `args` hold every command-line option of the
run in one namespace, so only the listed fields are read from them.
"""

from __future__ import annotations

import ast
from typing import Any, Mapping, NamedTuple, Optional

from jaxdisco.errors import CheckpointError
from jaxdisco.models.config import ModelConfig, parse_conv_layers
from jaxdisco.models.vq_wav2vec_config import VqWav2VecConfig

# fairseq `_name` (cfg) / `arch` (args) -> jaxdisco method.
FAIRSEQ_MODELS = {"wav2vec2": "wav2vec2", "hubert": "hubert", "wav2vec": "vq_wav2vec"}
SAMPLE_RATE = 16000

# The defaults of fairseq 0.12's dataclasses for every field read below.
_BACKBONE_DEFAULTS = {
    "extractor_mode": "default",
    "encoder_layers": 12,
    "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12,
    "activation_fn": "gelu",
    "layer_type": "transformer",
    "dropout": 0.1,
    "attention_dropout": 0.1,
    "activation_dropout": 0.0,
    "encoder_layerdrop": 0.0,
    "dropout_input": 0.0,
    "dropout_features": 0.0,
    "final_dim": 0,
    "layer_norm_first": False,
    "conv_feature_layers": "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] + [(512,2,2)]",
    "conv_bias": False,
    "logit_temp": 0.1,
    "target_glu": False,
    "feature_grad_mult": 1.0,
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "pos_conv_depth": 1,
    "crop_seq_to_multiple": 1,
    "adp_num": -1,
}
FAIRSEQ_DEFAULTS = {
    "wav2vec2": {
        **_BACKBONE_DEFAULTS,
        "quantize_targets": False,
        "quantize_input": False,
        "quantizer_depth": 1,
        "latent_vars": 320,
        "latent_groups": 2,
        "latent_dim": 0,
        "latent_temp": (2.0, 0.5, 0.999995),
        "num_negatives": 100,
        "cross_sample_negatives": 0,
    },
    "hubert": {
        **_BACKBONE_DEFAULTS,
        "untie_final_proj": False,
        "conv_pos_batch_norm": False,
        "label_rate": None,
    },
    "vq_wav2vec": {
        "conv_feature_layers": (
            "[(512, 10, 5), (512, 8, 4), (512, 4, 2), (512, 4, 2), (512, 4, 2), (512, 1, 1), "
            "(512, 1, 1), (512, 1, 1)]"
        ),
        "conv_aggregator_layers": (
            "[(512, 2, 1), (512, 3, 1), (512, 4, 1), (512, 5, 1), (512, 6, 1), (512, 7, 1), "
            "(512, 8, 1), (512, 9, 1), (512, 10, 1), (512, 11, 1), (512, 12, 1), (512, 13, 1)]"
        ),
        "prediction_steps": 12,
        "num_negatives": 10,
        "aggregator": "cnn",
        "no_conv_bias": False,
        "agg_zero_pad": False,
        "skip_connections_feat": False,
        "skip_connections_agg": True,
        "residual_scale": 0.5,
        "log_compression": True,
        "project_features": "none",
        "non_affine_group_norm": False,
        "offset": "auto",
        "activation": "relu",
        "vq_type": "none",
        "vq_vars": 320,
        "vq_groups": 2,
        "vq_dim": 0,
        "vq_depth": 1,
        "combine_groups": False,
        "vq_temp": (2.0, 0.5, 0.999995),
        "vq_gamma": 0.25,
        "infonce": False,
    },
}

# Architecture options jaxdisco implements at one value: fairseq field -> (accepted, why).
_BACKBONE_FIXED = {
    "activation_fn": (("gelu",), "jaxdisco's Transformer uses GELU"),
    "layer_type": (("transformer",), "jaxdisco has no conformer or adapter layers"),
    "target_glu": ((False,), "jaxdisco has no target GLU"),
    "pos_conv_depth": ((1,), "jaxdisco's positional embedding is one conv"),
    "crop_seq_to_multiple": ((1,), "jaxdisco does not crop the frames"),
}
_FIXED = {
    "wav2vec2": {
        **_BACKBONE_FIXED,
        "quantize_targets": ((True,), "jaxdisco's wav2vec 2.0 always quantizes its targets"),
        "quantize_input": ((False,), "jaxdisco has no input quantizer"),
        "quantizer_depth": ((1,), "jaxdisco's wav2vec 2.0 quantizer projects in one layer"),
    },
    "hubert": {
        **_BACKBONE_FIXED,
        "conv_pos_batch_norm": ((False,), "jaxdisco's positional conv has no batch norm"),
    },
    "vq_wav2vec": {
        "aggregator": (("cnn",), "jaxdisco's aggregator is the conv one"),
        "agg_zero_pad": ((False,), "jaxdisco pads the aggregator by replication"),
        "skip_connections_feat": ((False,), "jaxdisco's encoder has no skip connections"),
        "skip_connections_agg": ((True,), "jaxdisco's aggregator always has them"),
        "project_features": (("none",), "jaxdisco does not project the targets"),
        "non_affine_group_norm": ((False,), "jaxdisco's group norms are affine"),
        "vq_type": (("gumbel", "kmeans"), "a wav2vec 1.0 model without a quantizer is not"
                    " a vq-wav2vec model"),
    },
}
# Options that only the training recipe (or the compute) reads; never compared.
_BACKBONE_RECIPE = (
    "mask_length mask_prob mask_selection mask_other no_mask_overlap mask_min_space "
    "require_same_masks mask_dropout mask_channel_length mask_channel_prob mask_channel_before "
    "mask_channel_selection mask_channel_other no_mask_channel_overlap mask_channel_min_space "
    "latent_temp checkpoint_activations required_seq_len_multiple fp16 max_positions "
    "depthwise_conv_kernel_size attn_type pos_enc_type adp_dim adp_act_fn adp_trf_idx "
    "offload_activations min_params_to_wrap label_rate _name"
).split()
_RECIPE = {
    "wav2vec2": _BACKBONE_RECIPE
    + "same_quantizer num_negatives negatives_from_everywhere cross_sample_negatives "
    "codebook_negatives quantizer_factor".split(),
    "hubert": _BACKBONE_RECIPE + "skip_masked skip_nomask".split(),
    "vq_wav2vec": (
        "sample_distance cross_sample_negatives num_negatives dropout dropout_features "
        "dropout_agg gru_dim balanced_classes vq_temp vq_gamma infonce _name"
    ).split(),
}


class FairseqModelSpec(NamedTuple):
  """What a fairseq checkpoint's config says about the jaxdisco model."""

  method: str  # "wav2vec2", "hubert" or "vq_wav2vec".
  model_config: Any  # ModelConfig or VqWav2VecConfig.
  # Run-config fields the checkpoint fixes, by dotted path ("objective.label_rate": 50.0,
  # "objective.untie_final_proj": True, "data.normalize": False, ...).
  run_fields: dict
  label_set_sizes: Optional[tuple[int, ...]]  # HuBERT: classes per label set, when known.


def fairseq_method(cfg: Mapping[str, Any], state_dict: Mapping[str, Any], where: str) -> str:
  """The jaxdisco method of a fairseq checkpoint: its model `_name` (legacy: `arch`), else,
  when that is absent, the parameters only that model has."""
  name = cfg.get("model", {}).get("_name")
  if name in FAIRSEQ_MODELS:
    return FAIRSEQ_MODELS[name]
  if name:
    raise CheckpointError(
        f"{where}: model._name={name!r}: jaxdisco loads the pretraining models "
        f"{sorted(FAIRSEQ_MODELS)} (fine-tuned and other models are not supported)"
    )
  if "label_embs_concat" in state_dict:
    return "hubert"
  if any(k.startswith("feature_aggregator.") for k in state_dict):
    return "vq_wav2vec"
  if "quantizer.vars" in state_dict:
    return "wav2vec2"
  raise CheckpointError(f"{where}: cannot tell the model: its config names none")


def spec_from_fairseq(
    cfg: Mapping[str, Any],
    state_dict: Mapping[str, Any],
    *,
    where: str,
    config_source: str = "cfg",
    label_set_sizes: Optional[tuple[int, ...]] = None,
) -> FairseqModelSpec:
  """cfg: {"model": {...}, "task": {...}, ...} as `fairseq_checkpoint` reads it; state_dict: the
  model's (only shapes are read: HuBERT's class count); where: the file, for messages."""
  method = fairseq_method(cfg, state_dict, where)
  fields = dict(FAIRSEQ_DEFAULTS[method])
  given = dict(cfg.get("model", {}))
  fields.update({k: v for k, v in given.items() if k in fields or config_source == "cfg"})
  _refuse_unsupported(method, fields, given if config_source == "cfg" else {}, where)
  task = cfg.get("task", {}) or {}
  sample_rate = task.get("sample_rate", SAMPLE_RATE)
  if sample_rate != SAMPLE_RATE:
    raise CheckpointError(
        f"{where}: task.sample_rate={sample_rate}: jaxdisco's models take {SAMPLE_RATE} Hz audio"
    )
  run = {"data.normalize": bool(task.get("normalize", False))}
  try:
    if method == "vq_wav2vec":
      model_config = _vq_wav2vec_config(fields, run)
    else:
      model_config = _backbone_config(method, fields, run)
  except ValueError as err:  # ModelConfig's own checks (e.g. heads not dividing the width).
    raise CheckpointError(f"{where}: the checkpoint's model config is not valid here: {err}")
  if method == "hubert":
    label_set_sizes = _hubert_labels(fields, cfg, state_dict, label_set_sizes, run, where)
  return FairseqModelSpec(method, model_config, run, label_set_sizes)


def _refuse_unsupported(method: str, fields: dict, given: dict, where: str) -> None:
  problems = []
  for name, (accepted, why) in _FIXED[method].items():
    if fields.get(name) not in accepted:
      problems.append(f"model.{name}={fields.get(name)!r} ({why})")
  if method != "vq_wav2vec" and (fields.get("adp_num") or -1) > 0:
    problems.append(f"model.adp_num={fields['adp_num']} (jaxdisco has no adapters)")
  if method == "vq_wav2vec" and fields["activation"] != "gelu" and fields["vq_depth"] > 1:
    problems.append(
        f"model.activation={fields['activation']!r} with model.vq_depth={fields['vq_depth']} "
        "(jaxdisco's gumbel projection's hidden layers use GELU)"
    )
  known = set(FAIRSEQ_DEFAULTS[method]) | set(_RECIPE[method])
  for name, value in given.items():
    if name not in known and value not in (None, False, 0, 0.0, "", "none", [], ()):
      problems.append(f"model.{name}={value!r} (a fairseq option jaxdisco does not know)")
  if problems:
    raise CheckpointError(
        f"{where}: the checkpoint uses fairseq options jaxdisco's {method} model cannot "
        "represent: " + "; ".join(problems)
    )


def _conv_string(text: str, field: str, run_length: bool) -> str:
  try:
    spec = parse_conv_layers(text)
  except (ValueError, SyntaxError) as err:
    raise CheckpointError(f"model.{field}={text!r}: {err}") from None
  if not run_length:
    return "[" + ", ".join(str(layer) for layer in spec) + "]"
  runs: list[list] = []  # The form jaxdisco's configs use: "[(512, 10, 5)] + [(512, 3, 2)] * 4".
  for layer in spec:
    if runs and runs[-1][0] == layer:
      runs[-1][1] += 1
    else:
      runs.append([layer, 1])
  return " + ".join(f"[{layer}]" + (f" * {n}" if n > 1 else "") for layer, n in runs)


def _backbone_config(method: str, f: dict, run: dict) -> ModelConfig:
  embed_dim = int(f["encoder_embed_dim"])
  values = dict(
      conv_layers=_conv_string(f["conv_feature_layers"], "conv_feature_layers", True),
      extractor_mode=str(f["extractor_mode"]),
      conv_bias=bool(f["conv_bias"]),
      feature_grad_mult=float(f["feature_grad_mult"]),
      embed_dim=embed_dim,
      num_layers=int(f["encoder_layers"]),
      num_heads=int(f["encoder_attention_heads"]),
      ffn_dim=int(f["encoder_ffn_embed_dim"]),
      layer_norm_first=bool(f["layer_norm_first"]),
      pos_conv_kernel=int(f["conv_pos"]),
      pos_conv_groups=int(f["conv_pos_groups"]),
      dropout=float(f["dropout"]),
      attention_dropout=float(f["attention_dropout"]),
      activation_dropout=float(f["activation_dropout"]),
      dropout_input=float(f["dropout_input"]),
      dropout_features=float(f["dropout_features"]),
      layerdrop=float(f["encoder_layerdrop"]),
      # fairseq: final_dim <= 0 means the model width.
      final_dim=int(f["final_dim"]) if int(f["final_dim"]) > 0 else embed_dim,
  )
  run["objective.logit_temperature"] = float(f["logit_temp"])
  if method == "wav2vec2":
    values.update(
        latent_vars=int(f["latent_vars"]),
        latent_groups=int(f["latent_groups"]),
        latent_dim=max(int(f["latent_dim"]), 0),  # Both: 0 means final_dim.
    )
    run["objective.gumbel_temperature"] = tuple(float(t) for t in f["latent_temp"])
    run["objective.num_negatives"] = int(f["num_negatives"])
    run["objective.cross_sample_negatives"] = int(f["cross_sample_negatives"])
  return ModelConfig(**values)


def _vq_wav2vec_config(f: dict, run: dict) -> VqWav2VecConfig:
  offset = f["offset"]
  if isinstance(offset, str) and offset != "auto":
    offset = ast.literal_eval(offset)
  run["objective.kmeans_gamma"] = float(f["vq_gamma"])
  run["objective.gumbel_temperature"] = tuple(float(t) for t in f["vq_temp"])
  run["objective.infonce"] = bool(f["infonce"])
  run["objective.num_negatives"] = int(f["num_negatives"])
  return VqWav2VecConfig(
      encoder_layers=_conv_string(f["conv_feature_layers"], "conv_feature_layers", False),
      aggregator_layers=_conv_string(f["conv_aggregator_layers"], "conv_aggregator_layers", False),
      log_compression=bool(f["log_compression"]),
      residual_scale=float(f["residual_scale"]),
      aggregator_bias=not bool(f["no_conv_bias"]),
      activation=str(f["activation"]),
      vq_type=str(f["vq_type"]),
      vq_vars=int(f["vq_vars"]),
      vq_groups=int(f["vq_groups"]),
      vq_dim=max(int(f["vq_dim"]), 0),
      vq_depth=int(f["vq_depth"]),
      combine_groups=bool(f["combine_groups"]),
      prediction_steps=int(f["prediction_steps"]),
      offset=-1 if offset == "auto" else int(offset),
  )


def _hubert_labels(f, cfg, state_dict, sizes, run, where) -> Optional[tuple[int, ...]]:
  """Label rate, untied projection and fairseq's rows per label set: the model splits
  `label_embs_concat` [sum of rows, final_dim] into the task's label Dictionaries, whose sizes
  the checkpoint keeps in task_state (fairseq writes it); with one label set the sum is that
  size. (Which rows are which unit, hence `labels.num_classes`: `load_fairseq_checkpoint`.)"""
  label_rate = f.get("label_rate")
  if isinstance(label_rate, str):  # An unresolved "${task.label_rate}".
    label_rate = (cfg.get("task") or {}).get("label_rate")
  if label_rate is not None:
    run["objective.label_rate"] = float(label_rate)
  run["objective.untie_final_proj"] = bool(f["untie_final_proj"])
  criterion = cfg.get("criterion") or {}
  for theirs, ours in (("pred_masked_weight", "masked_weight"), ("pred_nomask_weight",
                                                                  "unmasked_weight")):
    if isinstance(criterion.get(theirs), (int, float)):
      run[f"objective.{ours}"] = float(criterion[theirs])
  embeddings = state_dict.get("label_embs_concat")
  if embeddings is None:
    return sizes
  total = int(embeddings.shape[0])
  labels = (cfg.get("task") or {}).get("labels")
  num_sets = len(sizes) if sizes else (len(labels) if isinstance(labels, (list, tuple)) else 1)
  if sizes and sum(sizes) != total:
    raise CheckpointError(
        f"{where}: task_state's label dictionaries have {list(sizes)} symbols but "
        f"label_embs_concat has {total} rows"
    )
  if num_sets == 1:
    sizes = (total,)
  return sizes
