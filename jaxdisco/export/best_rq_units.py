"""The `best_rq` unit kind: a BEST-RQ model's own random-projection quantizer ids of the audio.

No model layer is run: the program computes the normalised log-mel frames (the same
`models/log_mel.py` function training used), stacks them to the encoder's frame rate and takes
the nearest code of the frozen quantizer, exported as it was trained (`quantizer.safetensors`:
`projection` [G, stack * bins, code_dim], `codebooks` [G, V, code_dim]). These are exactly the
targets the model was trained to predict, so they are the same for every checkpoint of a run
(the quantizer never trains). `encoder.safetensors` is empty.

With G > 1 codebooks (multi-softmax) the id combines them like the `codebook` kind:
id = sum_g code_g * V**(G-1-g), vocabulary V**G (refused when that exceeds int32).
Frames are the model's (`config.num_frames`); a frame is -1 on padding, and also where its
stack of mel frames runs past the valid audio (at most the last frame, only for front ends
whose frames are not whole stacks, e.g. the waveform encoder's 20 ms).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxdisco.errors import TokenizerError

Array = jax.Array


def best_rq_weights(pretrained, layer: int, centroids: Optional[np.ndarray]):
  from jaxdisco.export.unit_kinds import flatten  # pylint: disable=g-import-not-at-top

  del layer
  if centroids is not None:
    raise TokenizerError("units='best_rq' uses the model's own quantizer; do not pass centroids")
  head = pretrained.params["params"].get("quantizer")
  if head is None or "codebooks" not in head:
    raise TokenizerError(
        "units='best_rq' needs a BEST-RQ random-projection quantizer, which this checkpoint "
        "lacks: use units='kmeans'"
    )
  cfg = pretrained.config
  g, v, dim = (int(n) for n in np.shape(head["codebooks"]))
  stack = int(np.shape(head["projection"])[1]) // cfg.mel_bins
  if v**g >= 2**31:
    raise TokenizerError(
        f"units='best_rq': {g} codebooks of {v} codes give {v}**{g} ids, beyond int32"
    )
  info = {
      "vocab_size": int(v**g),
      "id_mapping": (
          "index of the nearest code of the frozen random-projection quantizer"
          if g == 1
          else f"id = sum_g code_g * {v}**({g - 1} - g) over G={g} codebooks of V={v}"
      ),
      "groups": g,
      "vars_per_group": v,
      "code_dim": dim,
      "stack_frames": stack,
      "features": (
          f"{stack} stacked normalised {cfg.mel_bins}-d log-mel frames (10 ms) per frame, "
          "from the audio (no model layer)"
      ),
  }
  return flatten(head), info, {"num_groups": g, "num_vars": v}


def best_rq_encoder(pretrained, layer: int) -> dict:
  del pretrained, layer
  return {}  # The ids read no backbone parameter.


def best_rq_ids(spec, weights, waveform: Array, padding_mask: Array) -> Array:
  # pylint: disable=g-import-not-at-top
  from jaxdisco.export.unit_kinds import combine_groups, normalize_rows
  from jaxdisco.models import log_mel
  from jaxdisco.models.wav2vec2 import frame_validity
  from jaxdisco.quantizers.random_projection import random_projection_ids

  cfg = spec.config
  if spec.normalize:
    waveform = normalize_rows(waveform, padding_mask)
  q = weights["quantizer"]
  stack = q["projection"].shape[1] // cfg.mel_bins
  frames = cfg.num_frames(waveform.shape[-1])
  mel, lengths = log_mel.normalized_log_mel(waveform, padding_mask, cfg.mel_bins)
  stacked, whole = log_mel.stack_frames(mel, lengths, stack, frames)
  codes = random_projection_ids(stacked, jnp.asarray(q["projection"]), jnp.asarray(q["codebooks"]))
  ids = combine_groups(codes, spec.num_vars)
  valid = frame_validity(padding_mask, waveform.shape[-1], cfg, waveform.shape[0]) & whole
  return jnp.where(valid, ids, -1)
