"""Bitrate and code usage of discrete unit sequences: the numbers reported next to PNMI and ABX.

Two bitrates, each before and after merging repeated consecutive units ("dedup"):

- `bitrate_entropy` = symbols/s x H2, H2 the empirical entropy (bits) of the symbol
  distribution over the corpus. This is the ZeroSpeech bitrate (Dunbar et al., ZeroSpeech 2019
  and 2021: "the number of symbols per second times the entropy of the symbol distribution"),
  and with dedup it is the number ZeroSpeech compares, since a submission there is the symbol
  sequence after merging.
- `bitrate_uniform` = symbols/s x log2(vocabulary): the cost of writing every symbol with a
  fixed-width code, an upper bound on the above (equal when all codes are used equally).

Durations are frames / frame_rate, so raw symbols/s is the frame rate itself. Also:
`mean_run_frames` (frames per run of one unit; x 1000 / frame_rate = ms), `used_codes` /
`vocab_size` (code usage), and `perplexity` = 2^H2 of the frame-level distribution (the number of
equally used codes with the same entropy).

`edge_position_share` detects units that carry no content: the share of frames whose unit is
the most common unit, over the corpus, of frames at the same offset from their utterance's
start (offsets below `EDGE_FRAMES`), the same offset from its end, or in its middle. A model
whose codes collapsed to what its zero-padded convolutions and positional embedding reveal
(every utterance the same sequence: a few codes at each edge, one code between) scores 1;
units that follow the speech score near `majority_share`, the share of the most common unit,
which is what the position test scores when position says nothing.
"""

from __future__ import annotations

from typing import Optional, Sequence

import collections

import numpy as np

EDGE_FRAMES = 20  # 0.4 s at 50 Hz: beyond the reach of a 3 x 128 demo model's edge effects.


def dedup(units: np.ndarray) -> np.ndarray:
  """[frames] -> [runs]: consecutive repeats merged."""
  units = np.asarray(units)
  if units.size == 0:
    return units
  return units[np.concatenate([[True], units[1:] != units[:-1]])]


def entropy_bits(symbols: np.ndarray) -> float:
  """Empirical entropy in bits of the symbols' distribution."""
  _, counts = np.unique(np.asarray(symbols), return_counts=True)
  if counts.size == 0:
    return 0.0
  p = counts / counts.sum()
  return float(-(p * np.log2(p)).sum())


def unit_statistics(
    units: Sequence[np.ndarray], *, frame_rate: float, vocab_size: Optional[int] = None
) -> dict[str, float]:
  """Bitrates (bits/s), run lengths and code usage of per-utterance unit sequences.

  Args:
    units: per utterance int `[frames]`.
    frame_rate: frames per second.
    vocab_size: the codebook size (K); default: largest unit + 1.

  Returns:
    dict with `seconds`, `frames`, `runs`, `tokens_per_s` / `dedup_tokens_per_s`,
    `bitrate_uniform` / `dedup_bitrate_uniform`, `bitrate_entropy` / `dedup_bitrate_entropy`,
    `entropy_bits` / `dedup_entropy_bits`, `mean_run_frames`, `used_codes`, `vocab_size`,
    `code_usage` (used / vocabulary), `perplexity`, `majority_share`, `edge_position_share`.
  """
  units = [np.asarray(u).reshape(-1) for u in units]
  frames = np.concatenate(units) if units else np.zeros(0, np.int64)
  runs = np.concatenate([dedup(u) for u in units]) if units else frames
  if frames.size == 0:
    raise ValueError("no unit frames")
  if vocab_size is None:
    vocab_size = int(frames.max()) + 1
  seconds = frames.size / frame_rate
  h_frames, h_runs = entropy_bits(frames), entropy_bits(runs)
  used = int(np.unique(frames).size)
  log_v = float(np.log2(vocab_size)) if vocab_size > 1 else 0.0
  return {
      "seconds": seconds,
      "frames": int(frames.size),
      "runs": int(runs.size),
      "tokens_per_s": frames.size / seconds,
      "dedup_tokens_per_s": runs.size / seconds,
      "bitrate_uniform": frames.size / seconds * log_v,
      "dedup_bitrate_uniform": runs.size / seconds * log_v,
      "bitrate_entropy": frames.size / seconds * h_frames,
      "dedup_bitrate_entropy": runs.size / seconds * h_runs,
      "entropy_bits": h_frames,
      "dedup_entropy_bits": h_runs,
      "mean_run_frames": frames.size / runs.size,
      "used_codes": used,
      "vocab_size": int(vocab_size),
      "code_usage": used / vocab_size,
      "perplexity": float(2.0**h_frames),
      "majority_share": float(np.unique(frames, return_counts=True)[1].max() / frames.size),
      "edge_position_share": edge_position_share(units),
  }


def edge_position_share(units: Sequence[np.ndarray], edge_frames: int = EDGE_FRAMES) -> float:
  """Share of frames predicted by their position alone (see the module doc)."""
  by_position = collections.defaultdict(collections.Counter)
  for u in units:
    n = len(u)
    for t, unit in enumerate(np.asarray(u).tolist()):
      if t < edge_frames:
        position = t
      elif n - 1 - t < edge_frames:
        position = -1 - (n - 1 - t)
      else:
        position = edge_frames  # The middle: one class.
      by_position[position][unit] += 1
  hits = sum(c.most_common(1)[0][1] for c in by_position.values())
  return hits / sum(sum(c.values()) for c in by_position.values())


def format_statistics(stats: dict, frame_rate: float) -> str:
  """The lines `jaxdisco eval-units` prints."""
  return (
      f"tokens/s        {stats['tokens_per_s']:.1f} (dedup {stats['dedup_tokens_per_s']:.1f}; "
      f"mean run {stats['mean_run_frames']:.2f} frames = "
      f"{1000 * stats['mean_run_frames'] / frame_rate:.1f} ms)\n"
      f"bitrate         {stats['dedup_bitrate_entropy']:.1f} bits/s ZeroSpeech (dedup tokens/s "
      f"x entropy {stats['dedup_entropy_bits']:.3f} bits); raw frames "
      f"{stats['bitrate_entropy']:.1f}\n"
      f"bitrate log2 K  {stats['bitrate_uniform']:.1f} bits/s (tokens/s x log2 "
      f"{stats['vocab_size']}); dedup {stats['dedup_bitrate_uniform']:.1f}\n"
      f"code usage      {stats['used_codes']}/{stats['vocab_size']} used "
      f"({100 * stats['code_usage']:.1f}%), perplexity {stats['perplexity']:.1f}\n"
      f"edge position   {stats['edge_position_share']:.3f} of frames are the usual unit of "
      f"their offset from the utterance edges (the most common unit alone: "
      f"{stats['majority_share']:.3f}; near 1: units carry position, not speech)"
  )
