"""WavLM's denoising masked speech modeling (arXiv 2110.13900): HuBERT's masked prediction of
pseudo-labels, with the model seeing a batch in which some utterances carry a chunk of another
utterance (`utterance_mixing`) while the labels stay those of the clean primary utterance."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdisco.objectives import hubert
from jaxdisco.objectives.utterance_mixing import mix_utterances


def pretraining_loss(
    params, batch, key, step, *, model_config, objective, num_classes, renormalize: bool, train
):
  """(params, batch, key) -> (loss, metrics): `hubert.pretraining_loss` on the mixed batch.

  Mixing is a training augmentation: evaluation (`train=False`) scores the clean batch, so
  validation losses compare with HuBERT's. `renormalize`: mixed rows are normalized again
  (runs with `data.normalize`, whose model expects zero mean / unit variance rows).
  """
  mix_key, key = jax.random.split(key)
  mixed_rows = jnp.zeros((), jnp.float32)
  if train and objective.mix_prob > 0:
    waveform, draw = mix_utterances(
        mix_key,
        batch["waveform"],
        batch["padding_mask"],
        probability=objective.mix_prob,
        max_fraction=objective.mix_max_fraction,
        energy_ratio_db=tuple(objective.mix_energy_ratio_db),
        renormalize=renormalize,
    )
    batch = {**batch, "waveform": waveform}
    mixed_rows = jnp.mean(draw.mixed.astype(jnp.float32))
  loss, metrics = hubert.pretraining_loss(
      params,
      batch,
      key,
      step,
      model_config=model_config,
      objective=objective,
      num_classes=num_classes,
      train=train,
  )
  if train:
    metrics = {**metrics, "mixed_rows": mixed_rows}
  return loss, metrics
