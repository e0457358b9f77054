"""The HuBERT iteration loop as one resumable function: `run_hubert_loop(config, workdir)`.

The model of both iterations is the config's method: any method trained on pseudo-labels
(`Method.uses_labels`: HuBERT, WavLM). To train one on another's units, point `jaxdisco
pretrain` at a finished loop's `kmeans_it1/` labels (`labels.train`, `objective.label_rate`).

Stages, each in its own subdirectory of `workdir`:

  1. `mfcc/`            39-d MFCCs (100 Hz) of data.train_manifest (and data.valid_manifest)
  2. `kmeans_mfcc/`     k-means(loop.mfcc_k) on loop.kmeans_fraction of the train utterances
                        (or, with loop.kmeans_algorithm="streamed", on all of them, streamed);
                        `{split}.km` + `dict.km.txt`: iteration-1 targets
  3. `train_it1/`       iteration 1 (loop.steps[0] steps, labels at loop.mfcc_label_rate)
  4. `features_it1/`    hidden_states[loop.layer] of the iteration-1 model (50 Hz); with
                        loop.layer="auto", a `probe_it1/` stage first scores every layer
                        (PNMI at layer_k; probe.md/json/png) and the best one is dumped
  5. `kmeans_it1/`      k-means(loop.layer_k) of them: iteration-2 targets
  6. `train_it2/`       iteration 2 from scratch (loop.steps[1] steps, labels at
                        loop.feature_label_rate)
  7. `features_it2/`    (loop.evaluate_iteration2) hidden_states[loop.layer] of iteration 2
  8. `kmeans_it2/`      k-means(loop.layer_k) of them (targets for a third iteration)

A stage writes `done.json` (its inputs, summary and seconds) by an atomic rename only after its
outputs are complete. A re-run skips stages with a marker, after checking that the inputs
recorded there match the current config (otherwise it stops, naming the fields); a training
stage without a marker resumes from its latest checkpoint (the trainer does that). Feature
dumps resume shard by shard. SIGTERM during training saves a checkpoint and stops the loop.

k-means stages evaluate their units against phone alignments where loop.{split}_alignments
is set (PNMI, phone purity, cluster purity; `cooccurrence_{split}.png`), and the loop writes
`units_table.md` / `units_table.json` into the workdir. Rows compare fairly only at equal K:
the demo config uses one K for all stages.

What the loop reads from the config: everything `train_and_evaluate` reads (the model, data,
objective, optim, train and parallel blocks), plus `loop.*` (see `hubert_loop_defaults`).
Per iteration it overrides `train.num_steps`, `labels.train/valid/num_classes` and
`objective.label_rate`. Manifests must be fairseq `.tsv` files (the MFCC stage reads audio
files). Single process only: multi-host feature dumps and k-means exist in the library
(`process_index` / `shard_features`) but the loop does not drive them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable, Optional

from etils import epath
import ml_collections
import numpy as np

from jaxdisco.clustering import features as features_lib
from jaxdisco.clustering import kmeans as kmeans_lib
from jaxdisco.clustering import labels as labels_lib
from jaxdisco.clustering import streamed_kmeans
from jaxdisco.data import audio
from jaxdisco.data import manifest as manifest_lib
from jaxdisco.data import mfcc
from jaxdisco.evaluation import bootstrap
from jaxdisco.evaluation import units as units_lib
from jaxdisco.evaluation import units_table
from jaxdisco.models.config import without_compute_only
from jaxdisco.models.hidden_states import DEFAULT_HIDDEN_STATES_CONVENTION
from jaxdisco import methods
from jaxdisco.errors import ConfigError
from jaxdisco.methods import check_config
from jaxdisco.methods.checks import require as _require
from jaxdisco.methods.hubert import hubert_loop_defaults
from jaxdisco.train import config_compat

MARKER = "done.json"


class LoopInterrupted(RuntimeError):
  """A training stage stopped before its last step (SIGTERM); re-run to resume."""


@dataclasses.dataclass(frozen=True)
class Stage:
  name: str  # Subdirectory of the workdir.
  title: str
  run: Callable[[epath.Path], dict]  # Writes the stage's outputs into its directory.
  inputs: dict  # What its outputs depend on; checked against the marker on re-runs.


def _with_loop_defaults(config) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict(config.to_dict())  # An unlocked copy we may edit.
  defaults = hubert_loop_defaults()
  if "loop" in config:
    for field, value in config.loop.items():
      _require(field in defaults, f"loop.{field}: unknown field (expected {sorted(defaults)})")
      defaults[field] = value
  config.loop = defaults
  return config


def check_loop_config(config) -> ml_collections.ConfigDict:
  """Checks the fields the loop reads; returns the config with loop defaults filled in."""
  config = _with_loop_defaults(config)
  loop, data = config.loop, config.data
  trained_on_labels = [m for m in methods.METHODS if methods.get_method(m).uses_labels]
  _require(
      methods.get_method(config.get("method", "wav2vec2")).uses_labels,
      f"method: the loop trains a method of pseudo-labels ({', '.join(trained_on_labels)}), "
      f"got {config.get('method', 'wav2vec2')!r}",
  )
  for field in ("train_manifest", "valid_manifest"):
    path = data[field]
    if field == "train_manifest" or path:
      _require(bool(path), "data.train_manifest: the loop needs a manifest (.tsv) of train audio")
      _require(
          epath.Path(path).is_file(),
          f"data.{field}: {path!r} is not a manifest file (the loop reads audio from a .tsv "
          "manifest; prepared directories are not supported)",
      )
  for field in ("mfcc_k", "layer_k"):
    _require(loop[field] >= 2, f"loop.{field}: expected K >= 2, got {loop[field]}")
  num_layers = config.model.num_layers
  _require(
      loop.layer == "auto" or (isinstance(loop.layer, int) and 0 <= loop.layer <= num_layers),
      f"loop.layer: expected 0..model.num_layers={num_layers} or 'auto', got {loop.layer!r}",
  )
  _require(
      loop.probe_utterances >= 1,
      f"loop.probe_utterances: expected >= 1, got {loop.probe_utterances}",
  )
  _require(
      len(loop.steps) == 2 and all(int(s) > 0 for s in loop.steps),
      f"loop.steps: expected two positive step counts (iterations 1 and 2), got {loop.steps}",
  )
  _require(
      loop.mfcc_label_rate == mfcc.FRAME_RATE,
      f"loop.mfcc_label_rate: MFCCs are {mfcc.FRAME_RATE:g} Hz, got {loop.mfcc_label_rate}",
  )
  stride = check_config(_iteration_config(config, 0, "-", 2)).frame_stride
  model_rate = data.sample_rate / stride
  _require(
      loop.feature_label_rate == model_rate,
      f"loop.feature_label_rate: the model's frames are data.sample_rate / conv stride = "
      f"{data.sample_rate} / {stride} = {model_rate:g} Hz, got {loop.feature_label_rate}",
  )
  check_config(_iteration_config(config, 1, "-", 2))
  _require(
      0 < loop.kmeans_fraction <= 1,
      f"loop.kmeans_fraction: expected (0, 1], got {loop.kmeans_fraction}",
  )
  _require(
      loop.kmeans_algorithm in ("minibatch", "streamed"),
      f"loop.kmeans_algorithm: expected 'minibatch' or 'streamed', got {loop.kmeans_algorithm!r}",
  )
  for field in ("kmeans_batch_size", "kmeans_n_init", "kmeans_max_iter", "utterances_per_shard"):
    _require(loop[field] >= 1, f"loop.{field}: expected >= 1, got {loop[field]}")
  for split in ("train", "valid"):
    path = loop[f"{split}_alignments"]
    _require(
        not path or epath.Path(path).is_file(),
        f"loop.{split}_alignments: {path!r}: alignment file not found",
    )
    _require(
        not path or split == "train" or bool(data.valid_manifest),
        f"loop.valid_alignments is set but data.valid_manifest is empty",
    )
  return config


def _iteration_config(config, iteration: int, labels_dir, k: int) -> ml_collections.ConfigDict:
  """The training config of iteration `iteration` (0-based) on the labels in `labels_dir`."""
  c = ml_collections.ConfigDict(config.to_dict())
  c.train.num_steps = int(config.loop.steps[iteration])
  c.objective.label_rate = float(
      config.loop.mfcc_label_rate if iteration == 0 else config.loop.feature_label_rate
  )
  c.labels.train = os.path.join(str(labels_dir), "train.km")
  c.labels.valid = os.path.join(str(labels_dir), "valid.km") if config.data.valid_manifest else ""
  c.labels.num_classes = int(k)
  return c


def _splits(config) -> dict[str, manifest_lib.Manifest]:
  out = {"train": manifest_lib.read_manifest(config.data.train_manifest)}
  if config.data.valid_manifest:
    out["valid"] = manifest_lib.read_manifest(config.data.valid_manifest)
  return out


def _dump_mfcc(config, out: epath.Path) -> dict:
  summary = {}
  for split, manifest in _splits(config).items():

    def featurize(indices, manifest=manifest):
      return [
          mfcc.mfcc_features(
              audio.read_audio(manifest.audio_path(i), sample_rate=config.data.sample_rate),
              config.data.sample_rate,
          )
          for i in indices
      ]

    meta = {"feature_source": "mfcc", "layer_output": "mfcc_39", "dim": mfcc.FEATURE_DIM}
    features_lib.dump_features(
        featurize,
        manifest,
        out / split,
        meta,
        utterances_per_shard=config.loop.utterances_per_shard,
        progress=_progress,
    )
    summary[split] = {"utterances": len(manifest)}
  return summary


def _layer(config, workdir: epath.Path, iteration: int) -> int:
  """The layer clustered for `iteration`: loop.layer, or what its probe stage chose."""
  if config.loop.layer != "auto":
    return int(config.loop.layer)
  record = json.loads((workdir / f"probe_it{iteration}" / MARKER).read_text())
  return int(record["summary"]["layer"])


def _probe(config, train_dir: epath.Path, out: epath.Path) -> dict:
  """loop.layer='auto': score every hidden state of the trained model on a random subset of
  the train utterances and choose one (`layer_probe.choose_from_scores`: PNMI of k-means at
  loop.layer_k, or ABX first with loop.probe_abx; `hubert_loop_defaults` says why PNMI is the
  default). Without train alignments there is nothing to score: half the depth, the published
  BASE recipe's layer 6 of 12."""
  from jaxdisco.evaluation import layer_probe  # pylint: disable=g-import-not-at-top
  from jaxdisco.pretrained import load_pretrained  # pylint: disable=g-import-not-at-top

  loop = config.loop
  depth = int(config.model.num_layers)
  if not loop.train_alignments:
    layer = (depth + 1) // 2
    reason = (
        f"layer {layer}: no loop.train_alignments to probe with, so half the depth ({depth} "
        "layers), as the BASE recipe's layer 6 of 12"
    )
    _progress(reason)
    return {"layer": layer, "criterion": "depth", "reason": reason}
  manifest = manifest_lib.read_manifest(config.data.train_manifest)
  count = min(int(loop.probe_utterances), len(manifest))
  rng = np.random.default_rng(loop.kmeans_seed)
  subset = manifest.select(np.sort(rng.choice(len(manifest), count, replace=False)))
  model = load_pretrained(train_dir)
  _progress(f"probing layers 0..{depth} on {count} train utterances (K={loop.layer_k})")
  choice = layer_probe.choose_layer(
      model,
      subset,
      loop.train_alignments,
      k=loop.layer_k,
      abx=bool(loop.probe_abx),
      normalize=bool(config.data.normalize),  # As the feature dump feeds the model.
  )
  layer_probe.write_probe(out, choice, title=f"{out.name}: layer probe")
  _progress(choice.reason)
  return {"layer": choice.layer, "criterion": choice.criterion, "reason": choice.reason}


