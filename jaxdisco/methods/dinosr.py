"""DinoSR (Liu et al., arXiv 2305.10005): self-distillation with online clustering. A student
predicts, at span-masked frames, the codes that online codebooks give the top K layers of an
EMA teacher (`objectives/dinosr.py` has the objective and its departures from the reference;
`models/dinosr.py` the parameters). BASE defaults from the reference's config/base.yaml.

Published values (config/base.yaml, models/dinosr.py): layer-norm conv encoder, LayerDrop
0.05, dropout_input / dropout_features 0, feature_grad_mult 1.0, codebook size 256 for each
of the top 8 layers (K = average_top_k_layers), codebook decay 0.9, instance-normalised
targets, masks 0.8 / 10 with require_same_masks, teacher EMA 0.999 -> 0.9999 over 30k
updates, teacher (and the student's pre-encoder) frozen from update 200001, Adam lr 5e-4
betas (0.9, 0.98) eps 1e-6 weight decay 0.01, 400k updates, crops up to 320k samples
(max_tokens 3.8M per GPU x 16 GPUs).
Where jaxdisco departs (besides the objective's, listed there):
  * schedule: the reference's tri_stage (3% warm-up, 47% hold, 50% decay) is not one of
    jaxdisco's schedules (linear warm-up + polynomial decay): 12k warm-up updates (3%) then
    linear decay to 0. The hold phase is lost, so the mean learning rate is lower;
  * positional conv: the reference's 5-layer stack of kernel-19 convs (pos_conv_depth 5,
    conv_pos 95) is not jaxdisco's positional embedding, which is wav2vec 2.0's single grouped
    conv: kernel 128, 16 groups (the wav2vec 2.0 / HuBERT BASE one);
  * batch: a fixed 250k-sample crop (the wav2vec 2.0 defaults) and batch 240 (~3.8M x 16 / 250k);
  * dead-code re-seeding (`objective.dead_code_patience`, 0 turns it off; the reference has
    none);
  * `objective.codebook_init_scale` (1, the reference, by default): a small batch needs the
    random codewords to start near the origin. The reference's codewords have unit variance
    per channel, as far from the origin as the instance-normalised targets themselves, in
    random directions. The first update moves each code that won frames to (most of the way
    to) the mean of those frames, well inside that shell, and from then on a moved code is
    nearer to almost every target than any unmoved one: the codes that won the first
    update's frames keep winning. At BASE an update assigns ~100k masked frames to 256 codes
    and nearly every code wins some at once; with a few hundred frames per update only the
    first few dozen winners ever move (measured on the demo: 12 of 50 codes per batch from
    update 50 on, and PNMI 0.07). Codewords at 0.1 x that scale are all about as far from
    every target, so the first assignments follow direction (the largest dot product) and
    spread over the codebook (45 of 50 codes per batch at update 50, against 12). It changes
    only the codebooks' initial values, and it does not cure the demo's later collapse (by
    update ~200 the units there follow frame position, not speech; README, "DinoSR at demo
    scale").
"""

from __future__ import annotations

import ml_collections

from jaxdisco.methods import checks
from jaxdisco.methods.base import Method
from jaxdisco.methods.wav2vec2 import wav2vec2_defaults
from jaxdisco.models.config import ModelConfig
from jaxdisco.models.dinosr import (
    FROZEN_PARAMS,
    DinoSRForPretraining,
    copy_student_to_teacher,
    teacher_as_backbone,
)
from jaxdisco.objectives import dinosr


