"""Training curves as a PNG (matplotlib, headless)."""

from __future__ import annotations

from etils import epath

from jaxdisco.train.metrics import read_metrics

_PANELS = (
    ("loss", "loss (per masked frame)"),
    ("accuracy", "contrastive accuracy"),
    ("code_perplexity", "code perplexity"),
    ("learning_rate", "learning rate"),
)


def plot_curves(workdir, filename: str = "curves.png") -> epath.Path:
  # A Figure with its own Agg canvas, not pyplot: switching the global backend to Agg would
  # stop a notebook (Colab) that trains in-process from showing its own plots.
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  rows = read_metrics(workdir)
  fig = Figure(figsize=(4 * len(_PANELS), 3.2))
  FigureCanvasAgg(fig)
  axes = fig.subplots(1, len(_PANELS))
  for ax, (key, title) in zip(axes, _PANELS):
    for prefix, style in (("", "-"), ("valid_", "o--")):
      points = [(r["step"], r[prefix + key]) for r in rows if prefix + key in r]
      if points:
        steps, values = zip(*points)
        ax.plot(steps, values, style, label="valid" if prefix else "train", markersize=4)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend()
  fig.tight_layout()
  out = epath.Path(workdir) / filename
  fig.savefig(str(out), dpi=100)
  return out
