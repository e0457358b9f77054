"""Exports a frozen tokenizer (audio in, unit ids out) as a self-describing directory.

    out_dir/
      tokenizer.json           manifest: model config, layer and its convention, units, rates,
                               normalization, vocabulary, source and step, file hashes
      encoder.safetensors      backbone parameters up to the chosen layer only
      quantizer.safetensors    k-means `centroids` [K, dim], the gumbel quantizer
                               (`logits/kernel`, `logits/bias`, `codevectors`), or a
                               vq-wav2vec quantizer (gumbel, or k-means `projection`, `norm/*`,
                               `codebook`); encoder.safetensors is then its conv encoder
      programs/tokenize_<N>.jax.export
                               the whole tokenizer as StableHLO (`jax.export`), one per input
                               length N, symbolic batch: (weights, waveform [b, N] float32,
                               padding_mask [b, N] bool) -> ids [b, frames] int32 (-1 = padding)
      hf/config.json, hf/model.safetensors, hf/centroids.npy
                               the encoder cut at the layer, for `transformers` (PyTorch)

`weights` is `{"encoder": load_file("encoder.safetensors"), "quantizer":
load_file("quantizer.safetensors")}`; running a program needs only `jax` and `safetensors`.
`tokenizer.json["files"]` holds the sha256 of every other file; `jaxdisco.Tokenizer.load`
refuses a directory whose files do not match.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import pathlib
from typing import Optional, Sequence, Union

import jax
import numpy as np

from jaxdisco.errors import TokenizerError
from jaxdisco.export import unit_kinds
from jaxdisco.methods import get_method
from jaxdisco.models.config import ModelConfig
from jaxdisco.models.hidden_states import (
    DEFAULT_HIDDEN_STATES_CONVENTION,
    check_hidden_states_convention,
)
from jaxdisco.progress import ProgressMeter

PathLike = Union[str, os.PathLike]
MANIFEST_NAME = "tokenizer.json"
ENCODER_NAME = "encoder.safetensors"
QUANTIZER_NAME = "quantizer.safetensors"
PROGRAM_DIR = "programs"
HF_DIR = "hf"
FORMAT_VERSION = 1
SAMPLE_RATE = 16000
# 1, 2, 5, 10 and 20 s: a handful of fixed shapes cover most corpora (inputs are padded up).
DEFAULT_EXPORT_LENGTHS = (16000, 32000, 80000, 160000, 320000)
LAYER_CONVENTION = (
    "hidden_states[layer] in the output_hidden_states convention named by "
    "hidden_states_convention (jaxdisco.pretrained.Pretrained.extract_features): 0 is the "
    "Transformer input (after the positional conv; for post-LN models after the encoder "
    "LayerNorm), i >= 1 is the output of Transformer layer i (pre-LN: the raw residual stream, "
    "before the final LayerNorm, except i = num_layers under 'transformers4', which is after "
    "it). In the hf/ export (num_hidden_layers = layer) this is hf.features."
)


def program_name(num_samples: int) -> str:
  return f"{PROGRAM_DIR}/tokenize_{num_samples}.jax.export"


def sha256_file(path: PathLike) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def _load_centroids(centroids) -> tuple[Optional[np.ndarray], Optional[str], dict]:
  """A save_centroids prefix, a sklearn joblib file or an array -> ([k, dim], description,
  the save_centroids meta or {})."""
  from jaxdisco.clustering import kmeans

  if centroids is None:
    return None, None, {}
  if not isinstance(centroids, (str, os.PathLike)):
    return np.asarray(centroids, np.float32), "array", {}
  text = os.fspath(centroids)
  if text.endswith((".joblib", ".pkl", ".bin")) or (
      os.path.isfile(text) and not text.endswith(".npy")
  ):
    return kmeans.import_sklearn_kmeans(text), f"sklearn:{text}", {}
  prefix = text[: -len(".npy")] if text.endswith(".npy") else text
  array, meta = kmeans.load_centroids(prefix)
  return array, f"save_centroids:{prefix}", meta


def _units_convention(requested: Optional[str], centroid_meta: dict, cfg, layer: int) -> str:
  """The hidden_states convention the units read: the one asked for, else the one the
  centroids' features were dumped in (their save_centroids meta), else the default. Asking for
  another than the centroids' is refused where the two differ (the last layer of pre-LN)."""
  fitted = centroid_meta.get("hidden_states_convention")
  convention = check_hidden_states_convention(
      requested or fitted or DEFAULT_HIDDEN_STATES_CONVENTION
  )
  differs = getattr(cfg, "layer_norm_first", False) and layer == cfg.num_layers
  if fitted and fitted != convention and differs:
    raise TokenizerError(
        f"hidden_states_convention={convention!r}, but the centroids were fit on "
        f"{fitted!r} features of layer {layer} (their .json): the units would not be the "
        "clusters' (drop --hidden-states-convention, or fit the centroids on those features)"
    )
  return convention


