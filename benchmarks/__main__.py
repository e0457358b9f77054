"""python -m benchmarks all | NAME [ARGS...]: run the benchmarks; `all` writes RESULTS.md.

Each benchmark is a module `benchmarks/NAME.py` with `main(argv)`. A main that returns a list of
dicts gives a table; any other result is reported through what it printed. A benchmark that is
missing or fails becomes a row saying so instead of stopping the others.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
import inspect
import io
import os
import platform
import sys
import time
import traceback

from benchmarks import SUITE
from benchmarks.train_step import cpu_model

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")


class _Tee(io.TextIOBase):
  """Writes to the console and keeps a copy (benchmarks that only print still get reported)."""

  def __init__(self, stream):
    self.stream, self.copy = stream, io.StringIO()

  def write(self, s):
    self.stream.write(s)
    self.copy.write(s)
    return len(s)

  def flush(self):
    self.stream.flush()


def _mentions_quick(module) -> bool:
  """Whether the benchmark's source knows --quick (True when its source is not readable)."""
  try:
    return "--quick" in inspect.getsource(module)
  except (OSError, TypeError):
    return True


def run_one(name: str, argv: list[str]) -> dict:
  """{'name', 'status', 'seconds', 'rows' (list of dicts or None), 'output'}."""
  t0 = time.perf_counter()
  try:
    module = importlib.import_module(f"benchmarks.{name}")
  except ModuleNotFoundError as e:
    if e.name not in (f"benchmarks.{name}", "benchmarks"):
      raise
    return dict(name=name, status="not available", seconds=0.0, rows=None, output="")
  main = getattr(module, "main", None)
  if main is None:
    return dict(name=name, status="not available (no main)", seconds=0.0, rows=None, output="")
  takes_argv = bool(inspect.signature(main).parameters)
  if "--quick" in argv and not _mentions_quick(module):
    argv = [a for a in argv if a != "--quick"]
  tee = _Tee(sys.stdout)
  status, result = "ok", None
  try:
    with contextlib.redirect_stdout(tee):
      if takes_argv:
        result = main(argv)
      else:  # An argparse main() without argv reads sys.argv.
        saved, sys.argv = sys.argv, [name, *argv]
        try:
          result = main()
        finally:
          sys.argv = saved
  except SystemExit as e:
    status = "ok" if not e.code else f"exit {e.code}"
  except Exception:  # pylint: disable=broad-except
    status = "failed: " + traceback.format_exc().strip().splitlines()[-1]
    print(traceback.format_exc(), file=sys.stderr)
  rows = result if isinstance(result, list) and all(isinstance(r, dict) for r in result) else None
  if isinstance(result, int) and result and status == "ok":
    status = f"returned {result}"
  return dict(
      name=name,
      status=status,
      seconds=time.perf_counter() - t0,
      rows=rows,
      output=tee.copy.getvalue(),
  )


def markdown_table(rows: list[dict]) -> str:
  cols = list(dict.fromkeys(k for r in rows for k in r))
  lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
  for r in rows:
    lines.append("| " + " | ".join("–" if r.get(c) is None else str(r[c]) for c in cols) + " |")
  return "\n".join(lines)


def versions() -> str:
  out = [f"python {platform.python_version()}"]
  for pkg in ("jax", "jaxlib", "flax", "optax", "torch", "transformers"):
    try:
      out.append(f"{pkg} {importlib.import_module(pkg).__version__}")
    except Exception:  # pylint: disable=broad-except
      pass
  return ", ".join(out)


def write_results(results: list[dict], command: str, path: str = RESULTS) -> None:
  lines = [
      "# Benchmark results",
      "",
      f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
      f"- machine: {cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}",
      f"- versions: {versions()}",
      # Other work on the machine skews absolute figures (ratios within a run hold better).
      f"- load average (1/5/15 min) when written: {', '.join(f'{x:.1f}' for x in os.getloadavg())}",
      f"- command: `{command}`",
      "",
      "| benchmark | status | wall s |",
      "|---|---|---|",
  ]
  lines += [f"| {r['name']} | {r['status']} | {r['seconds']:.0f} |" for r in results]
  for r in results:
    if r["status"].startswith("not available"):
      continue
    lines += ["", f"## {r['name']}", ""]
    if r["rows"]:
      lines.append(markdown_table(r["rows"]))
    if r["output"].strip():
      lines += ["", "```", r["output"].strip(), "```"]
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")


def main(argv: list[str]) -> int:
  if not argv or argv[0] in ("-h", "--help"):
    print(__doc__.strip() + "\n\nbenchmarks: " + ", ".join(SUITE))
    return 0 if argv else 2
  if argv[0] == "all":
    results = []
    for name, quick_args in SUITE.items():
      print(f"== {name}", file=sys.stderr, flush=True)
      extra = argv[1:] if name == "train_step" else []
      results.append(run_one(name, quick_args + extra))
    write_results(results, "python -m benchmarks " + " ".join(argv))
    print(f"wrote {RESULTS}", file=sys.stderr)
    fine = lambda r: r["status"] == "ok" or r["status"].startswith("not available")
    return 0 if all(fine(r) for r in results) else 1
  result = run_one(argv[0], argv[1:])
  if result["status"] != "ok":
    print(f"{argv[0]}: {result['status']}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
