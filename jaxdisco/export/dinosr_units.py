"""`dinosr` units: the index of the nearest codeword of a DinoSR model's own online codebook.

The features are those the codebook was trained on: hidden_states[layer] of the teacher (the
backbone a DinoSR checkpoint loads as, `methods.dinosr` `inference_params`), instance-
normalised per utterance and channel over the utterance's valid frames
(`objectives.dinosr.instance_norm_valid`), assigned to the nearest codeword (L2) of the
codebook of that layer (`objectives.dinosr.nearest_codes`): the targets the student learned
to predict, with no k-means. Only the top K layers have codebooks (K = the run's
`objective.average_top_k_layers`): layers num_layers - K + 1 .. num_layers.

The instance norm spans the whole input: ids of a chunk of an utterance differ near the
statistics of the chunk, so tokenize whole utterances (or long chunks). hidden_states are the
backbone's own convention (for pre-LN models the last layer before the final LayerNorm), as in
training, whatever `hidden_states_convention` says.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxdisco.errors import TokenizerError

Array = jax.Array


def codebook_layers(num_layers: int, num_codebooks: int) -> list[int]:
  """hidden_states indices with a codebook, in codebook order."""
  return list(range(num_layers - num_codebooks + 1, num_layers + 1))


def make_weights(pretrained, layer: int, centroids: Optional[np.ndarray]):
  if centroids is not None:
    raise TokenizerError("units='dinosr' uses the model's own codebooks; do not pass centroids")
  p = pretrained.params["params"]
  if "codebooks" not in p:
    raise TokenizerError(
        "units='dinosr' needs a DinoSR checkpoint's codebooks, which this source lacks"
    )
  sums = np.asarray(p["codebooks"], np.float32)
  counts = np.asarray(p["codebook_counts"], np.float32)
  k, v, _ = sums.shape
  layers = codebook_layers(pretrained.config.num_layers, k)
  if layer not in layers:
    raise TokenizerError(
        f"units='dinosr': layer {layer} has no codebook; this model's {k} codebooks belong to "
        f"hidden_states {layers[0]}..{layers[-1]} (the top {k} layers): pass one of those as "
        "--layer"
    )
  index = layers.index(layer)
  words = sums[index] / counts[index][:, None]
  info = {
      "vocab_size": int(v),
      "id_mapping": (
          "index of the nearest codeword (L2) of the model's codebook of this layer, on the "
          "layer's features instance-normalised per utterance and channel over valid frames"
      ),
      "codebook_index": int(index),
  }
  return {"codewords": words.astype(np.float32)}, info, {}


def ids(spec, weights, waveform: Array, padding_mask: Array) -> Array:
  from jaxdisco.export.unit_kinds import _backbone  # pylint: disable=g-import-not-at-top
  from jaxdisco.objectives.dinosr import instance_norm_valid, nearest_codes

  out = _backbone(spec, weights, waveform, padding_mask)
  x = instance_norm_valid(out.hidden_states[spec.layer], out.frame_valid)
  codes = nearest_codes(x, weights["quantizer"]["codewords"])
  return jnp.where(out.frame_valid, codes, -1)