def _dump_layer(config, train_dir: epath.Path, out: epath.Path, layer: int) -> dict:
  from jaxdisco.pretrained import load_pretrained  # pylint: disable=g-import-not-at-top

  model = load_pretrained(train_dir)
  summary = {}
  for split, manifest in _splits(config).items():
    features_lib.dump_layer_features(
        model,
        manifest,
        layer,
        out / split,
        normalize=config.data.normalize,
        utterances_per_shard=config.loop.utterances_per_shard,
        progress=_progress,
    )
    summary[split] = {"utterances": len(manifest), "layer": int(layer)}
  return summary


def _fit_subset(features_dir: epath.Path, fraction: float, seed: int) -> np.ndarray:
  """`[frames, dim]` frames of a random `fraction` of the utterances of each shard."""
  rng = np.random.default_rng(seed)
  chosen = []
  for shard, _ in features_lib.iter_feature_shards(features_dir):
    take = max(1, int(round(fraction * len(shard))))
    chosen.extend(shard[i] for i in sorted(rng.choice(len(shard), take, replace=False)))
  return np.concatenate(chosen).astype(np.float32)


def _fit_centroids(loop, train_dir: epath.Path, k: int) -> tuple[np.ndarray, float, int]:
  """k-means of the train dump by loop.kmeans_algorithm → (centroids, inertia, frames fitted)."""
  if loop.kmeans_algorithm == "streamed":
    frames = streamed_kmeans.StreamedFrames.from_dump(train_dir)
    _progress(f"k-means K={k} streamed from {len(frames.paths)} shards ({frames.num_frames} frames)")
    result = streamed_kmeans.fit_streamed_kmeans(
        frames,
        streamed_kmeans.StreamedKMeans(k=k, max_passes=loop.kmeans_max_iter, seed=loop.kmeans_seed),
        progress=_progress,
    )
    # The last pass's inertia: that of the centres it started from, an upper bound.
    return result.centroids, result.pass_inertias[-1], result.num_frames
  x = _fit_subset(train_dir, loop.kmeans_fraction, loop.kmeans_seed)
  if x.shape[0] < k:
    raise ConfigError(
        f"loop.kmeans_fraction={loop.kmeans_fraction} leaves {x.shape[0]} frames, fewer than "
        f"K={k}: raise loop.kmeans_fraction or lower K"
    )
  settings = kmeans_lib.KMeans(
      k=k,
      batch_size=min(loop.kmeans_batch_size, x.shape[0]),
      n_init=loop.kmeans_n_init,
      max_iter=loop.kmeans_max_iter,
      seed=loop.kmeans_seed,
  )
  _progress(f"k-means K={k} on {x.shape[0]} frames x {x.shape[1]}")
  result = kmeans_lib.fit_kmeans(x, settings, progress=_progress)
  return result.centroids, result.inertia, x.shape[0]


