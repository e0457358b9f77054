"""The pretraining methods the trainer runs: one explicit entry per method.

A method says how to build its model, initialise parameters, compute (loss, metrics) from a
batch and which batch fields the device step needs. The trainer is otherwise method-agnostic.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
from flax import linen as nn

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

  def boxed_init_fn(self, model_config: ModelConfig, config, batch_shape, seed: int):
    """() -> {'params': ...} with logically partitioned leaves (shapes depend on the crop)."""
    model = self.build_model(model_config, config)
    frames = model_config.num_frames(batch_shape[1])
    kwargs = {"temperature": 2.0} if self.name == "wav2vec2" else {}

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

  return Method(
      name="wav2vec2",
      build_model=lambda model_config, config: Wav2Vec2ForPretraining(model_config),
      loss=wav2vec2.pretraining_loss,
      loss_kwargs=lambda config: {},
      batch_fields=("waveform", "padding_mask", "mask", "negatives", "cross_negatives"),
  )


def _hubert() -> Method:
  from jaxdisco.models.hubert import HubertForPretraining
  from jaxdisco.objectives import hubert

  return Method(
      name="hubert",
      build_model=lambda model_config, config: HubertForPretraining(
          model_config, (config.labels.num_classes,), config.objective.untie_final_proj
      ),
      loss=hubert.pretraining_loss,
      loss_kwargs=lambda config: {"num_classes": (config.labels.num_classes,)},
      batch_fields=("waveform", "padding_mask", "mask", "labels"),
  )


def _vq_wav2vec() -> Method:
  from jaxdisco.models.wav2vec1 import VqWav2Vec
  from jaxdisco.objectives import vq_wav2vec

  return Method(
      name="vq_wav2vec",
      build_model=lambda model_config, config: VqWav2Vec(
          model_config, config.objective.kmeans_gamma
      ),
      loss=vq_wav2vec.pretraining_loss,
      loss_kwargs=lambda config: {},
      batch_fields=("waveform", "padding_mask"),
      init_inputs=lambda batch_shape: ((jnp.zeros(batch_shape, jnp.float32),), {}),
  )


METHODS: dict[str, Callable[[], Method]] = {
    "wav2vec2": _wav2vec2,
    "hubert": _hubert,
    "vq_wav2vec": _vq_wav2vec,
}


def get_method(name: str) -> Method:
  if name not in METHODS:
    raise ValueError(f"method: expected one of {sorted(METHODS)}, got {name!r}")
  return METHODS[name]()
