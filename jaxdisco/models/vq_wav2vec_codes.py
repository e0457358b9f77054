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
from jaxdisco.models.wav2vec1 import VqWav2Vec

Array = jax.Array


def vq_wav2vec_codes(
    config: VqWav2VecConfig, params, waveform: Array, padding_mask: Optional[Array] = None
) -> Array:
  """codes int32 [batch, frames, groups]; frames = config.num_frames(samples).

  waveform: [batch, samples] float32 at 16 kHz, preprocessed as in training (the run's
  `data.normalize`); padding_mask: [batch, samples] bool, True = padding at the end (None: no
  padding). Codes of padded frames are meaningless: keep the first
  `config.num_frames(valid samples)` frames of each row. Pure and jittable (`config` static).
  """
  model = VqWav2Vec(config)
  q, _ = model.apply(params, jnp.asarray(waveform, jnp.float32), padding_mask, method="quantize")
  return q.codes


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