def _cluster(config, features_dir: epath.Path, k: int, frame_rate: float, meta, out) -> dict:
  """k-means of the train features → centroids, `.km` labels, unit quality."""
  loop = config.loop
  centroids, inertia, fit_frames = _fit_centroids(loop, features_dir / "train", k)
  kmeans_lib.save_centroids(
      out / "centroids",
      centroids,
      {**meta, "inertia": inertia, "fit_frames": fit_frames},
  )
  summary = {
      "k": k,
      "fit_frames": int(fit_frames),
      "inertia_per_frame": inertia / fit_frames,
  }
  for split in ("train", "valid"):
    if not (features_dir / split).exists():
      continue
    labels, ids = [], []
    for shard, shard_ids in features_lib.iter_feature_shards(features_dir / split):
      labels.extend(labels_lib.assign_utterances(shard, centroids))
      ids.extend(shard_ids)
    labels_lib.write_km(out / f"{split}.km", labels, ids)
    alignments = loop[f"{split}_alignments"]
    if alignments:
      phones, unit_frames, stats = units_lib.pair_frames(
          units_lib.read_alignments(alignments), labels, ids, frame_rate=frame_rate
      )
      metrics = {**units_lib.unit_quality(phones, unit_frames), **stats}
      plot = out / f"cooccurrence_{split}.png"
      units_lib.plot_cooccurrence(phones, unit_frames, plot, title=f"{out.name} {split} K={k}")
      summary[f"{split}_units"] = {"metrics": metrics, "plot": str(plot)}
      _progress(
          f"{split}: PNMI {metrics['pnmi']:.4f}, phone purity {metrics['phone_purity']:.4f}, "
          f"cluster purity {metrics['cluster_purity']:.4f}"
      )
  labels_lib.write_dict(out, k)
  return summary


