"""Progress lines with rate and ETA for long steps: `label 120/400 units (30%) | 2.3 units/s |
ETA 2m02s`.

Training prints its own step lines (`train.metrics.Progress`); feature dumps, k-means,
tokenizing a corpus and the tokenizer export report through `ProgressMeter`, so every long step
says how far it is and how long it has left in the same words.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Optional


def format_seconds(seconds: float) -> str:
  """`2m02s`, `1h05m00s`; `?` for an unknown (infinite or NaN) duration."""
  if not math.isfinite(seconds):
    return "?"
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _amount(value: float) -> str:
  return f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


class ProgressMeter:
  """Counts work done out of a known total and reports it at a bounded frequency.

  `advance(n)` adds `n` units of work; a line goes to `report` when `every_seconds` have passed
  since the last one, and always when the total is reached. The rate counts only the work done
  since the meter was made: `initial` is work already there (e.g. the shards a resumed dump
  skips), which counts towards the total but not the rate.

  Args:
    label: what is being done ("features", "k-means steps").
    total: units of work in all.
    unit: what one unit is ("utterances", "s of audio").
    report: print-like callable; None for silence.
    every_seconds: the least time between two lines (0: a line per `advance`).
    initial: units already done before the meter started.
    clock: seconds, monotonic (tests pass a fake one).
  """

  def __init__(
      self,
      label: str,
      total: float,
      *,
      unit: str = "",
      report: Optional[Callable[[str], None]] = print,
      every_seconds: float = 10.0,
      initial: float = 0.0,
      clock: Callable[[], float] = time.perf_counter,
  ):
    self.label, self.total, self.unit = label, float(total), unit
    self.done = self._initial = float(initial)
    self._report, self._every, self._clock = report, every_seconds, clock
    self._start = self._last_report = clock()

  def rate(self) -> float:
    """Units per second since the meter started (0 before any work)."""
    return (self.done - self._initial) / max(self._clock() - self._start, 1e-9)

  def line(self, note: str = "") -> str:
    rate = self.rate()
    eta = (self.total - self.done) / rate if rate > 0 else float("inf")
    unit = f" {self.unit}" if self.unit else ""
    share = f" ({100 * self.done / self.total:.0f}%)" if self.total > 0 else ""
    parts = [
        f"{self.label} {_amount(self.done)}/{_amount(self.total)}{unit}{share}",
        f"{rate:.3g}{unit or ' units'}/s",
        f"ETA {format_seconds(max(eta, 0.0))}",
    ]
    return " | ".join(parts + ([note] if note else []))

  def advance(self, amount: float = 1.0, note: str = "") -> None:
    """Adds `amount` units done; reports if it is time to (see the class doc)."""
    self.done += amount
    now = self._clock()
    # Amounts in seconds add up to the total only up to rounding.
    finished = self.done >= self.total or math.isclose(self.done, self.total, rel_tol=1e-9)
    if self._report is not None and (finished or now - self._last_report >= self._every):
      self._report(self.line(note))
      self._last_report = now

  def finish(self, note: str = "") -> None:
    """Reports now: for work that ends before its total (e.g. k-means converging early)."""
    if self._report is not None and not math.isclose(self.done, self.total, rel_tol=1e-9):
      self._report(self.line(note))
