"""Bitrate and code usage (jaxdisco.evaluation.unit_stats) and `jaxdisco eval-units --abx`."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from jaxdisco.clustering import labels as lb
from jaxdisco.evaluation import unit_stats


def test_golden_statistics():
  # 8 frames at 4 Hz (2 s); runs 0 0 | 1 | 2 2 2 | 0 0 -> 4 runs; K = 4, code 3 unused.
  stats = unit_stats.unit_statistics(
      [np.array([0, 0, 1, 2, 2, 2]), np.array([0, 0])], frame_rate=4.0, vocab_size=4
  )
  assert stats["seconds"] == 2 and stats["frames"] == 8 and stats["runs"] == 4
  assert stats["tokens_per_s"] == 4 and stats["dedup_tokens_per_s"] == 2
  assert stats["bitrate_uniform"] == 8 and stats["dedup_bitrate_uniform"] == 4
  h = -(0.5 * math.log2(0.5) + 0.125 * math.log2(0.125) + 0.375 * math.log2(0.375))
  assert stats["entropy_bits"] == pytest.approx(h)
  assert stats["bitrate_entropy"] == pytest.approx(4 * h)
  # Runs 0, 1, 2, 0: p = (1/2, 1/4, 1/4), 1.5 bits, 2 runs/s.
  assert stats["dedup_bitrate_entropy"] == pytest.approx(3.0)
  assert stats["mean_run_frames"] == 2 and stats["used_codes"] == 3
  assert stats["code_usage"] == 0.75 and stats["perplexity"] == pytest.approx(2**h)
  assert unit_stats.unit_statistics([np.array([5])], frame_rate=50)["vocab_size"] == 6


def test_edge_position_share_flags_units_that_only_encode_position():
  # Golden, edge_frames 2: [0 1 | 5 5 | 2 3] and [0 1 | 5 | 2 3] are position alone -> 1;
  # with the second one's middle 6 instead, the middle class {5, 5, 6} has 2 hits: 10 of 11.
  collapsed = [np.array([0, 1, 5, 5, 2, 3]), np.array([0, 1, 5, 2, 3])]
  assert unit_stats.edge_position_share(collapsed, edge_frames=2) == 1.0
  varied = [np.array([0, 1, 5, 5, 2, 3]), np.array([0, 1, 6, 2, 3])]
  assert unit_stats.edge_position_share(varied, edge_frames=2) == pytest.approx(10 / 11)
  # Content-driven units (independent of position) score about their majority share.
  rng = np.random.default_rng(0)
  speech = [rng.integers(0, 50, int(n)) for n in rng.integers(100, 250, 200)]
  stats = unit_stats.unit_statistics(speech, frame_rate=50)
  assert stats["majority_share"] < 0.03
  assert stats["edge_position_share"] < stats["majority_share"] + 0.04
  edges = [np.r_[np.arange(16), np.full(n, 49), np.arange(16, 31)] for n in rng.integers(50, 200, 50)]
  assert unit_stats.unit_statistics(edges, frame_rate=50)["edge_position_share"] == 1.0


def test_eval_units_prints_bitrate_and_abx(tmp_path):
  rng = np.random.default_rng(0)
  alignments, units, meta = [], [], []
  for u in range(6):
    phones = rng.choice(list("abc"), 12)
    ends = np.round(np.cumsum(rng.integers(3, 6, 12)) / 50, 4)
    segments = [[str(p), float(s), float(e)] for p, s, e in zip(phones, np.r_[0, ends[:-1]], ends)]
    alignments.append({"id": f"u{u}", "phones": segments})
    frames = int((ends[-1] - 0.025) * 50) + 1
    centres = np.arange(frames) / 50 + 0.0125
    units.append(np.searchsorted(ends, centres, side="right").clip(0, 11) % 4)
    meta.append({"id": f"u{u}", "voice": f"v{u % 2}"})
  (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in alignments))
  (tmp_path / "meta.jsonl").write_text("".join(json.dumps(r) + "\n" for r in meta))
  lb.write_km(tmp_path / "x.km", units, [f"u{u}" for u in range(6)])
  run = subprocess.run(
      [sys.executable, "-m", "jaxdisco.cli", "eval-units", "--units", str(tmp_path / "x.km"),
       "--alignments", str(tmp_path / "a.jsonl"), "--vocab-size", "4", "--abx",
       "--speakers", str(tmp_path / "meta.jsonl"), "--save-items", str(tmp_path / "x.item")],
      capture_output=True, text=True, check=False, timeout=300,
  )
  assert run.returncode == 0, run.stderr
  assert "bitrate         " in run.stdout and "tokens/s x log2 4" in run.stdout
  assert "edge position   " in run.stdout
  line = next(x for x in run.stdout.splitlines() if x.startswith("ABX units"))
  assert "within-within" in line and "across-within" in line and "%" in line
  assert (tmp_path / "x.item").read_text().startswith("#file onset offset")