def _train(config, iteration: int, labels_dir: epath.Path, k: int, out: epath.Path) -> dict:
  from jaxdisco.train.pretrain import train_and_evaluate  # pylint: disable=g-import-not-at-top

  run_config = _iteration_config(config, iteration, labels_dir, k)
  summary = train_and_evaluate(run_config, out)
  if summary["preempted"] or summary["step"] < run_config.train.num_steps:
    raise LoopInterrupted(
        f"training iteration {iteration + 1} stopped at step {summary['step']} of "
        f"{run_config.train.num_steps}; run the same command again to resume"
    )
  return {"step": summary["step"], "metrics": summary["metrics"]}


def _progress(message: str) -> None:
  print(f"    {message}", flush=True)


def _stages(config, workdir: epath.Path) -> list[Stage]:
  loop = config.loop
  model_fields = without_compute_only(config.model.to_dict())
  model_inputs = {"model": model_fields, "data": config.data.to_dict()}
  kmeans_inputs = {
      f: loop[f]
      for f in (
          "kmeans_algorithm",
          "kmeans_fraction",
          "kmeans_batch_size",
          "kmeans_n_init",
          "kmeans_max_iter",
      )
  } | {"kmeans_seed": loop.kmeans_seed}
  align = {"train_alignments": loop.train_alignments, "valid_alignments": loop.valid_alignments}
  layer_meta = lambda it: {
      "layer": _layer(config, workdir, it),
      "layer_output": "hidden_states[layer]",
      # The features stage dumps in the default convention; export-tokenizer reads this.
      "hidden_states_convention": DEFAULT_HIDDEN_STATES_CONVENTION,
  }
  auto = loop.layer == "auto"
  layer_title = lambda it: "probed layer" if auto else f"layer {loop.layer}"
  train_inputs = lambda i: {
      "steps": int(loop.steps[i]),
      **{b: config[b].to_dict() for b in ("objective", "optim", "data")},
      "model": model_fields,
  }
  stages = [
      Stage(
          "mfcc",
          "MFCC features (39-d, 100 Hz)",
          lambda out: _dump_mfcc(config, out),
          {"data": config.data.to_dict()},
      ),
      Stage(
          "kmeans_mfcc",
          f"k-means K={loop.mfcc_k} of MFCCs -> iteration-1 labels",
          lambda out: _cluster(
              config,
              workdir / "mfcc",
              loop.mfcc_k,
              mfcc.FRAME_RATE,
              {"feature_source": "mfcc", "layer_output": "mfcc_39"},
              out,
          ),
          {"k": loop.mfcc_k, **kmeans_inputs, **align},
      ),
      Stage(
          "train_it1",
          f"train iteration 1 ({loop.steps[0]} steps)",
          lambda out: _train(config, 0, workdir / "kmeans_mfcc", loop.mfcc_k, out),
          train_inputs(0),
      ),
  ]
  probe_inputs = {
      f: loop[f] for f in ("layer_k", "probe_utterances", "probe_abx", "train_alignments")
  } | {"kmeans_seed": loop.kmeans_seed}
  for it in (1, 2) if loop.evaluate_iteration2 else (1,):
    if auto:
      stages.append(
          Stage(
              f"probe_it{it}",
              f"probe every layer of the iteration-{it} model and choose one",
              lambda out, it=it: _probe(config, workdir / f"train_it{it}", out),
              {**probe_inputs, **model_inputs},
          )
      )
    stages += [
        Stage(
            f"features_it{it}",
            f"dump the iteration-{it} model's {layer_title(it)}",
            lambda out, it=it: _dump_layer(
                config, workdir / f"train_it{it}", out, _layer(config, workdir, it)
            ),
            {"layer": loop.layer if auto else int(loop.layer), **model_inputs},
        ),
        Stage(
            f"kmeans_it{it}",
            f"k-means K={loop.layer_k} of the iteration-{it} model's {layer_title(it)}"
            + (" -> iteration-2 labels" if it == 1 else ""),
            lambda out, it=it: _cluster(
                config,
                workdir / f"features_it{it}",
                loop.layer_k,
                loop.feature_label_rate,
                {"feature_source": f"hubert_it{it}", **layer_meta(it)},
                out,
            ),
            {"k": loop.layer_k, **kmeans_inputs, **align},
        ),
    ]
    if it == 1:
      stages.append(
          Stage(
              "train_it2",
              f"train iteration 2 ({loop.steps[1]} steps)",
              lambda out: _train(config, 1, workdir / "kmeans_it1", loop.layer_k, out),
              train_inputs(1),
          )
      )
  return stages


