"""What a pretraining method declares: the one contract the trainer, the config checks, the
HuBERT loop, the compile/plan path and the exporters read.

A method is a `Method` value in its own module of `jaxdisco.methods` (`wav2vec2.py`,
`hubert.py`, ...), which also holds the method's config defaults and checks. Nothing outside
this package compares method names: code asks the declaration (`method.uses_labels`,
`method.unit_kinds`, `method.example_batch(...)`).
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
  # () -> the method's default run config: the schema a saved config is read against (a field
  # absent from an older config stands for its default here).
  defaults: Callable[[], Any]
  # (config) -> the typed model config, after the method's own checks; the checks every method
  # shares (mesh, batch, optimizer, train loop) run around it (`jaxdisco.methods.checks`).
  check: Callable[[Any], Any]
  build_model: Callable[[Any, Any], nn.Module]  # (model_config, run config) -> module
  loss: Callable  # loss(params, batch, key, step, *, model_config, objective, train, **extra)
  batch_fields: tuple[str, ...]  # The batch entries the device step reads.
  loss_kwargs: Callable[[Any], dict] = lambda config: {}  # Extra keyword arguments of `loss`.
  # True: batches carry `labels` (int32 [batch, crop * label_rate / sample_rate]) read from
  # `labels.train` / `labels.valid` at `objective.label_rate`, the k-means pseudo-labels that
  # `jaxdisco hubert-iterate` writes; such a method can be trained by the loop.
  uses_labels: bool = False
  # (batch_shape) -> (args, kwargs) of `model.init` after the rng dict; None: the masked
  # prediction models' (waveform, None, mask).
  init_inputs: Optional[Callable[[tuple[int, int]], tuple[tuple, dict]]] = None
  init_kwargs: tuple[tuple[str, Any], ...] = ()  # Extra keyword arguments of `model.init`.
  model_config_type: type = ModelConfig  # The typed `model` block (`from_dict`, `to_dict`).
  # Dotted config paths outside `model` that decide parameter shapes: a checkpoint cannot be
  # resumed under other values.
  param_fields: tuple[str, ...] = ()
  # Top-level parameter names only this method's model has: how a checkpoint written before
  # checkpoints recorded their method is recognised (None: a method added after that, never
  # inferred).
  param_keys: Optional[frozenset[str]] = None
  # Top-level parameters of the pretraining heads (not the backbone): continued pretraining
  # keeps them fresh when the source lacks them or their shape differs (`train.init_from`).
  head_params: tuple[str, ...] = ()
  # What `load_pretrained` reports as `model_type`, and the Hugging Face model type the
  # backbone exports as (None: no Hugging Face counterpart).
  model_type: str = ""
  hf_model_type: Optional[str] = None
  # `export-tokenizer --units` kinds this method's models export (`export/unit_kinds.py`); the
  # first is the default.
  unit_kinds: tuple[str, ...] = ("kmeans",)

  def boxed_init_fn(self, model_config, config, batch_shape, seed: int):
    """() -> {'params': ...} with logically partitioned leaves (shapes depend on the crop)."""
    model = self.build_model(model_config, config)
    kwargs = dict(self.init_kwargs)

    def init():
      keys = {"params": jax.random.key(seed), "dropout": jax.random.key(seed + 1)}
      if self.init_inputs is not None:
        args, extra = self.init_inputs(batch_shape)
        return model.init(keys, *args, **extra)
      wav = jnp.zeros(batch_shape, jnp.float32)
      mask = jnp.zeros((batch_shape[0], model_config.num_frames(batch_shape[1])), bool)
      return model.init(keys, wav, None, mask, **kwargs)

    return init

  def loss_fn(self, model_config, config):
    """(params, batch, key, step, train) -> (loss, metrics)."""
    bound = functools.partial(
        self.loss, model_config=model_config, objective=config.objective, **self.loss_kwargs(config)
    )
    return lambda p, b, k, s, t: bound(p, b, k, s, train=t)

  def example_batch(self, config, batch_size: int, crop: int) -> dict[str, jax.ShapeDtypeStruct]:
    """The device batch of one step at `batch_size` x `crop` samples, as shapes: what the
    compile/plan path feeds the step. Masks and negatives are left to the step (drawn on
    device, the default `data.masks_in_pipeline=False`)."""
    batch = {
        "waveform": jax.ShapeDtypeStruct((batch_size, crop), jnp.float32),
        "padding_mask": jax.ShapeDtypeStruct((batch_size, crop), jnp.bool_),
    }
    if self.uses_labels:
      per_label = int(config.data.sample_rate / config.objective.label_rate)
      batch["labels"] = jax.ShapeDtypeStruct((batch_size, crop // per_label), jnp.int32)
    return {k: v for k, v in batch.items() if k in self.batch_fields}
