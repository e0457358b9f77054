"""The pretraining methods the trainer runs: one explicit entry per method.

A method says how to build its model, initialise parameters, compute (loss, metrics) from a
batch and which batch fields the device step needs; and, for checkpoints and export, what its
config schema and defaults are, which fields outside `model` shape its parameters, how its
parameter tree is recognised and which model type it loads and exports as.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Iterable, Optional

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxdisco.errors import CheckpointError, ConfigError
from jaxdisco.models.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class Method:
  name: str
  build_model: Callable[[ModelConfig, Any], nn.Module]  # (model_config, run config) -> module
  loss: Callable  # loss(params, batch, key, step, *, model_config, objective, train, **extra)
  loss_kwargs: Callable[[Any], dict]  # run config -> extra keyword arguments of `loss`
  batch_fields: tuple[str, ...]
  # (batch_shape) -> (args, kwargs) of `model.init` after the rng dict; None: the masked
  # prediction models' (waveform, None, mask).
  init_inputs: Optional[Callable[[tuple[int, int]], tuple[tuple, dict]]] = None
  # Extra keyword arguments of `model.init` (wav2vec 2.0: the gumbel temperature).
  init_kwargs: tuple[tuple[str, Any], ...] = ()
  # () -> the method's default run config: the schema a saved config is read against (a field
  # absent from an older config stands for its default here).
  defaults: Optional[Callable[[], Any]] = None
  # The typed config of the `model` block (`from_dict`, `to_dict`; its field defaults).
  model_config_type: type = ModelConfig
  # Dotted config paths outside `model` that decide parameter shapes: a checkpoint cannot be
  # resumed under other values.
  param_fields: tuple[str, ...] = ()
  # Top-level parameter names only this method's model has: how a checkpoint written before
  # checkpoints recorded their method is recognised.
  param_keys: frozenset[str] = frozenset()
  # What `load_pretrained` reports as `model_type`, and the Hugging Face model type the
  # backbone exports as (None: no Hugging Face counterpart).
  model_type: str = ""
  hf_model_type: Optional[str] = None

  def boxed_init_fn(self, model_config: ModelConfig, config, batch_shape, seed: int):
    """() -> {'params': ...} with logically partitioned leaves (shapes depend on the crop)."""
    model = self.build_model(model_config, config)
    frames = model_config.num_frames(batch_shape[1])
    kwargs = dict(self.init_kwargs)

    def init():
      keys = {"params": jax.random.key(seed), "dropout": jax.random.key(seed + 1)}
      if self.init_inputs is not None:
        args, extra = self.init_inputs(batch_shape)
        return model.init(keys, *args, **extra)
      wav = jnp.zeros(batch_shape, jnp.float32)
      mask = jnp.zeros((batch_shape[0], frames), bool)
      return model.init(keys, wav, None, mask, **kwargs)

    return init

  def loss_fn(self, model_config: ModelConfig, config):
    """(params, batch, key, step, train) -> (loss, metrics)."""
    bound = functools.partial(
        self.loss, model_config=model_config, objective=config.objective, **self.loss_kwargs(config)
    )
    return lambda p, b, k, s, t: bound(p, b, k, s, train=t)


def _wav2vec2() -> Method:
  from jaxdisco.models.wav2vec2 import Wav2Vec2ForPretraining
  from jaxdisco.objectives import wav2vec2
  from jaxdisco.train.defaults import wav2vec2_defaults

  return Method(
      name="wav2vec2",
      build_model=lambda model_config, config: Wav2Vec2ForPretraining(model_config),
      loss=wav2vec2.pretraining_loss,
      loss_kwargs=lambda config: {},
      batch_fields=("waveform", "padding_mask", "mask", "negatives", "cross_negatives"),
      init_kwargs=(("temperature", 2.0),),
      defaults=wav2vec2_defaults,
      param_keys=frozenset({"project_q", "quantizer"}),
      model_type="wav2vec2",
      hf_model_type="wav2vec2",
  )


def _hubert() -> Method:
  from jaxdisco.models.hubert import HubertForPretraining
  from jaxdisco.objectives import hubert
  from jaxdisco.train.hubert_defaults import hubert_defaults

  return Method(
      name="hubert",
      build_model=lambda model_config, config: HubertForPretraining(
          model_config, (config.labels.num_classes,), config.objective.untie_final_proj
      ),
      loss=hubert.pretraining_loss,
      loss_kwargs=lambda config: {"num_classes": (config.labels.num_classes,)},
      batch_fields=("waveform", "padding_mask", "mask", "labels"),
      defaults=hubert_defaults,
      # K sizes the label embeddings; untying gives final_proj one slice per label set.
      param_fields=("labels.num_classes", "objective.untie_final_proj"),
      param_keys=frozenset({"label_embeddings"}),
      model_type="hubert",
      hf_model_type="hubert",
  )


def _vq_wav2vec() -> Method:
  from jaxdisco.models.vq_wav2vec_config import VqWav2VecConfig
  from jaxdisco.models.wav2vec1 import VqWav2Vec
  from jaxdisco.objectives import vq_wav2vec
  from jaxdisco.train.vq_wav2vec_defaults import vq_wav2vec_defaults

  return Method(
      name="vq_wav2vec",
      build_model=lambda model_config, config: VqWav2Vec(
          model_config, config.objective.kmeans_gamma
      ),
      loss=vq_wav2vec.pretraining_loss,
      loss_kwargs=lambda config: {},
      batch_fields=("waveform", "padding_mask"),
      init_inputs=lambda batch_shape: ((jnp.zeros(batch_shape, jnp.float32),), {}),
      defaults=vq_wav2vec_defaults,
      model_config_type=VqWav2VecConfig,
      param_keys=frozenset({"step_projection"}),
      model_type="vq_wav2vec",
  )


METHODS: dict[str, Callable[[], Method]] = {
    "wav2vec2": _wav2vec2,
    "hubert": _hubert,
    "vq_wav2vec": _vq_wav2vec,
}


def get_method(name: str) -> Method:
  if name not in METHODS:
    raise ConfigError(f"method: expected one of {sorted(METHODS)}, got {name!r}")
  return METHODS[name]()


def infer_method(param_names: Iterable[str]) -> str:
  """The method whose model has these top-level parameters (the keys under `params`): for
  checkpoints written before checkpoints recorded their method."""
  names = set(param_names)
  found = [name for name in METHODS if get_method(name).param_keys <= names]
  if len(found) != 1:
    raise CheckpointError(
        f"cannot tell the method from the checkpoint's parameters {sorted(names)}: "
        f"matches {found or 'none'} of {sorted(METHODS)}"
    )
  return found[0]
