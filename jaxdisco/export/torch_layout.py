"""PyTorch state-dict arrays -> jaxdisco parameter arrays, shared by the Hugging Face and the
fairseq importers (`huggingface.py`, `fairseq.py`): their key tables name, per entry, one of the
rearrangements below; the tables themselves differ, the array layouts do not.

  * "copy"             unchanged;
  * "linear"           torch Linear weight [out, in]         -> Dense kernel [in, out];
  * "conv"             torch Conv1d weight [out, in, taps]   -> kernel [taps, in, out];
  * "gain"             weight_norm(dim=2) g [1, 1, taps]     -> [taps];
  * "codevectors"      gumbel codevectors [1, G * V, d / G]  -> [G * V, d / G];
  * "per_head"         one value per head [1, heads, 1, 1]   -> [heads] (WavLM's gate scale);
  * "kmeans_codebook"  vq-wav2vec k-means [V, books, d / G]  -> [books, V, d / G];
  * "grouped_1x1"      grouped 1x1 conv [dim, dim / G, 1]    -> [G, dim / G (in), dim / G (out)];
  * "steps"            ConvTranspose2d [in, out, 1, steps]   -> [steps, in, out].
"""

from __future__ import annotations

from typing import Any

import numpy as np


def weight_norm_aliases(prefix: str) -> dict[str, str]:
  """The `parametrizations` names of a weight-normed conv at `prefix` (torch >= 2.1 modules)
  -> the legacy `torch.nn.utils.weight_norm` names the key tables use."""
  return {
      prefix + "parametrizations.weight.original0": prefix + "weight_g",
      prefix + "parametrizations.weight.original1": prefix + "weight_v",
  }


def as_numpy(x: Any) -> np.ndarray:
  if hasattr(x, "detach"):  # A torch.Tensor, without importing torch here.
    x = x.detach().cpu().float().numpy()
  return np.asarray(x)


def set_path(tree: dict, path: tuple[str, ...], value: Any) -> None:
  for name in path[:-1]:
    tree = tree.setdefault(name, {})
  tree[path[-1]] = value


def to_jaxdisco(x: np.ndarray, kind: str) -> np.ndarray:
  """One state-dict array in jaxdisco's layout (float32, contiguous); `kind` as above."""
  if kind == "linear":
    x = x.T
  elif kind == "conv":
    x = x.transpose(2, 1, 0)
  elif kind in ("gain", "per_head"):
    x = x.reshape(-1)
  elif kind == "codevectors":
    x = x[0]
  elif kind == "kmeans_codebook":
    x = x.transpose(1, 0, 2)
  elif kind == "grouped_1x1":
    # Output channel o = g * (dim / G) + j reads group g's inputs: [G, in, out] per group.
    dim, per_group, _ = x.shape
    x = x[:, :, 0].reshape(dim // per_group, per_group, per_group).transpose(0, 2, 1)
  elif kind == "steps":
    x = x[:, :, 0, :].transpose(2, 0, 1)
  return np.ascontiguousarray(x, dtype=np.float32)
