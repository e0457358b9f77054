"""The learned discrete codes of a trained vq-wav2vec model, for tokenizers and unit analysis.

`vq_wav2vec_codes(config, params, waveform, padding_mask)` gives the quantizer's choice per
frame and group at 100 frames/s (stride 160): the argmax of the gumbel logits (no noise), or the
nearest k-means codebook entry. `codes_to_ids` folds the G group codes of a frame into one id,
`sum_g codes[g] * V**(G-1-g)`, in [0, V**G).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxdisco.models.vq_wav2vec_config import VqWav2VecConfig
from jaxdisco.models.wav2vec1 import Wav2Vec1Encoder, make_quantizer
from jaxdisco.models.wav2vec2 import frame_validity  # Needs only num_frames and geometry_spec.

Array = jax.Array


def vq_wav2vec_codes(
    config: VqWav2VecConfig, params, waveform: Array, padding_mask: Optional[Array] = None
) -> Array:
  """codes int32 [batch, frames, groups]; frames = config.num_frames(samples).

  params: {'params': {'encoder': ..., 'quantizer': ...}} (a whole VqWav2Vec's parameters, or
  only these two: the aggregator and step projections are not needed).
  waveform: [batch, samples] float32 at 16 kHz, preprocessed as in training (the run's
  `data.normalize`); padding_mask: [batch, samples] bool, True = padding at the end (None: no
  padding). Codes of padded frames are meaningless: keep the first
  `config.num_frames(valid samples)` frames of each row (`codes_and_frame_valid` says
  which). Pure and jittable (`config` static).
  """
  return codes_and_frame_valid(config, params, waveform, padding_mask)[0]


def codes_and_frame_valid(
    config: VqWav2VecConfig, params, waveform: Array, padding_mask: Optional[Array] = None
) -> tuple[Array, Array]:
  """(`vq_wav2vec_codes`, frame_valid [batch, frames] bool: False for padding frames)."""
  # The encoder and quantizer alone, as `VqWav2Vec.quantize` runs them without gumbel noise.
  # (Applying VqWav2Vec itself would need every parameter its `setup` declares.)
  p = params["params"]
  waveform = jnp.asarray(waveform, jnp.float32)
  valid_samples = None if padding_mask is None else jnp.sum(~padding_mask, axis=-1)
  z = Wav2Vec1Encoder(config).apply({"params": p["encoder"]}, waveform, valid_samples)
  frame_valid = frame_validity(padding_mask, waveform.shape[-1], config, waveform.shape[0])
  quantizer = make_quantizer(config)
  if config.vq_type == "gumbel":
    q = quantizer.apply(
        {"params": p["quantizer"]}, z, temperature=1.0, key=None, weights=frame_valid
    )
  else:
    q = quantizer.apply({"params": p["quantizer"]}, z, frame_valid)
  return q.codes, frame_valid


def codes_to_ids(codes, num_vars: int):
  """[..., groups] codes -> [...] single ids sum_g codes[g] * num_vars**(groups-1-g).

  int64 for numpy inputs (V**G overflows int32 beyond G = 3 at V = 320); jax arrays stay in
  their dtype (int32 suffices for the published 2 x 320: ids < 102,400).
  """
  groups = codes.shape[-1]
  if isinstance(codes, jax.Array):
    weights = jnp.asarray([num_vars ** (groups - 1 - g) for g in range(groups)], codes.dtype)
    return jnp.sum(codes * weights, axis=-1)
  codes = np.asarray(codes, np.int64)
  weights = np.asarray([num_vars ** (groups - 1 - g) for g in range(groups)], np.int64)
  return np.sum(codes * weights, axis=-1)
