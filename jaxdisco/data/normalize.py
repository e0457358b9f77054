"""Waveform normalization shared by the input pipeline and the tokenizer programs.

numpy only: a tokenizer imports it without the training input stack (grain, soundfile).
"""

from __future__ import annotations

import numpy as np

# Same epsilon as torch's layer_norm, which is how the reference normalizes.
NORMALIZE_EPS = 1e-5


def normalize_waveform(waveform: np.ndarray) -> np.ndarray:
  """Zero mean, unit variance over all of `waveform` (float32 `[samples]`)."""
  mean = waveform.mean()
  variance = waveform.var()
  return ((waveform - mean) / np.sqrt(variance + NORMALIZE_EPS)).astype(np.float32)
