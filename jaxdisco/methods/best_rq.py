"""BEST-RQ (Chiu et al., "Self-supervised learning with random-projection quantizer for speech
recognition", arXiv 2202.01855): masked prediction of the ids a frozen random-projection
quantizer gives the unmasked log-mel input. No k-means, no iterations, no learned targets.

The recipe, value by value, with its source and what jaxdisco does:
  * input: 80-d log-mel filterbanks, 25 ms window / 10 ms hop (paper Sec. 4.1), normalised to
    zero mean / unit variance (Sec. 3.1 stresses the normalisation: without it the quantizer
    collapses onto few codes). jaxdisco: Kaldi fbank computed on device with the DFT as a
    matmul (`models/log_mel.py`), normalised per utterance and bin (the paper does not say over
    what it normalises; NeMo's and SpeechBrain's recipes normalise per utterance too).
  * quantizer (Sec. 3.1): frames stacked to the encoder's 40 ms rate (4 x 80 = 320-d), projected
    by a frozen Xavier-initialised matrix to code_dim 16, L2-normalised, nearest of 8192
    L2-normalised standard-normal codes (paper: vocab 8192, code dim 16); multi-softmax with
    several codebooks (Sec. 3.4 of the paper's ablations) is `quantizer.num_codebooks`.
  * masking (Sec. 3.2, 4.1): span starts with probability 0.01 per frame, spans of 400 ms,
    masked input frames replaced by noise N(0, 0.1^2) (std 0.1). The probability is per
    frame of the 40 ms frames the model predicts: span starts per frame = 0.01. jaxdisco's
    span masking (fairseq's `compute_mask_indices`) draws mask_prob * frames / mask_length
    starts, i.e. mask_prob / mask_length starts per frame; 400 ms = mask_length 10 frames of
    40 ms, so mask_prob = 0.01 x 10 = 0.1 (expected masked share ~ 1 - 0.99^10 = 9.6%, spans
    may overlap). The mask is drawn at encoder frames and maps onto the 10 ms mel frames under
    them (`log_mel.mel_frame_mask`: a 40 ms frame masks its 4 mel frames, so a span masks
    40 mel frames = 400 ms of input). If the 0.01 were meant per 10 ms input frame instead, the
    same mask_length would need mask_prob 0.4; 0.1 is what this reading of the paper gives.
    `objective.min_masks = 2` (fairseq's default) is jaxdisco's, not the paper's: short crops
    always get some masked frames.
  * loss: cross-entropy of a softmax head per codebook at masked frames only (Sec. 3.3).
  * encoder: the paper's 0.6B Conformer (24 layers, 1024-d, conv subsampling x4 to 40 ms) is
    not built. jaxdisco's Transformer is the encoder (BASE size in configs/best_rq_base.py,
    pre-LN as Conformers are), behind `model.conv_layers` as a 1-D conv subsampling over mel
    channels (two stride-2 stages there, a single stacking stage (D, 4, 4) in the demo).
  * optimizer: the paper trains its Conformer with Adam and a Transformer (inverse square
    root) schedule on 2048-utterance batches (its Sec. 4.1; the exact peak rate and warm-up are
    not re-checked here). jaxdisco keeps its one AdamW + linear warm-up / linear decay schedule
    (`train/optimizer.py`) at HuBERT BASE's values (peak 5e-4, 32k warm-up, 400k steps, clip 10):
    the encoder is a BASE Transformer trained on the same crops and batches as HuBERT BASE, for
    which those values are known to work, and it keeps tables comparable across methods.

Alternatives: `model.frontend = "waveform"` keeps the conv waveform encoder as the front end
(the quantizer still reads log-mel frames: `quantizer.stack_frames = 2` mel frames per 20 ms
encoder frame; the checks refuse rates that do not match), with the learned mask embedding
(`model.mask_noise_std = 0`) since there is no input frame to put noise on.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import ml_collections

from jaxdisco.methods import checks
from jaxdisco.methods.base import Method
from jaxdisco.methods.run_defaults import run_defaults
from jaxdisco.models.config import MEL_HOP, ModelConfig

QUANTIZER_FIELDS = ("vocab", "code_dim", "num_codebooks", "stack_frames")


def best_rq_defaults() -> ml_collections.ConfigDict:
  c = run_defaults("best_rq")
  c.model = ml_collections.ConfigDict(dataclasses.asdict(ModelConfig()))
  for field in ("latent_vars", "latent_groups", "latent_dim", "quantizer_init_std", "final_dim"):
    del c.model[field]  # wav2vec 2.0's heads: BEST-RQ's head is a softmax per codebook.
  m = c.model
  m.frontend = "log_mel"
  m.mel_bins = 80
  m.conv_layers = "[(512, 3, 2)] * 2"  # 10 ms -> 40 ms, as the Conformer's x4 subsampling.
  m.extractor_mode = "layer_norm"
  m.conv_bias = True
  m.feature_grad_mult = 1.0  # wav2vec 2.0's 0.1 tames its raw-waveform encoder; not needed here.
  m.layer_norm_first = True
  m.mask_noise_std = 0.1  # Paper: masked frames replaced by N(0, 0.1^2) noise.

  c.quantizer = ml_collections.ConfigDict()
  c.quantizer.vocab = 8192  # Codes per codebook (paper).
  c.quantizer.code_dim = 16  # Projection / code dimension (paper).
  c.quantizer.num_codebooks = 1  # > 1: the multi-softmax variant, one head per codebook.
  c.quantizer.stack_frames = 4  # 10 ms mel frames per encoder frame: frame stride / 160.

  c.objective = ml_collections.ConfigDict()
  c.objective.mask_prob = 0.1  # = 0.01 span starts per 40 ms frame x mask_length (see above).
  c.objective.mask_length = 10  # 400 ms at 40 ms frames.
  c.objective.min_masks = 2
  c.objective.require_same_masks = True

  c.data.crop_samples = 249_920
  c.data.batch_size = 176
  c.optim.clip_norm = 10.0
  return c


def check_best_rq_config(config) -> ModelConfig:
  model = checks.typed_model_config(config, ModelConfig)
  checks.check_masked_prediction(config, model)
  q, obj = config.quantizer, config.objective
  checks.require(q.vocab >= 2, f"quantizer.vocab: expected >= 2, got {q.vocab}")
  checks.require(q.code_dim >= 1, f"quantizer.code_dim: expected >= 1, got {q.code_dim}")
  checks.require(
      q.num_codebooks >= 1, f"quantizer.num_codebooks: expected >= 1, got {q.num_codebooks}"
  )
  checks.require(
      q.stack_frames >= 1, f"quantizer.stack_frames: expected >= 1, got {q.stack_frames}"
  )
  checks.require(
      config.data.sample_rate == 16000,
      f"data.sample_rate: the log-mel frames (25 ms / 10 ms = 400 / 160 samples) are for "
      f"16000 Hz, got {config.data.sample_rate}",
  )
  checks.require(
      q.stack_frames * MEL_HOP == model.frame_stride,
      f"quantizer.stack_frames ({q.stack_frames} mel frames of {MEL_HOP} samples = "
      f"{q.stack_frames * MEL_HOP} samples) must match the encoder's frame stride "
      f"({model.frame_stride} samples from model.frontend={model.frontend!r} and "
      f"model.conv_layers={model.conv_layers!r}): the targets' rate must be the frames' rate"
      + (
          f"; use quantizer.stack_frames={model.frame_stride // MEL_HOP}"
          if model.frame_stride % MEL_HOP == 0
          else "; the stride must be a multiple of 160 samples"
      ),
  )
  checks.require(obj.min_masks >= 0, f"objective.min_masks: expected >= 0, got {obj.min_masks}")
  return model


def build_best_rq(model_config, config):
  from jaxdisco.models.best_rq import BestRqForPretraining  # pylint: disable=g-import-not-at-top

  return BestRqForPretraining(model_config, **_quantizer_kwargs(config))


def _quantizer_kwargs(config) -> dict:
  return {name: int(config.quantizer[name]) for name in QUANTIZER_FIELDS}


def _loss(*args, **kwargs):
  from jaxdisco.objectives import best_rq  # pylint: disable=g-import-not-at-top

  return best_rq.pretraining_loss(*args, **kwargs)


METHOD = Method(
    name="best_rq",
    defaults=best_rq_defaults,
    check=check_best_rq_config,
    build_model=build_best_rq,
    loss=_loss,
    loss_kwargs=_quantizer_kwargs,
    batch_fields=("waveform", "padding_mask", "mask"),
    # No mask at init: every parameter exists without one (noise masking has no embedding).
    init_inputs=lambda shape: ((jnp.zeros(shape, jnp.float32), None, None), {}),
    param_fields=tuple(f"quantizer.{name}" for name in QUANTIZER_FIELDS),
    param_keys=None,  # Every BEST-RQ checkpoint records its method.
    # A source without a quantizer of these shapes (e.g. HuBERT) gets a fresh one, as the heads.
    head_params=("heads", "quantizer"),
    model_type="best_rq",
    hf_model_type=None,  # transformers has no BEST-RQ model (and no log-mel wav2vec 2.0).
    # k-means of a layer, or the quantizer's own ids of the audio (no model layer).
    unit_kinds=("kmeans", "best_rq"),
    # The random-projection quantizer never trains: no update, no weight decay, no moments.
    frozen_params=("quantizer",),
)