def load_source_model(source) -> tuple[object, Optional[int], bool, str]:
  """(Pretrained, training step or None, whether the model's input is normalized (the run's
  data.normalize, a fairseq task's normalize, HF's do_normalize), description)."""
  from jaxdisco.pretrained import Pretrained, _is_hf_directory, load_pretrained

  if isinstance(source, Pretrained):
    return source, None, False, "in-memory Pretrained"
  path = os.fspath(source)
  from jaxdisco.export.fairseq_checkpoint import is_fairseq_checkpoint, load_fairseq_checkpoint

  if not _is_hf_directory(path) and is_fairseq_checkpoint(path):
    # A fairseq .pt keeps normalization in its task config (task.normalize), the step as
    # num_updates; read once here rather than again through load_pretrained.
    model = load_fairseq_checkpoint(path)
    pretrained = Pretrained(model.config, model.params, get_method(model.method).model_type)
    normalize = bool(model.run_fields.get("data.normalize", False))
    return pretrained, model.step, normalize, f"fairseq:{os.path.abspath(path)}"
  pretrained = load_pretrained(path)
  if _is_hf_directory(path):
    # HF keeps input normalization in the feature extractor's preprocessor_config.json.
    pre = os.path.join(path, "preprocessor_config.json")
    normalize = False
    if os.path.isfile(pre):
      with open(pre) as f:
        normalize = bool(json.load(f).get("do_normalize", False))
    return pretrained, None, normalize, f"huggingface:{os.path.abspath(path)}"
  from etils import epath

  from jaxdisco.train.checkpoint import find_checkpoint

  step_dir, meta = find_checkpoint(epath.Path(path))
  normalize = bool(meta.get("config", {}).get("data", {}).get("normalize", False))
  return pretrained, int(meta["step"]), normalize, f"jaxdisco:{step_dir}"


