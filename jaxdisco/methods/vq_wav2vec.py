"""vq-wav2vec (arXiv 1910.05453): a wav2vec 1.0 conv encoder and aggregator trained by future
prediction against gumbel or online k-means quantized targets (the reference's recipe,
LibriSpeech 960 h). Data, parallelism and train-loop fields are the shared ones
(`run_defaults.py`); the model block is `VqWav2VecConfig` and the objective block the one below.
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from jaxdisco.methods import checks
from jaxdisco.methods.base import Method
from jaxdisco.methods.demo_settings import demo_data
from jaxdisco.methods.run_defaults import run_defaults
from jaxdisco.models.vq_wav2vec_config import VqWav2VecConfig
from jaxdisco.models.wav2vec1 import VqWav2Vec
from jaxdisco.objectives import vq_wav2vec


def vq_wav2vec_defaults() -> ml_collections.ConfigDict:
  c = run_defaults("vq_wav2vec")
  c.model = ml_collections.ConfigDict(VqWav2VecConfig().to_dict())

  c.objective = ml_collections.ConfigDict()
  c.objective.num_negatives = 10  # Distractors per target frame, from the same utterance.
  # Per-pair loss: binary cross-entropy (the recipe) or, True, InfoNCE (the reference's
  # `--infonce`: cross-entropy of the positive among the 1 + K candidates).
  c.objective.infonce = False
  c.objective.gumbel_temperature = (2.0, 0.5, 0.999995)  # (start, end, decay per update).
  c.objective.kmeans_gamma = 0.25  # Commitment weight inside the k-means loss.
  # Weight of the quantizer term: k-means loss (recipe: 1) or gumbel diversity penalty
  # G*V - perplexity (recipe: none, 0).
  c.objective.quantizer_weight = 0.0

  c.data.crop_samples = 150_000  # --max-sample-size 150000.
  c.data.min_samples = 32_000
  c.data.batch_size = 32  # --max-tokens 300000 (two crops) x 16 GPUs.

  # fairseq's Adam defaults (the command sets no betas, eps or weight decay); lr 1e-5 after 1k
  # warm-up updates. The reference anneals it with a cosine schedule to 1e-6; jaxdisco's
  # schedule is polynomial, so it decays linearly to the same end value.
  c.optim.lr = 1e-5
  c.optim.end_lr = 1e-6
  c.optim.warmup_steps = 1_000
  c.optim.b1, c.optim.b2, c.optim.eps = 0.9, 0.999, 1e-8
  c.optim.weight_decay = 0.0
  c.optim.clip_norm = 0.0
  c.train.num_steps = 400_000
  return c


def vq_wav2vec_demo(c: ml_collections.ConfigDict) -> None:
  """The CPU-demo size shared by configs/vq_wav2vec_demo_{gumbel,kmeans}.py, on the shipped
  demo corpus. What differs from the recipe, and why (measured on the demo corpus, 2 cores):
    * InfoNCE instead of binary cross-entropy. With the binary loss the first updates shrink
      every logit to ln(1/K) (the loss plateau (1+K) ln 2 -> ln 11 + 10 ln(11/10) = 3.35) by
      shrinking the step projections, which also cuts the gradient to the aggregator and the
      encoder; at batch 8 x 1 s the remaining signal is too noisy to leave that plateau: with
      the quantizer bypassed (continuous targets, detached or not, lr 3e-5 .. 1e-3, with or
      without log compression) accuracy stayed at 0.095 for 300 updates. InfoNCE ignores a
      shift shared by all candidates; the same bypassed model reached 0.28 in 300 updates.
      The recipe's batches (~30k frames per update, 40x ours) make the plateau cheap.
    * A 64-channel, 6-layer encoder (same strides: 100 Hz, 465-sample receptive field), a
      4-layer aggregator 64 wide, 2 x 32 codes, 12 steps from offset 3, 10 distractors.
    * Normalized input, 1 s crops, batch 8, lr 1e-3 with 100 warm-up updates (recipe 1e-5).
  The configs set the quantizer and the run length.
  """

  m = c.model
  m.encoder_layers = "[(64, 10, 5), (64, 8, 4), (64, 4, 2), (64, 4, 2), (64, 4, 2), (64, 1, 1)]"
  m.aggregator_layers = "[(64, 2, 1), (64, 3, 1), (64, 4, 1), (64, 5, 1)]"
  m.vq_vars = 32
  c.objective.infonce = True

  demo_data(c.data)

  c.optim.lr = 1e-3
  c.optim.end_lr = 1e-4
  c.optim.warmup_steps = 100

  c.train.log_every = 50
  c.train.eval_every = 500
  c.train.checkpoint_every = 500
  c.train.keep_checkpoints = 1


def check_vq_wav2vec_config(config) -> VqWav2VecConfig:
  """The vq-wav2vec fields; returns the typed model config."""
  model = checks.typed_model_config(config, VqWav2VecConfig)
  data, obj = config.data, config.objective
  checks.require(
      not data.masks_in_pipeline,
      "data.masks_in_pipeline: vq-wav2vec has no masks (distractors are drawn in the step); "
      "set it to False",
  )
  shortest = max(data.min_samples, model.receptive_field)
  frames = model.num_frames(shortest)
  checks.require(
      frames >= model.prediction_offset + 2,
      f"data.min_samples ({data.min_samples}) gives {frames} frames: need at least "
      f"model.offset + 2 = {model.prediction_offset + 2} so that some frame has a target and a "
      "distractor. Raise data.min_samples.",
  )
  checks.require(
      obj.num_negatives >= 1, f"objective.num_negatives: expected >= 1, got {obj.num_negatives}"
  )
  checks.require(
      obj.kmeans_gamma >= 0, f"objective.kmeans_gamma: expected >= 0, got {obj.kmeans_gamma}"
  )
  checks.require(
      obj.quantizer_weight >= 0,
      f"objective.quantizer_weight: expected >= 0, got {obj.quantizer_weight}",
  )
  checks.check_gumbel_temperature(obj)
  return model


METHOD = Method(
    name="vq_wav2vec",
    defaults=vq_wav2vec_defaults,
    check=check_vq_wav2vec_config,
    build_model=lambda model_config, config: VqWav2Vec(model_config, config.objective.kmeans_gamma),
    loss=vq_wav2vec.pretraining_loss,
    batch_fields=("waveform", "padding_mask"),
    init_inputs=lambda batch_shape: ((jnp.zeros(batch_shape, jnp.float32),), {}),
    model_config_type=VqWav2VecConfig,
    param_keys=frozenset({"step_projection"}),
    model_type="vq_wav2vec",
    # Units are its own quantizer's codes; there is no transformers counterpart.
    unit_kinds=("vq_wav2vec",),
)
