"""Continued pretraining: `train.init_from` starts a run from another model's weights.

The run is new in every other respect: a fresh optimizer (Adam's moments at zero), step 0, the
run's own schedule, data order and objective. The weights can come from:
  * a jaxdisco training workdir, its checkpoints/ directory or one step directory;
  * a Hugging Face directory (config.json + model.safetensors / pytorch_model.bin);
  * a fairseq `.pt` (wav2vec 2.0 / XLS-R, HuBERT, vq-wav2vec; read without running code from
    it, see `export.fairseq_checkpoint`).
The source must be the run's method and architecture: every typed model field that decides
what the parameters are or compute (`architecture_fields`) must equal the run's, and a mismatch
is refused naming each field. Dropout, layerdrop, feature_grad_mult, initialisation scale and
compute fields are the run's to choose, and so are the head sizes (final_dim, latent_*) when the
source has no heads.

Heads are matched by shape. The backbone (and all of vq-wav2vec) must be complete. A head the
source lacks (a Hugging Face `Wav2Vec2Model` has no quantizer; HF HuBERT no final_proj or label
embeddings) or whose shape differs from the run's keeps its fresh initialisation, and the log
says so: for HuBERT this is the new label set of the next iteration (`labels.num_classes` other
than the source's K), whose label embeddings are re-initialised; with the same K they are taken
over. A workdir that already has a checkpoint resumes from it instead (the trainer's job).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, NamedTuple

import jax
import numpy as np
from flax import traverse_util

from jaxdisco.errors import CheckpointError, MissingFileError

# Typed model-config fields that do not change what the parameters are or compute.
_TRAINING_ONLY_FIELDS = frozenset(
    {
        "feature_grad_mult",
        "dropout",
        "attention_dropout",
        "activation_dropout",
        "dropout_input",
        "dropout_features",
        "layerdrop",
        "quantizer_init_std",
        "dtype",
        "attention",
    }
)
# Typed model-config fields that shape only the pretraining heads: not compared when the source
# has none of them (a Hugging Face HuBERT or Wav2Vec2Model directory does not record final_dim).
_HEAD_ONLY_FIELDS = frozenset({"final_dim", "latent_vars", "latent_groups", "latent_dim"})


class SourceWeights(NamedTuple):
  method: str
  config: Any  # ModelConfig or VqWav2VecConfig.
  params: dict  # {'params': ...}: numpy or jax arrays.
  description: str  # "fairseq:/path/x.pt", "huggingface:/dir", "jaxdisco:/workdir".
  # HuBERT: why the source's label embeddings cannot be taken over whatever their shape (a
  # fairseq checkpoint whose rows are not known per label id), or "".
  label_embeddings_unusable: str = ""


def initialize_from(path: str, state, method, model_config, *, say: Callable[[str], None]):
  """`train.init_from`: the fresh sharded `state` of a run (`method`: a jaxdisco.methods Method;
  `model_config`: the run's typed model config) with the weights at `path`."""
  source = load_source(path)
  check_architecture(source, method, model_config, f"train.init_from={path}")
  return initialize_state(state, source, method, say=say)


def load_source(path: str) -> SourceWeights:
  """Reads the weights `train.init_from` names (any kind in the module docstring)."""
  from jaxdisco.export.fairseq_checkpoint import is_fairseq_checkpoint, load_fairseq_checkpoint
  from jaxdisco.pretrained import _is_hf_directory

  if "://" not in path:
    if not os.path.exists(path):
      raise MissingFileError(f"train.init_from={path!r} does not exist")
    path = os.path.abspath(path)
  if is_fairseq_checkpoint(path):
    model = load_fairseq_checkpoint(path)
    unusable = "" if model.label_embeddings_per_unit else (
        "the checkpoint does not say which of its rows is which label id (its task_state has no "
        "single label Dictionary of units 0..K-1)"
    )
    return SourceWeights(model.method, model.config, model.params, f"fairseq:{path}", unusable)
  if _is_hf_directory(path):
    from jaxdisco.export.huggingface import load_hf_checkpoint

    try:
      config, params, model_type = load_hf_checkpoint(path)
    except ValueError as err:
      raise CheckpointError(f"train.init_from={path}: {err}") from None
    return SourceWeights(model_type, config, params, f"huggingface:{path}")
  from jaxdisco.train.checkpoint import load_pretrained_params

  loaded = load_pretrained_params(path, for_inference=False)
  params = loaded.params if "params" in loaded.params else {"params": loaded.params}
  return SourceWeights(
      loaded.method, loaded.config, params, f"jaxdisco:{path} (step {loaded.step})"
  )


def architecture_fields(method) -> tuple[str, ...]:
  """The typed model fields a source must share with the run (`method`: a jaxdisco.methods
  Method): those of its config schema, less the training-only ones."""
  schema = method.defaults().model
  return tuple(
      f.name
      for f in dataclasses.fields(method.model_config_type)
      if f.name in schema and f.name not in _TRAINING_ONLY_FIELDS
  )


def check_architecture(source: SourceWeights, method, model_config, where: str) -> None:
  """Raises CheckpointError naming every field where the source differs from the run."""
  if source.method != method.name:
    raise CheckpointError(
        f"{where}: method: the source is a {source.method} model, the run's config has "
        f"method={method.name!r}"
    )
  problems = []
  has_heads = any(head in _inner(source.params) for head in method.head_params)
  for name in architecture_fields(method):
    if name in _HEAD_ONLY_FIELDS and not has_heads:
      continue
    theirs, ours = getattr(source.config, name), getattr(model_config, name)
    if name.endswith("_layers") and isinstance(theirs, str):  # Conv specs: compare the layers.
      from jaxdisco.models.config import parse_conv_layers

      same = parse_conv_layers(theirs) == parse_conv_layers(ours)
    else:
      same = theirs == ours
    if not same:
      problems.append(f"model.{name}: the source has {theirs!r}, the config has {ours!r}")
  if problems:
    raise CheckpointError(
        f"{where} does not fit the run's model:\n  "
        + "\n  ".join(problems)
        + "\nSet these --config.model.* fields to the source's, or drop train.init_from."
    )


def initialize_state(state, source: SourceWeights, method, *, say: Callable[[str], None]):
  """The fresh `state` with its parameters replaced by the source's, each placed with the
  sharding of the leaf it replaces (so the state keeps its layout). The optimizer state, RNG
  and counters stay fresh: Adam's moments start at zero whatever the parameters."""
  ours = traverse_util.flatten_dict(state.params["params"])
  theirs = traverse_util.flatten_dict(_inner(source.params))
  heads = method.head_params
  reinitialised: dict[str, str] = {}
  problems = []
  new = {}
  for path, leaf in ours.items():
    head = path[0] if path[0] in heads else None
    value = theirs.get(path)
    reason = None
    if value is None:
      reason = "absent from the source"
    elif tuple(value.shape) != tuple(leaf.shape):
      reason = f"shape {tuple(value.shape)} in the source, {tuple(leaf.shape)} in the run"
    elif head == "label_embeddings" and source.label_embeddings_unusable:
      reason = source.label_embeddings_unusable
    if reason is None:
      new[path] = _place(np.asarray(value, leaf.dtype), leaf.sharding)
    elif head is not None:
      new[path] = leaf
      reinitialised.setdefault(head, f"{'/'.join(path)}: {reason}")
    else:
      problems.append(f"{'/'.join(path)}: {reason}")
  unused = sorted("/".join(p) for p in theirs if p not in ours and p[0] not in heads)
  if unused:
    problems.append(f"parameters the run's model does not have: {unused[:8]}")
  if problems:
    raise CheckpointError(
        f"train.init_from={source.description}: the weights do not fit the run's model:\n  "
        + "\n  ".join(problems)
    )
  taken = len(ours) - sum(1 for p in ours if p[0] in reinitialised)
  say(
      f"train.init_from: {taken} of {len(ours)} parameter arrays from {source.description}; "
      "fresh optimizer, step 0"
  )
  if "label_embeddings" in heads and "label_embeddings" not in reinitialised:
    rows = ours[("label_embeddings",)].shape[0]
    say(f"train.init_from: HuBERT label embeddings taken over (the same {rows} classes)")
  for head, why in reinitialised.items():
    what = "HuBERT label embeddings (a new label set)" if head == "label_embeddings" else head
    say(f"train.init_from: {what} re-initialised ({why})")
  params = {"params": traverse_util.unflatten_dict(new)}
  return state.replace(params=params)


def _inner(params: dict) -> dict:
  return params["params"] if "params" in params else params


def _place(value: np.ndarray, sharding) -> jax.Array:
  # Each process builds its own shards from the whole host array (same file on every process).
  return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])