def _marker_defaults(config) -> dict:
  """What an input absent from an older marker stands for: the method's schema defaults
  (config blocks) and the loop's own fields by name (the k-means stages record them so)."""
  defaults = config_compat.schema_defaults(methods.get_method(config.method))
  loop = defaults.get("loop", {})
  return {**{f: v for f, v in loop.items() if f not in defaults}, **defaults}


def _check_marker(stage: Stage, marker: epath.Path, defaults: dict) -> dict:
  record = json.loads(marker.read_text())
  diffs = config_compat.differences(record["inputs"], stage.inputs, defaults)
  if diffs:
    raise ConfigError(
        f"{marker}: stage '{stage.name}' was completed with other settings:\n  "
        + "\n  ".join(
            f"{d.path}: done with {d.saved!r}, config has {d.current!r}"[:300] for d in diffs
        )
        + f"\nUse a fresh --workdir, or delete {marker.parent} (and the stages after it)."
    )
  return record["summary"]


def _stage_frames(config, workdir: epath.Path, stage: str, split: str, alignments) -> dict:
  """{utterance id: (phones, units)} of a k-means stage's `.km` file for `split`."""
  km = workdir / stage / f"{split}.km"
  rate = mfcc.FRAME_RATE if stage == "kmeans_mfcc" else config.loop.feature_label_rate
  return bootstrap.utterance_frames(
      alignments,
      labels_lib.read_km(km),
      labels_lib.read_ids(labels_lib.ids_path(km)),
      frame_rate=rate,
  )


