"""Metrics a person can plot (metrics.jsonl + TensorBoard) and progress a person can read."""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Mapping

import numpy as np
from etils import epath

from jaxdisco.progress import format_seconds

log = logging.getLogger("jaxdisco")


class MetricsWriter:
  """Appends one JSON object per logged step to `metrics.jsonl`; mirrors to TensorBoard.

  TensorBoard goes through tensorboardX, which needs no TensorFlow.
  """

  def __init__(self, workdir, enabled: bool = True):
    self.enabled = enabled
    self.path = epath.Path(workdir) / "metrics.jsonl"
    self._tb = None
    if enabled:
      from tensorboardX import SummaryWriter

      self._tb = SummaryWriter(str(workdir))

  def write(self, step: int, metrics: Mapping[str, float], prefix: str = "") -> None:
    if not self.enabled:
      return
    row = {"step": int(step)}
    row.update({f"{prefix}{k}": _to_float(v) for k, v in metrics.items()})
    with self.path.open("a") as f:
      f.write(json.dumps(row) + "\n")
    for k, v in row.items():
      if k != "step":
        self._tb.add_scalar(k, v, step)
    self._tb.flush()

  def close(self):
    if self._tb is not None:
      self._tb.close()


def _to_float(value) -> float:
  value = float(np.asarray(value))
  return value if math.isfinite(value) else float("nan")


def read_metrics(workdir) -> list[dict]:
  path = epath.Path(workdir) / "metrics.jsonl"
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Progress:
  """Formats `step 120/400 | loss 3.21 | acc 0.41 | 2.3 steps/s | ETA 2m02s`."""

  def __init__(self, total_steps: int, start_step: int = 0):
    self.total = total_steps
    self._last_time = time.perf_counter()
    self._last_step = start_step

  def line(self, step: int, metrics: Mapping[str, float]) -> tuple[str, float]:
    now = time.perf_counter()
    rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
    self._last_time, self._last_step = now, step
    eta = (self.total - step) / rate if rate > 0 else float("inf")
    parts = [f"step {step}/{self.total}"]
    for key, label in (("loss", "loss"), ("accuracy", "acc"), ("code_perplexity", "ppl")):
      if key in metrics:
        parts.append(f"{label} {_to_float(metrics[key]):.3f}")
    parts.append(f"{rate:.2f} steps/s")
    parts.append(f"ETA {format_seconds(eta)}")
    return " | ".join(parts), rate
