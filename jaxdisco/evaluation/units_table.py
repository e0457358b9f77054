"""The unit-quality table of a HuBERT loop: one row per (units, split), as markdown and JSON."""

from __future__ import annotations

import json
import os
from typing import Sequence, Union

from etils import epath

PathLike = Union[str, os.PathLike, epath.Path]
COLUMNS = (
    "units",
    "K",
    "split",
    "frames",
    "PNMI",
    "PNMI gain vs row above (± bootstrap s.d., P(gain > 0))",
    "phone purity",
    "cluster purity",
)


def format_table(rows: Sequence[dict]) -> str:
  """Markdown table of rows with keys `units`, `k`, `split`, `metrics` (`unit_quality` dict)
  and optionally `gain_vs_previous` (`bootstrap.pnmi_gain` dict)."""
  lines = ["| " + " | ".join(COLUMNS) + " |", "|---|---:|---|---:|---:|---:|---:|---:|"]
  for row in rows:
    m, g = row["metrics"], row.get("gain_vs_previous")
    gain = f"{g['gain']:+.4f} ± {g['std']:.4f} ({g['p_positive']:.2f})" if g else "–"
    lines.append(
        f"| {row['units']} | {row['k']} | {row['split']} | {m['num_frames']} | {m['pnmi']:.4f} "
        f"| {gain} | {m['phone_purity']:.4f} | {m['cluster_purity']:.4f} |"
    )
  return "\n".join(lines)


def write_table(workdir: PathLike, rows: Sequence[dict], header: str = "") -> str:
  """Writes `units_table.md` (header + table) and `units_table.json` (the rows); returns the
  markdown."""
  workdir = epath.Path(workdir)
  text = (header.rstrip() + "\n\n" if header else "") + format_table(rows) + "\n"
  _atomic_write(workdir / "units_table.md", text)
  _atomic_write(workdir / "units_table.json", json.dumps(list(rows), indent=2) + "\n")
  return text


def _atomic_write(path: epath.Path, text: str) -> None:
  tmp = path.parent / (path.name + ".tmp")
  tmp.write_text(text)
  tmp.replace(path)