def _table_rows(config, summaries: dict[str, dict], workdir: epath.Path) -> list[dict]:
  """Rows of the unit table; each row after the first of a split also gets `gain_vs_previous`,
  its PNMI gain over the row above with the paired-bootstrap spread over utterances."""
  layer = lambda it: (
      summaries.get(f"features_it{it}", {}).get("train", {}).get("layer", config.loop.layer)
  )
  names = {
      "kmeans_mfcc": "MFCC k-means",
      "kmeans_it1": f"iteration 1, layer {layer(1)} k-means",
      "kmeans_it2": f"iteration 2, layer {layer(2)} k-means",
  }
  rows = []
  for split in ("train", "valid"):
    previous, alignments = None, None
    for stage, label in names.items():
      units = summaries.get(stage, {}).get(f"{split}_units")
      if not units:
        continue
      row = {"units": label, "k": summaries[stage]["k"], "split": split, "stage": stage, **units}
      if alignments is None:  # Read once per split, only when a stage was scored.
        alignments = units_lib.read_alignments(config.loop[f"{split}_alignments"])
      frames = _stage_frames(config, workdir, stage, split, alignments)
      if previous is not None:
        row["gain_vs_previous"] = bootstrap.pnmi_gain(previous, frames)
      previous = frames
      rows.append(row)
  return rows


