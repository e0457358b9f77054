"""Which layer of a trained model gives the best units? PNMI and ABX of every hidden state.

`probe_layers` runs the model once over a manifest, keeping every hidden state (`hidden_states`
0..L of `Pretrained.extract_features`: 0 is the Transformer input, i the output of layer i), and
scores each one:
  * PNMI of k-means units: k-means at K (the project's `jaxdisco.clustering.kmeans`) fitted on
    a random sample of at most `max_frames` frames, then every frame assigned; PNMI, phone and
    cluster purity against the alignments (`jaxdisco.evaluation.units`);
  * ABX error rates of the continuous features (`jaxdisco.evaluation.abx`, angular distance)
    on the alignments' triphone items, when there are items.

`choose_layer` then picks one and says why; the rule is `rank_layers`':
  1. by the ABX error across speakers within context when the items have at least two
     speakers, else within speaker (the ZeroSpeech / libri-light headline numbers; minimal_hubert
     and the HuBERT-layer literature choose the target layer this way). ABX asks what a
     layer's features are for: telling phones apart whatever the speaker, without depending on a
     K or on one k-means run;
  2. layers within `tolerance` of the best ABX error are ordered by PNMI at K, the number that
     matters for the next HuBERT iteration's targets; without ABX items, PNMI decides alone;
  3. remaining ties go to the shallower layer (cheaper to run, and later layers of a
     pretraining model drift toward its own objective).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Mapping, Optional, Sequence, Union

from etils import epath
import numpy as np

from jaxdisco.data import audio
from jaxdisco.data import manifest as manifest_lib
from jaxdisco.data.normalize import normalize_waveform
from jaxdisco.evaluation import abx as abx_lib
from jaxdisco.evaluation import abx_items
from jaxdisco.evaluation import units as units_lib

PathLike = Union[str, os.PathLike, epath.Path]
_BUCKET_SAMPLES = 8000  # Inputs padded to multiples of 0.5 s: a handful of compiled programs.


@dataclasses.dataclass(frozen=True)
class LayerChoice:
  """The layer `choose_layer` picked, the criterion, why, and every layer's scores.

  layer: hidden_states index (0 = Transformer input, i = output of layer i).
  criterion: "abx across-within", "abx within-within" or "pnmi".
  reason: one sentence a log or config can keep.
  scores: per layer, `{"layer", "pnmi", "phone_purity", "cluster_purity", "abx": {...}}`.
  """

  layer: int
  criterion: str
  reason: str
  scores: tuple

  def to_json(self) -> dict:
    return dataclasses.asdict(self) | {"scores": list(self.scores)}


def frame_rate_of(config) -> float:
  """Frames per second of a backbone at 16 kHz: 16000 / product of the strides (the log-mel
  hop included)."""
  hop = 1
  for _, _, stride in config.geometry_spec:
    hop *= stride
  return 16000 / hop


def all_layer_features(
    pretrained,
    manifest: manifest_lib.Manifest,
    *,
    layers: Optional[Sequence[int]] = None,
    batch_size: int = 8,
    normalize: bool = False,
) -> dict[int, list[np.ndarray]]:
  """hidden_states[layer] `[frames, dim]` of every utterance, for each layer, one forward
  pass per batch (utterances sorted by length so padding wastes little). `normalize`: each
  waveform to zero mean / unit variance first, as a model trained with data.normalize saw
  its input (the feature dumps and the tokenizer do the same)."""
  num_layers = pretrained.config.num_layers
  layers = list(range(num_layers + 1)) if layers is None else [int(i) for i in layers]
  order = sorted(range(len(manifest)), key=lambda i: int(manifest.num_samples[i]))
  out = {layer: [None] * len(manifest) for layer in layers}
  for start in range(0, len(order), batch_size):
    chunk = order[start : start + batch_size]
    waves = [audio.read_audio(manifest.audio_path(i)) for i in chunk]
    if normalize:
      waves = [normalize_waveform(w) for w in waves]
    width = -(-max(len(w) for w in waves) // _BUCKET_SAMPLES) * _BUCKET_SAMPLES
    batch = np.zeros((batch_size, width), np.float32)
    padding = np.ones((batch_size, width), bool)
    for row, w in enumerate(waves):
      batch[row, : len(w)], padding[row, : len(w)] = w, False
    result = pretrained.extract_features(batch, padding, output_layers=layers)
    valid = np.asarray(result["frame_valid"])
    for layer, hidden in zip(layers, result["hidden_states"]):
      hidden = np.asarray(hidden)
      for row, i in enumerate(chunk):
        out[layer][i] = hidden[row][valid[row]].astype(np.float32)
  return out


def probe_features(
    features: Mapping[int, Sequence[np.ndarray]],
    ids: Sequence[str],
    alignments: Mapping[str, Sequence[tuple[str, float, float]]],
    *,
    frame_rate: float,
    k: int = 50,
    items: Optional[Sequence[abx_items.Item]] = None,
    max_frames: int = 100_000,
    seed: int = 0,
    abx_conditions: Sequence[str] = ("within-within", "across-within"),
    kmeans_max_iter: int = 100,
) -> list[dict]:
  """PNMI (k-means at `k`) and ABX of each layer's per-utterance features.

  Args:
    features: layer -> per utterance `[frames, dim]`, in the order of `ids`.
    ids: utterance ids.
    alignments: id -> phone segments (`units.read_alignments`).
    frame_rate: frames per second of the features.
    k: clusters for PNMI.
    items: ABX items; None or empty skips ABX.
    max_frames: k-means is fitted on at most this many frames drawn at random (`seed`).
    abx_conditions: the `abx.CONDITIONS` to compute.
    kmeans_max_iter: k-means passes (mini-batch steps = passes x frames / batch).

  Returns:
    one dict per layer, in `features` order: `layer`, `pnmi`, `phone_purity`,
    `cluster_purity`, `abx` (condition -> error rate; empty without items).
  """
  from jaxdisco.clustering import kmeans  # pylint: disable=g-import-not-at-top

  rows = []
  for layer, per_utt in features.items():
    frames = np.concatenate(per_utt)
    rng = np.random.default_rng(seed)
    sample = frames
    if len(frames) > max_frames:
      sample = frames[rng.permutation(len(frames))[:max_frames]]
    config = kmeans.KMeans(
        k=k, seed=seed, max_iter=kmeans_max_iter, n_init=3, batch_size=min(10_000, len(sample))
    )
    centroids = np.asarray(kmeans.fit_kmeans(sample, config).centroids)
    labels, _ = kmeans.assign(frames, centroids)
    bounds = np.cumsum([len(x) for x in per_utt])[:-1]
    phones, unit_frames, _ = units_lib.pair_frames(
        alignments, np.split(labels, bounds), list(ids), frame_rate=frame_rate
    )
    quality = units_lib.unit_quality(phones, unit_frames)
    scores = {}
    if items:
      scores = abx_lib.abx_error_rates(
          dict(zip(ids, per_utt)), items, frame_rate=frame_rate, conditions=abx_conditions
      )
    rows.append(
        {
            "layer": int(layer),
            "pnmi": quality["pnmi"],
            "phone_purity": quality["phone_purity"],
            "cluster_purity": quality["cluster_purity"],
            "abx": scores,
        }
    )
  return rows


def probe_layers(
    pretrained,
    manifest: Union[PathLike, manifest_lib.Manifest],
    alignments: Union[PathLike, Mapping],
    *,
    k: int = 50,
    speakers: Optional[Union[PathLike, Mapping[str, str]]] = None,
    items: Optional[Union[PathLike, Sequence[abx_items.Item]]] = None,
    layers: Optional[Sequence[int]] = None,
    max_frames: int = 100_000,
    seed: int = 0,
    abx: bool = True,
    batch_size: int = 8,
    normalize: bool = False,
) -> list[dict]:
  """`probe_features` of every hidden state of `pretrained` (`load_pretrained`) on a manifest.

  ABX items are `items` (a file or list) or, by default, the alignments' triphones with speakers
  from `speakers` (a mapping, or a file for `abx_items.read_speakers`; default: the id up to
  its first '-'); `abx=False` skips ABX; `normalize`: per-utterance zero mean / unit
  variance input (`all_layer_features`), for models trained with data.normalize.
  """
  if not isinstance(manifest, manifest_lib.Manifest):
    manifest = manifest_lib.read_manifest(manifest)
  if not isinstance(alignments, Mapping):
    alignments = units_lib.read_alignments(alignments)
  ids = [manifest.utterance_id(i) for i in range(len(manifest))]
  chosen_items = None
  if abx:
    if items is not None:
      if isinstance(items, (str, os.PathLike)):
        items = abx_items.read_item_file(items)
      chosen_items = items
    else:
      if not isinstance(speakers, Mapping):
        speakers = abx_items.read_speakers(speakers, ids)
      present = {u: alignments[u] for u in ids if u in alignments}
      chosen_items = abx_items.triphone_items(present, speakers)
  features = all_layer_features(
      pretrained, manifest, layers=layers, batch_size=batch_size, normalize=normalize
  )
  return probe_features(
      features,
      ids,
      alignments,
      frame_rate=frame_rate_of(pretrained.config),
      k=k,
      items=chosen_items,
      max_frames=max_frames,
      seed=seed,
  )


def _abx_criterion(rows: Sequence[dict]) -> Optional[str]:
  conditions = [set(r.get("abx", {})) for r in rows]
  for condition in ("across-within", "within-within"):
    if conditions and all(condition in c for c in conditions):
      return condition
  return None


def rank_layers(rows: Sequence[dict], *, tolerance: float = 0.0) -> tuple[list[dict], str]:
  """Layers best first by the module doc's rule; returns (ranked rows, criterion)."""
  condition = _abx_criterion(rows)
  if condition is None:
    return sorted(rows, key=lambda r: (-r["pnmi"], r["layer"])), "pnmi"
  best = min(r["abx"][condition] for r in rows)
  near = lambda r: r["abx"][condition] <= best + tolerance
  ranked = sorted(
      rows,
      key=lambda r: (
          not near(r),
          -r["pnmi"] if near(r) else r["abx"][condition],
          r["layer"],
      ),
  )
  return ranked, f"abx {condition}"


