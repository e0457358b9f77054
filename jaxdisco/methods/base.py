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
from jaxdisco.objectives.update_stats import STATS  # pylint: disable=unused-import


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
  # Top-level parameters the optimizer never updates (no gradient step, no weight decay, no
  # optimizer moments): a frozen random quantizer, an EMA teacher, online codebooks. They live
  # in `params` so that they checkpoint, shard and export with the model.
  frozen_params: tuple[str, ...] = ()
  # (model_config, run config) -> update(new_params, old_params, stats, step) -> params, run
  # after each applied (finite) optimizer update: how an EMA teacher follows the student and
  # online codebooks move. `stats` is the loss's `metrics[STATS]` tree summed over
  # micro-batches (e.g. per-code sums and counts); None: the method has no such state.
  param_update: Optional[Callable[[Any, Any], Callable]] = None
  # (boxed {'params': ...}) -> the same tree, applied once after `model.init`: e.g. an EMA
  # teacher that starts as a copy of the student. None: the init as the model makes it.
  finish_init: Optional[Callable[[Any], Any]] = None
  # ({'params': ...} of a checkpoint) -> {'params': {'backbone': ..., <heads>}}, the tree that
  # inference (`load_pretrained`, the tokenizer export, feature dumps) reads: e.g. DinoSR's
  # teacher as the backbone. None: the checkpoint's params as they are.
  inference_params: Optional[Callable[[Any], Any]] = None

  def boxed_init_fn(self, model_config, config, batch_shape, seed: int):
    """() -> {'params': ...} with logically partitioned leaves (shapes depend on the crop)."""
    model = self.build_model(model_config, config)
    kwargs = dict(self.init_kwargs)

    def init():
      keys = {"params": jax.random.key(seed), "dropout": jax.random.key(seed + 1)}
      if self.init_inputs is not None:
        args, extra = self.init_inputs(batch_shape)
        params = model.init(keys, *args, **extra)
      else:
        wav = jnp.zeros(batch_shape, jnp.float32)
        mask = jnp.zeros((batch_shape[0], model_config.num_frames(batch_shape[1])), bool)
        params = model.init(keys, wav, None, mask, **kwargs)
      return params if self.finish_init is None else self.finish_init(params)

    return init

  def param_update_fn(self, model_config, config) -> Optional[Callable]:
    return None if self.param_update is None else self.param_update(model_config, config)

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