def run_hubert_loop(config, workdir, *, stop_after_stage: Optional[int] = None) -> dict[str, Any]:
  """Runs (or resumes) the whole HuBERT loop in `workdir`; see the module doc.

  Args:
    config: a HuBERT or WavLM config (configs/hubert_demo.py, configs/wavlm_demo.py, ...).
    workdir: local directory (or bucket path) holding one subdirectory per stage.
    stop_after_stage: return after this stage number (1-based), as if interrupted there.

  Returns:
    {"stages": {name: summary}, "table": rows, "table_markdown": str or None,
     "stopped_after": stage number or None, "seconds": wall time of this call}.

  Raises:
    ConfigError: a bad config field (named), or a finished stage whose recorded inputs differ.
    LoopInterrupted: a training stage was stopped by SIGTERM (its checkpoint is saved).
  """
  t0 = time.perf_counter()
  config = check_loop_config(config)
  workdir = epath.Path(workdir)
  if "://" not in str(workdir):
    workdir = epath.Path(os.path.abspath(workdir))
  workdir.mkdir(parents=True, exist_ok=True)
  stages = _stages(config, workdir)
  marker_defaults = _marker_defaults(config)
  summaries, stopped = {}, None
  for number, stage in enumerate(stages, start=1):
    out = workdir / stage.name
    marker = out / MARKER
    head = f"[stage {number}/{len(stages)}] {stage.title}"
    if marker.exists():
      summaries[stage.name] = _check_marker(stage, marker, marker_defaults)
      print(f"{head}: done earlier ({marker}), skipped", flush=True)
    else:
      print(f"{head} ...", flush=True)
      start = time.perf_counter()
      out.mkdir(parents=True, exist_ok=True)
      summary = stage.run(out)
      seconds = time.perf_counter() - start
      record = {"stage": stage.name, "inputs": stage.inputs, "summary": summary, "seconds": seconds}
      tmp = out / (MARKER + ".tmp")
      tmp.write_text(json.dumps(record, indent=2, default=float) + "\n")
      tmp.replace(marker)  # The marker appears only once everything above is written.
      summaries[stage.name] = json.loads(tmp.parent.joinpath(MARKER).read_text())["summary"]
      print(f"{head}: done in {seconds:.1f} s", flush=True)
    if stop_after_stage is not None and number >= stop_after_stage:
      stopped = number
      break
  rows = _table_rows(config, summaries, workdir)
  markdown = None
  if rows:
    loop = config.loop
    header = (
        f"Unit quality: K {loop.mfcc_k} (MFCC) / {loop.layer_k} (layers), layer {loop.layer}"
        + (" (chosen per iteration by the layer probe)" if loop.layer == "auto" else "")
        + ", "
        f"steps per iteration {tuple(loop.steps)}"
    )
    markdown = units_table.write_table(workdir, rows, header)
    print(markdown, flush=True)
  return {
      "stages": summaries,
      "table": rows,
      "table_markdown": markdown,
      "stopped_after": stopped,
      "seconds": time.perf_counter() - t0,
  }