def choose_from_scores(rows: Sequence[dict], *, tolerance: float = 0.0) -> LayerChoice:
  """The best layer of `probe_features` rows, with the reason (module doc's rule)."""
  if not rows:
    raise ValueError("no layers to choose from")
  ranked, criterion = rank_layers(rows, tolerance=tolerance)
  best = ranked[0]
  if criterion == "pnmi":
    reason = (
        f"layer {best['layer']}: highest PNMI ({best['pnmi']:.4f}; no ABX items, so PNMI "
        "decides)"
    )
    if len(ranked) > 1:
      reason += f"; next layer {ranked[1]['layer']} at {ranked[1]['pnmi']:.4f}"
  else:
    condition = criterion.split()[1]
    error = best["abx"][condition]
    reason = f"layer {best['layer']}: lowest ABX {condition} error ({100 * error:.2f}%"
    if tolerance > 0:
      reason += (
          f", highest PNMI {best['pnmi']:.4f} of the layers within {100 * tolerance:.2f} "
          "points"
      )
    reason += ")"
    if len(ranked) > 1:
      other = ranked[1]
      reason += (
          f"; next layer {other['layer']} at {100 * other['abx'][condition]:.2f}% "
          f"(PNMI {other['pnmi']:.4f})"
      )
  return LayerChoice(int(best["layer"]), criterion, reason, tuple(rows))