def export_tokenizer(
    source,
    out_dir: PathLike,
    *,
    layer: Optional[int] = None,
    centroids=None,
    units: str = "kmeans",
    export_lengths: Sequence[int] = DEFAULT_EXPORT_LENGTHS,
    normalize: Optional[bool] = None,
    hf_model_type: Optional[str] = None,
    export_hf: bool = True,
    hidden_states_convention: Optional[str] = None,
    progress=print,
) -> pathlib.Path:
  """Writes a tokenizer directory (see the module docstring) and returns its path.

  Args:
    source: a training workdir / checkpoint or a Hugging Face directory (anything
      `load_pretrained` accepts), or a `Pretrained`.
    out_dir: the directory to write (created; existing tokenizer files are replaced).
    layer: hidden_states index for units="kmeans" (required there); ignored by "codebook".
    centroids: `save_centroids` path prefix, scikit-learn joblib file, or a [K, dim] array.
    units: a kind of `unit_kinds.UNIT_KINDS` ("kmeans", "codebook", or "vq_wav2vec" for a
      vq-wav2vec run).
    export_lengths: input lengths in samples of the StableHLO programs (empty: none).
    normalize: per-utterance zero mean / unit variance; default: the source run's
      `data.normalize` (HF: preprocessor_config.json's do_normalize).
    hf_model_type: "hubert" or "wav2vec2" for hf/; default: the source's. A vq-wav2vec
      source refuses it (no transformers model to export to).
    export_hf: write hf/.
    hidden_states_convention: "transformers5" or "transformers4" (see
      `Pretrained.extract_features`; they differ only for layer = num_layers of a pre-LN
      model); default: the centroids' (their save_centroids meta names it), else
      "transformers5". Recorded in tokenizer.json.
    progress: print-like callable, or None.
  """
  from safetensors.numpy import save_file

  kind = unit_kinds.get_kind(units)
  say = progress or (lambda *_: None)
  pretrained, step, source_normalize, description = load_source_model(source)
  cfg = pretrained.config
  method = get_method(pretrained.model_type)
  if units not in method.unit_kinds:
    raise TokenizerError(
        f"units={units!r} does not fit this {method.name} model: use "
        + " or ".join(f"units={k!r}" for k in method.unit_kinds)
    )
  if method.hf_model_type is None and hf_model_type is not None:
    raise TokenizerError(
        f"a {method.name} model has no Hugging Face export (transformers has no such model): "
        "drop hf_model_type (--hf-model-type)"
    )
  if kind.uses_layer:
    if layer is None:
      raise TokenizerError(f"units={units!r} needs a layer (0..{cfg.num_layers})")
    if not 0 <= layer <= cfg.num_layers:
      raise TokenizerError(
          f"layer {layer} out of range: this model has hidden_states 0..{cfg.num_layers}"
      )
  else:
    layer = 0
  centroid_array, centroid_source, centroid_meta = _load_centroids(centroids)
  quantizer, info, spec_extra = kind.make_weights(pretrained, layer, centroid_array)
  spec = unit_kinds.TokenizerSpec(
      kind=units,
      config=cfg,
      layer=layer,
      normalize=source_normalize if normalize is None else bool(normalize),
      hidden_states_convention=_units_convention(
          hidden_states_convention, centroid_meta, cfg, layer
      ),
      **spec_extra,
  )
  backbone = jax.device_get(kind.encoder(pretrained, layer))
  weights = {"encoder": unit_kinds.flatten(backbone), "quantizer": quantizer}

  out = pathlib.Path(out_dir)
  (out / PROGRAM_DIR).mkdir(parents=True, exist_ok=True)
  save_file(weights["encoder"], str(out / ENCODER_NAME))
  save_file(weights["quantizer"], str(out / QUANTIZER_NAME))
  files = [ENCODER_NAME, QUANTIZER_NAME]
  lengths = sorted({int(n) for n in export_lengths})
  for n in lengths:
    if cfg.num_frames(n) < 1:
      raise TokenizerError(f"export_lengths: {n} samples give no frame (receptive field too large)")
  if lengths:
    say(f"exporting {len(lengths)} StableHLO program(s) for {lengths} samples")
  # Lowering a program takes seconds to minutes: a line with the ETA after each.
  meter = ProgressMeter("programs", len(lengths), report=progress, every_seconds=0)
  for n in lengths:
    (out / program_name(n)).write_bytes(serialize_program(spec, weights, n))
    files.append(program_name(n))
    meter.advance(note=f"{program_name(n)} ({n / SAMPLE_RATE:g} s)")
  hf_info = None
  # Codebook and vq-wav2vec units need the quantizer, which hf/ lacks (and transformers has no
  # vq-wav2vec model at all).
  # A method without a transformers counterpart (hf_model_type None, e.g. BEST-RQ's log-mel
  # front end) writes no hf/.
  if export_hf and kind.uses_layer and (hf_model_type or method.hf_model_type):
    model_type = hf_model_type or method.hf_model_type
    say(f"writing the Hugging Face {model_type} export to {out / HF_DIR}")
    hf_info = _export_hf(out / HF_DIR, spec, backbone, model_type, centroid_array)
    files += [f"{HF_DIR}/{name}" for name in hf_info["files"]]

  manifest = {
      "format": "jaxdisco-tokenizer",
      "format_version": FORMAT_VERSION,
      "units": units,
      **info,
      "layer": layer if kind.uses_layer else None,
      "layer_output": (
          LAYER_CONVENTION
          if kind.uses_layer
          else info.get("features", "quantizer input (conv encoder output)")
      ),
      "hidden_states_convention": spec.hidden_states_convention if kind.uses_layer else None,
      "model_config": cfg.to_dict(),
      "model_type": pretrained.model_type,
      "sample_rate": SAMPLE_RATE,
      "frame_stride_samples": cfg.frame_stride,
      "frame_rate": SAMPLE_RATE / cfg.frame_stride,
      "normalize": spec.normalize,
      "normalization": (
          "per utterance zero mean / unit variance over valid samples, inside the program"
          if spec.normalize
          else "none: raw float32 waveform in [-1, 1]"
      ),
      "padding_id": -1,
      "num_groups": spec.num_groups,
      "num_vars": spec.num_vars,
      "source": description,
      "source_step": step,
      "centroids_source": centroid_source,
      "export_lengths": lengths,
      "program_signature": "(weights, waveform [b, N] float32, padding_mask [b, N] bool, True = "
      "padding) -> ids [b, frames] int32, -1 on padding frames",
      "hf": hf_info,
      "files": {name: sha256_file(out / name) for name in files},
  }
  manifest["content_hash"] = content_hash(manifest["files"])
  (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
  say(f"tokenizer written to {out} ({units}, vocabulary {manifest['vocab_size']})")
  return out


def content_hash(files: dict[str, str]) -> str:
  """One sha256 over the sorted (name, file hash) pairs."""
  text = "".join(f"{name}\t{files[name]}\n" for name in sorted(files))
  return hashlib.sha256(text.encode()).hexdigest()


# A program is lowered for each of these, so one exported anywhere runs on any of them (the
# model's few backend-specific paths, such as the positional conv's, are chosen at run time).
PROGRAM_PLATFORMS = ("cpu", "cuda", "tpu")


def serialize_program(spec, weights, num_samples: int) -> bytearray:
  """The tokenizer for [b, num_samples] inputs, b symbolic, as `jax.export` bytes."""
  (batch,) = jax.export.symbolic_shape("b")
  if isinstance(spec.config, ModelConfig):
    # The program must run on any backend: no cuDNN attention baked in when exported on a GPU.
    spec = dataclasses.replace(spec, config=dataclasses.replace(spec.config, attention="xla"))
  shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), weights)
  fn = jax.jit(functools.partial(unit_kinds.tokenize, spec))
  exported = jax.export.export(fn, platforms=PROGRAM_PLATFORMS)(
      shapes,
      jax.ShapeDtypeStruct((batch, num_samples), np.float32),
      jax.ShapeDtypeStruct((batch, num_samples), np.bool_),
  )
  return exported.serialize()


def _export_hf(directory: pathlib.Path, spec, backbone, model_type: str, centroids) -> dict:
  from jaxdisco.export.huggingface import save_hf_checkpoint

  cut = dataclasses.replace(spec.config, num_layers=spec.layer)
  save_hf_checkpoint(directory, cut, {"params": {"backbone": backbone}}, model_type)
  names = ["config.json", "model.safetensors"]
  if centroids is not None:
    np.save(directory / "centroids.npy", np.asarray(centroids, np.float32))
    names.append("centroids.npy")
  cfg = spec.config
  last_layer = spec.layer == cfg.num_layers
  if not cfg.layer_norm_first:
    features = "last_hidden_state (= hidden_states[-1])"
  elif last_layer and spec.hidden_states_convention == "transformers4":
    features = "last_hidden_state (after the final LayerNorm)"
  else:
    features = (
        "hidden_states[-1] under transformers 5.x: the last layer's output before the final "
        "LayerNorm (transformers 4.x returns it after)"
    )
  return {
      "model_type": model_type,
      "num_hidden_layers": spec.layer,
      "features": features + ("; the waveform is normalized first" if spec.normalize else ""),
      "files": names,
  }
