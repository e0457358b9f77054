"""wav2vec 2.0 (arXiv 2006.11477): contrastive prediction of gumbel-quantized latents at
span-masked frames. BASE recipe defaults (LibriSpeech 960 h)."""

from __future__ import annotations

import dataclasses

import ml_collections

from jaxdisco.methods import checks
from jaxdisco.methods.base import Method
from jaxdisco.methods.run_defaults import run_defaults
from jaxdisco.models.config import ModelConfig
from jaxdisco.models.wav2vec2 import Wav2Vec2ForPretraining
from jaxdisco.objectives import wav2vec2


def wav2vec2_defaults() -> ml_collections.ConfigDict:
  c = run_defaults("wav2vec2")
  c.model = ml_collections.ConfigDict(dataclasses.asdict(ModelConfig()))
  c.objective = ml_collections.ConfigDict()
  c.objective.mask_prob = 0.65  # Fraction of frames that start a span (spans overlap: ~49% masked).
  c.objective.mask_length = 10  # Span length in frames.
  c.objective.min_masks = 2
  c.objective.require_same_masks = True  # Trim masks to the batch's smallest count.
  c.objective.num_negatives = 100  # Distractors per masked frame, from the same utterance.
  c.objective.cross_sample_negatives = 0  # Extra distractors from the whole batch.
  c.objective.logit_temperature = 0.1
  c.objective.diversity_weight = 0.1
  c.objective.feature_penalty_weight = 10.0
  c.objective.gumbel_temperature = (2.0, 0.5, 0.999995)  # (start, end, decay per update).
  return c


def check_wav2vec2_config(config) -> ModelConfig:
  model = checks.typed_model_config(config, ModelConfig)
  checks.check_masked_prediction(config, model)
  obj = config.objective
  checks.require(
      obj.num_negatives >= 1, f"objective.num_negatives: expected >= 1, got {obj.num_negatives}"
  )
  checks.check_gumbel_temperature(obj)
  return model


METHOD = Method(
    name="wav2vec2",
    defaults=wav2vec2_defaults,
    check=check_wav2vec2_config,
    build_model=lambda model_config, config: Wav2Vec2ForPretraining(model_config),
    loss=wav2vec2.pretraining_loss,
    batch_fields=("waveform", "padding_mask", "mask", "negatives", "cross_negatives"),
    init_kwargs=(("temperature", 2.0),),
    param_keys=frozenset({"project_q", "quantizer"}),
    head_params=("quantizer", "project_q", "final_proj"),
    model_type="wav2vec2",
    hf_model_type="wav2vec2",
    # Its own quantizer's codes are units too, no k-means needed.
    unit_kinds=("kmeans", "codebook"),
)