def choose_layer(
    pretrained,
    manifest: Union[PathLike, manifest_lib.Manifest],
    alignments: Union[PathLike, Mapping],
    *,
    k: int = 50,
    speakers: Optional[Union[PathLike, Mapping[str, str]]] = None,
    tolerance: float = 0.0,
    **probe_kwargs,
) -> LayerChoice:
  """Probes every layer of `pretrained` on `manifest` (`probe_layers`) and picks one.

  Args:
    pretrained: a `jaxdisco.pretrained.Pretrained` (`load_pretrained` of a jaxdisco workdir,
      Hugging Face directory or fairseq .pt).
    manifest: utterances to probe on (their ids must be in `alignments`).
    alignments: JSONL phone alignments or the mapping `units.read_alignments` returns.
    k: k-means clusters for PNMI (the K of the next HuBERT iteration).
    speakers: utterance id -> speaker, or a file (`abx_items.read_speakers`).
    tolerance: ABX error rates within this of the best count as equal (PNMI then decides).
    **probe_kwargs: `probe_layers` options (`layers`, `max_frames`, `seed`, `abx`, `items`,
      `normalize`).

  Returns:
    `LayerChoice` (`.layer`, `.criterion`, `.reason`, `.scores`; `.to_json()` to record it).
  """
  rows = probe_layers(pretrained, manifest, alignments, k=k, speakers=speakers, **probe_kwargs)
  return choose_from_scores(rows, tolerance=tolerance)


