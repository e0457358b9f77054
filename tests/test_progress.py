"""jaxdisco.progress: rate and ETA lines at a bounded frequency."""

from jaxdisco.progress import ProgressMeter, format_seconds


class _Clock:
  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


def test_lines_give_rate_and_eta_at_most_every_interval():
  clock, lines = _Clock(), []
  # 10 utterances already there (a resumed run): they count towards 40, not towards the rate.
  meter = ProgressMeter(
      "features",
      40,
      unit="utterances",
      report=lines.append,
      every_seconds=10,
      initial=10,
      clock=clock,
  )
  for _ in range(30):
    clock.now += 2.0  # 0.5 utterances/s
    meter.advance(note="shard")
  # One line per 10 s (every 5th advance), the last one when the total is reached.
  assert len(lines) == 6
  assert lines[0] == "features 15/40 utterances (38%) | 0.5 utterances/s | ETA 0m50s | shard"
  assert lines[-1] == "features 40/40 utterances (100%) | 0.5 utterances/s | ETA 0m00s | shard"


def test_finish_reports_early_end_and_silence_without_reporter():
  clock, lines = _Clock(), []
  meter = ProgressMeter("k-means mini-batch", 100, unit="steps", report=lines.append, clock=clock)
  clock.now += 4.0
  meter.advance(20)
  meter.finish("converged")
  assert lines == ["k-means mini-batch 20/100 steps (20%) | 5 steps/s | ETA 0m16s | converged"]
  quiet = ProgressMeter("x", 1, report=None, clock=clock)
  quiet.advance()
  quiet.finish()
  assert quiet.line().startswith("x 1/1 (100%) | ")


def test_format_seconds():
  assert format_seconds(122) == "2m02s"
  assert format_seconds(3900) == "1h05m00s"
  assert format_seconds(float("inf")) == "?"