def dinosr_defaults() -> ml_collections.ConfigDict:
  c = wav2vec2_defaults()
  c.method = "dinosr"
  # No quantizer, no contrastive head, no feature penalty.
  for field in ("latent_vars", "latent_groups", "latent_dim", "quantizer_init_std", "final_dim"):
    if field in c.model:
      del c.model[field]
  for field in (
      "num_negatives",
      "cross_sample_negatives",
      "diversity_weight",
      "gumbel_temperature",
      "logit_temperature",
      "feature_penalty_weight",
  ):
    del c.objective[field]
  m = c.model
  m.extractor_mode = "layer_norm"
  m.layerdrop = 0.05
  m.dropout_input = m.dropout_features = 0.0
  m.feature_grad_mult = 1.0

  o = c.objective
  o.mask_prob = 0.8
  o.mask_length = 10
  o.min_masks = 1  # The reference's apply_mask passes min_masks=1.
  o.require_same_masks = True
  o.codebook_size = 256  # V codes per codebook.
  o.average_top_k_layers = 8  # K: one codebook (and head) per top layer.
  o.codebook_decay = 0.9  # codebook_init_decay (= codebook_end_decay in the recipe).
  # Random codewords start at this fraction of the targets' scale (1: the reference). See the
  # module docstring for why a small batch needs it smaller.
  o.codebook_init_scale = 1.0
  o.ema_decay = 0.999  # Teacher EMA decay at update 0...
  o.ema_end_decay = 0.9999  # ...annealed linearly to this...
  o.ema_anneal_end_step = 30_000  # ...over these updates, then constant.
  o.freeze_teacher_step = 200_001  # From this update on the teacher stops (<= 0: never).
  # Dead codes (jaxdisco's addition): a code given no masked frame for this many updates in a
  # row is re-seeded by splitting its codebook's most used code (0: off). 100 updates of the
  # BASE batch are ~6M masked frames, of the demo's ~25k: a code that none of them reaches
  # carries no mass by any measure, and waiting longer only delays its recovery.
  o.dead_code_patience = 100
  o.dead_code_noise = 0.01  # Perturbation of a re-seeded codeword, relative to its RMS.

  c.data.normalize = True  # task.normalize: true.
  c.data.min_samples = 32_000
  c.data.batch_size = 240
  c.optim.warmup_steps = 12_000  # 3% of 400k (tri_stage's warm-up phase).
  c.train.num_steps = 400_000
  return c


def check_dinosr_config(config) -> ModelConfig:
  model = checks.typed_model_config(config, ModelConfig)
  checks.check_masked_prediction(config, model)
  o = config.objective
  checks.require(
      1 <= o.average_top_k_layers <= model.num_layers,
      f"objective.average_top_k_layers: expected 1..model.num_layers ({model.num_layers}), got "
      f"{o.average_top_k_layers}",
  )
  checks.require(
      o.codebook_size >= 2, f"objective.codebook_size: expected >= 2, got {o.codebook_size}"
  )
  for name in ("codebook_decay", "ema_decay", "ema_end_decay"):
    checks.require(0.0 < o[name] <= 1.0, f"objective.{name}: expected (0, 1], got {o[name]}")
  checks.require(
      o.ema_anneal_end_step >= 0,
      f"objective.ema_anneal_end_step: expected >= 0, got {o.ema_anneal_end_step}",
  )
  checks.require(
      o.codebook_init_scale > 0,
      f"objective.codebook_init_scale: expected > 0, got {o.codebook_init_scale}",
  )
  checks.require(
      o.dead_code_patience >= 0,
      f"objective.dead_code_patience: expected >= 0 (0: off), got {o.dead_code_patience}",
  )
  checks.require(
      o.dead_code_noise >= 0, f"objective.dead_code_noise: expected >= 0, got {o.dead_code_noise}"
  )
  return model


def build_dinosr(model_config, config) -> DinoSRForPretraining:
  o = config.objective
  return DinoSRForPretraining(
      model_config,
      o.average_top_k_layers,
      o.codebook_size,
      float(o.get("codebook_init_scale", 1.0)),  # Configs saved before the field: the reference.
  )


METHOD = Method(
    name="dinosr",
    defaults=dinosr_defaults,
    check=check_dinosr_config,
    build_model=build_dinosr,
    loss=dinosr.pretraining_loss,
    loss_kwargs=lambda config: {
        "num_codebooks": config.objective.average_top_k_layers,
        "codebook_size": config.objective.codebook_size,
    },
    batch_fields=("waveform", "padding_mask", "mask"),
    param_fields=("objective.codebook_size", "objective.average_top_k_layers"),
    param_keys=None,  # Every DinoSR checkpoint records its method.
    head_params=("heads",),
    model_type="dinosr",
    hf_model_type=None,
    unit_kinds=("dinosr", "kmeans"),
    frozen_params=FROZEN_PARAMS,
    param_update=dinosr.make_param_update,
    finish_init=copy_student_to_teacher,
    inference_params=teacher_as_backbone,
)