def format_probe_table(rows: Sequence[dict], choice: Optional[LayerChoice] = None) -> str:
  """Markdown table: one row per layer (PNMI, purities, ABX error rates in %)."""
  conditions = [c for c in abx_lib.CONDITIONS if any(c in r.get("abx", {}) for r in rows)]
  head = ["layer", "PNMI", "phone purity", "cluster purity"]
  head += [f"ABX {c} (%)" for c in conditions]
  lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
  for r in rows:
    mark = " *" if choice is not None and r["layer"] == choice.layer else ""
    cells = [f"{r['layer']}{mark}", f"{r['pnmi']:.4f}", f"{r['phone_purity']:.4f}"]
    cells.append(f"{r['cluster_purity']:.4f}")
    cells += [f"{100 * r['abx'][c]:.2f}" if c in r.get("abx", {}) else "–" for c in conditions]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def plot_probe(rows: Sequence[dict], path: PathLike, *, title: Optional[str] = None) -> None:
  """PNG of PNMI (left axis) and ABX error rates (right axis, %) against the layer."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  layers = [r["layer"] for r in rows]
  fig = Figure(figsize=(6, 3.5))
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  ax.plot(layers, [r["pnmi"] for r in rows], "o-", color="C0", label="PNMI")
  ax.set_xlabel("layer (hidden_states index)")
  ax.set_ylabel("PNMI", color="C0")
  ax.set_xticks(layers)
  conditions = [c for c in abx_lib.CONDITIONS if all(c in r.get("abx", {}) for r in rows)]
  if conditions:
    right = ax.twinx()
    for i, c in enumerate(conditions):
      errors = [100 * r["abx"][c] for r in rows]
      right.plot(layers, errors, "s--", color=f"C{i + 1}", label=f"ABX {c}")
    right.set_ylabel("ABX error (%)")
    right.legend(loc="upper right", fontsize=7)
  ax.legend(loc="upper left", fontsize=7)
  ax.set_title(title or "layer probe")
  fig.tight_layout()
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open("wb") as f:
    fig.savefig(f, format="png", dpi=120)


def write_probe(out_dir: PathLike, choice: LayerChoice, *, title: Optional[str] = None) -> str:
  """Writes `probe.md`, `probe.json` and `probe.png` to `out_dir`; returns the markdown."""
  out = epath.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  text = format_probe_table(choice.scores, choice) + f"\n\nchosen: {choice.reason}\n"
  (out / "probe.md").write_text(text)
  (out / "probe.json").write_text(json.dumps(choice.to_json(), indent=2) + "\n")
  plot_probe(choice.scores, out / "probe.png", title=title)
  return text
