"""Frozen feature extraction from a pretrained backbone (Hugging Face directory or jaxdisco
checkpoint): `load_pretrained(path).extract_features(waveforms)`."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp

from jaxdisco.errors import CheckpointError, MissingFileError
from jaxdisco.models.config import ModelConfig
from jaxdisco.models.hidden_states import (
    DEFAULT_HIDDEN_STATES_CONVENTION,
    hidden_states_in_convention,
)
from jaxdisco.models.wav2vec2 import Wav2Vec2Backbone


@dataclasses.dataclass(frozen=True, eq=False)
class Pretrained:
  """A backbone ready for inference.

  config: the ModelConfig; params: `{'params': {'backbone': ..., <optional heads>}}`;
  model_type: the `jaxdisco.methods` method the model belongs to (for a jaxdisco or fairseq
  checkpoint the method it was trained with; for a Hugging Face directory its model_type, which
  names the method of the same name): its declaration says which units it exports and as
  which Hugging Face model.
  """

  config: ModelConfig
  params: Any
  model_type: str = "wav2vec2"

  def extract_features(
      self,
      waveforms,
      padding_mask=None,
      output_layers: Optional[Sequence[int]] = None,
      *,
      hidden_states_convention: str = DEFAULT_HIDDEN_STATES_CONVENTION,
  ) -> dict[str, Any]:
    """Runs the backbone in inference mode (no dropout, no masking).

    waveforms: [batch, samples] float32, or [samples] for one utterance (a batch of 1 is
    returned); padding_mask: [batch, samples] bool, True = padding (the inverse of HF's
    attention_mask), padding at the end of each row. Compiled once per input shape.

    Returns a dict of jax arrays:
      * last_hidden_state [batch, frames, dim]: the encoder output (for pre-LN models after
        the final encoder LayerNorm);
      * hidden_states: tuple of L + 1 arrays [batch, frames, dim]:
          - entry 0 is the input of layer 0: after the positional conv is added and, for
            post-LN models, after the encoder LayerNorm; for pre-LN models no LayerNorm has
            been applied yet;
          - entry i (1 <= i <= L) is the output of layer i-1; for pre-LN models the raw
            residual stream, so entry L is the last layer's output *before* the final
            encoder LayerNorm (it differs from last_hidden_state).
        This is the `output_hidden_states` convention of transformers 5.x, which the test
        suite compares against, and fairseq returns a requested layer's output the same way.
        `hidden_states_convention="transformers4"` gives the transformers 4.x convention
        instead, which differs in one place only: for pre-LN models entry L is the encoder
        output after the final LayerNorm (= last_hidden_state). For post-LN models the two
        are the same;
      * frame_valid [batch, frames] bool: False for frames computed from padding.

    output_layers: optional hidden-state indices (0..L, negatives count from the end). Only
    those entries are returned in `hidden_states`, in the order given, and only the layers
    needed for the deepest one are run; `last_hidden_state` is then the deepest computed
    state (the true encoder output only if L is requested).
    hidden_states_convention: "transformers5" (default) or "transformers4", see above.
    Features for k-means and the tokenizer that assigns them must use the same one
    (`export_tokenizer` records it).
    """
    wav = jnp.asarray(waveforms, jnp.float32)
    if wav.ndim == 1:
      wav = wav[None]
      if padding_mask is not None:
        padding_mask = jnp.asarray(padding_mask)[None]
    if wav.ndim != 2:
      raise ValueError(
          f"waveforms: expected [batch, samples] or [samples], got shape " f"{wav.shape}"
      )
    if padding_mask is not None:
      padding_mask = jnp.asarray(padding_mask, bool)
      if padding_mask.shape != wav.shape:
        raise ValueError(
            f"padding_mask shape {padding_mask.shape} != waveforms shape " f"{wav.shape}"
        )
    num_layers = self.config.num_layers
    selected = None
    run_layers = num_layers
    if output_layers is not None:
      selected = tuple(_resolve_index(i, num_layers) for i in output_layers)
      if not selected:
        raise ValueError("output_layers is empty")
      run_layers = max(selected)
    last, hidden, valid = _run(
        self.config, run_layers, self.params["params"]["backbone"], wav, padding_mask
    )
    hidden = hidden_states_in_convention(hidden, last, hidden_states_convention, num_layers)
    if selected is not None:
      hidden = tuple(hidden[i] for i in selected)
    return {"last_hidden_state": last, "hidden_states": tuple(hidden), "frame_valid": valid}


def _resolve_index(i: int, num_layers: int) -> int:
  if not -(num_layers + 1) <= i <= num_layers:
    raise ValueError(f"output_layers: index {i} out of range for {num_layers + 1} hidden states")
  return i % (num_layers + 1)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _run(config: ModelConfig, run_layers: int, backbone_params, wav, padding_mask):
  # Params are an argument, not a closure constant, so they are not baked into the program;
  # jit caches one executable per (config, depth, input shapes, mask given or not).
  out = Wav2Vec2Backbone(config).apply(
      {"params": backbone_params},
      wav,
      padding_mask,
      None,
      deterministic=True,
      num_layers=run_layers,
  )
  return out.last_hidden_state, out.hidden_states, out.frame_valid


def load_pretrained(path: str | os.PathLike) -> Pretrained:
  """Loads a Hugging Face checkpoint directory (config.json with a `model_type`, plus
  model.safetensors or pytorch_model.bin), a jaxdisco training workdir / checkpoint, or a
  fairseq `.pt` file (wav2vec 2.0 / XLS-R, HuBERT, vq-wav2vec; read without running code from
  it, options jaxdisco cannot represent refused by name: `jaxdisco.export.fairseq_checkpoint`)."""
  path = os.fspath(path)
  if _is_hf_directory(path):
    from jaxdisco.export.huggingface import load_hf_checkpoint

    cfg, params, model_type = load_hf_checkpoint(path)
    return Pretrained(cfg, params, model_type)
  from jaxdisco.export.fairseq_checkpoint import is_fairseq_checkpoint, load_fairseq_checkpoint

  if is_fairseq_checkpoint(path):
    from jaxdisco.methods import get_method

    model = load_fairseq_checkpoint(path)
    return Pretrained(model.config, model.params, get_method(model.method).model_type)
  if not os.path.exists(path):
    raise MissingFileError(f"load_pretrained: {path!r} does not exist")
  try:
    from jaxdisco.train.checkpoint import load_pretrained_params
  except ImportError as err:
    raise ValueError(
        f"load_pretrained: {path!r} is not a Hugging Face directory (no "
        f"config.json with a model_type) and jaxdisco checkpoints cannot be read "
        f"here ({err})"
    ) from err
  try:
    loaded = load_pretrained_params(path)
  except Exception as err:  # Whatever the checkpoint reader raises, say what was tried.
    raise CheckpointError(
        f"load_pretrained: {path!r} is neither a Hugging Face directory (no "
        f"config.json with a model_type) nor a readable jaxdisco "
        f"workdir/checkpoint: {type(err).__name__}: {err}"
    ) from err
  params = loaded.params if "params" in loaded.params else {"params": loaded.params}
  # The checkpoint's method decides the model type: "wav2vec2" and "hubert" backbones share
  # extract_features and export as that Hugging Face model; a vq-wav2vec model (a
  # VqWav2VecConfig) is read by the tokenizer export only.
  from jaxdisco.methods import get_method

  return Pretrained(loaded.config, params, get_method(loaded.method).model_type)


def _is_hf_directory(path: str) -> bool:
  """A config.json alone is not enough: a training workdir may hold one too. HF's has a
  top-level `model_type`."""
  config_path = os.path.join(path, "config.json")
  if not os.path.isfile(config_path):
    return False
  try:
    with open(config_path) as f:
      config = json.load(f)
  except (OSError, ValueError):
    return False
  return isinstance(config, dict) and "model_type" in config
