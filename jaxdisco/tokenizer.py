"""`Tokenizer.load(dir).encode(audio)`: unit ids from a directory written by
`jaxdisco.export.tokenizer.export_tokenizer` (or `jaxdisco export-tokenizer`).

Two backends run the same pure function (`unit_kinds.tokenize`): "jax" jit-compiles it from
the stored parameters (any length, data-parallel over `jax.devices()`), "stablehlo" runs the
serialized programs of the directory (inputs padded to the next exported length). Both pad a
batch to the same lengths, so they return the same ids.

Long audio (`chunk_seconds`): the utterance is cut into cores of `chunk_seconds`, each run
with `overlap_seconds` of context on both sides, and only the core frames are kept. Pieces
start on frame boundaries (multiples of the conv stride), so a frame sees exactly the samples
it sees unchunked. Units that depend on a bounded window (conv features, or hidden_states[0]
with a layer-norm conv encoder: conv receptive field plus half the positional conv) are then
identical to unchunked ones when the context covers that window. Transformer layers attend to
the whole input and group-norm encoders normalize over it, so there chunking changes some
units (mostly near chunk borders); `normalize=True` normalizes each piece on its own.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from typing import Any, Optional, Sequence, Union

import jax
import numpy as np

from jaxdisco.errors import MissingFileError, TokenizerError
from jaxdisco.export import tokenizer as export_lib
from jaxdisco.export import unit_kinds
from jaxdisco.models.config import ModelConfig, conv_output_length
from jaxdisco.models.hidden_states import DEFAULT_HIDDEN_STATES_CONVENTION

PathLike = Union[str, os.PathLike]
# Beyond the longest exported length, the "jax" backend pads to multiples of 0.5 s.
_BUCKET_SAMPLES = 8000


# One jitted function for every Tokenizer: equal specs (and shapes) share compiled programs.
_tokenize_jit = jax.jit(unit_kinds.tokenize, static_argnums=0)


class TokenizerIntegrityError(TokenizerError):
  """A tokenizer directory's files do not match the hashes in its manifest."""


def run_lengths(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """[frames] -> (units [runs], durations [runs] in frames): consecutive repeats merged."""
  ids = np.asarray(ids)
  if ids.size == 0:
    return ids.copy(), np.zeros(0, np.int32)
  starts = np.flatnonzero(np.concatenate([[True], ids[1:] != ids[:-1]]))
  durations = np.diff(np.concatenate([starts, [ids.size]])).astype(np.int32)
  return ids[starts], durations


def receptive_field(config: ModelConfig) -> int:
  """Samples that one frame reads (400 for the BASE stack; the log-mel window included)."""
  field, jump = 1, 1
  for _, kernel, stride in config.geometry_spec:
    field += (kernel - 1) * jump
    jump *= stride
  return field


class Tokenizer:
  """A loaded tokenizer directory. Attributes: `manifest` (tokenizer.json), `spec`
  (`unit_kinds.TokenizerSpec`), `weights` (host arrays), `directory`."""

  def __init__(self, directory: pathlib.Path, manifest: dict, spec, weights):
    self.directory = directory
    self.manifest = manifest
    self.spec = spec
    self.weights = weights
    self._device_weights = None
    self._programs: dict[int, Any] = {}

  @classmethod
  def load(cls, directory: PathLike, *, verify: bool = True) -> "Tokenizer":
    """Reads a tokenizer directory; with `verify`, checks every file's sha256 first."""
    from safetensors.numpy import load_file

    directory = pathlib.Path(directory)
    manifest_path = directory / export_lib.MANIFEST_NAME
    if not manifest_path.is_file():
      raise MissingFileError(f"{manifest_path}: not found (is {directory} a tokenizer directory?)")
    try:
      manifest = json.loads(manifest_path.read_text())
    except ValueError as e:
      raise TokenizerError(f"{manifest_path}: not valid JSON ({e})") from None
    if manifest.get("format") != "jaxdisco-tokenizer":
      raise TokenizerError(
          f"{manifest_path}: 'format' is {manifest.get('format')!r}, expected "
          "'jaxdisco-tokenizer'"
      )
    if verify:
      _verify(directory, manifest)
    from jaxdisco.methods import get_method  # pylint: disable=g-import-not-at-top

    # model_type is the source's method (Hugging Face sources: their model type, which is the
    # method of the same name); it says which typed config model_config is.
    config_type = get_method(manifest.get("model_type", "wav2vec2")).model_config_type
    config = config_type.from_dict(manifest["model_config"])
    spec = unit_kinds.TokenizerSpec(
        kind=manifest["units"],
        config=config,
        layer=manifest["layer"] or 0,
        normalize=bool(manifest["normalize"]),
        num_groups=int(manifest["num_groups"]),
        num_vars=int(manifest["num_vars"]),
        # Exports made before tokenizer.json recorded it read the transformers 4.x convention;
        # units that read no layer record None.
        hidden_states_convention=(
            manifest.get("hidden_states_convention", "transformers4")
            or DEFAULT_HIDDEN_STATES_CONVENTION
        ),
    )
    unit_kinds.get_kind(spec.kind)  # An unknown kind fails here, naming the known ones.
    weights = {
        "encoder": load_file(str(directory / export_lib.ENCODER_NAME)),
        "quantizer": load_file(str(directory / export_lib.QUANTIZER_NAME)),
    }
    return cls(directory, manifest, spec, weights)

  @property
  def sample_rate(self) -> int:
    return int(self.manifest["sample_rate"])

  @property
  def frame_rate(self) -> float:
    return float(self.manifest["frame_rate"])

  @property
  def vocab_size(self) -> int:
    return int(self.manifest["vocab_size"])

  @property
  def export_lengths(self) -> list[int]:
    return list(self.manifest.get("export_lengths", []))

  # ------------------------------------------------------------------------- one device call

  def encode_batch(self, waveforms, padding_mask=None, *, backend: str = "jax") -> np.ndarray:
    """waveforms [batch, samples] float32, padding_mask [batch, samples] bool (True = pad)
    -> ids [batch, frames] int32, -1 on padding frames. No bucketing: one program per shape;
    "stablehlo" needs `samples` to be an exported length."""
    wav = np.asarray(waveforms, np.float32)
    mask = np.zeros(wav.shape, bool) if padding_mask is None else np.asarray(padding_mask, bool)
    if wav.ndim != 2 or mask.shape != wav.shape:
      raise ValueError(
          f"waveforms {wav.shape} / padding_mask {mask.shape}: expected equal "
          "[batch, samples] shapes"
      )
    if backend == "stablehlo":
      return np.asarray(self._program(wav.shape[1]).call(self.weights, wav, mask))
    if backend != "jax":
      raise ValueError(f"backend: expected 'jax' or 'stablehlo', got {backend!r}")
    devices = jax.devices()
    rows = wav.shape[0]
    padded_rows = -(-rows // len(devices)) * len(devices)
    if padded_rows != rows:  # Rows of pure padding so the batch splits evenly over devices.
      wav = np.concatenate([wav, np.zeros((padded_rows - rows, wav.shape[1]), np.float32)])
      mask = np.concatenate([mask, np.ones((padded_rows - rows, mask.shape[1]), bool)])
    mesh = jax.sharding.Mesh(np.asarray(devices), ("data",))
    if self._device_weights is None:
      replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
      self._device_weights = jax.device_put(self.weights, replicated)
    rows_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    ids = _tokenize_jit(
        self.spec,
        self._device_weights,
        jax.device_put(wav, rows_sharding),
        jax.device_put(mask, rows_sharding),
    )
    return np.asarray(ids)[:rows]

  def _program(self, num_samples: int):
    if num_samples not in self._programs:
      path = self.directory / export_lib.program_name(num_samples)
      if not path.is_file():
        raise ValueError(
            f"no exported program for {num_samples} samples (exported lengths: "
            f"{self.export_lengths}); {path} does not exist"
        )
      self._programs[num_samples] = jax.export.deserialize(bytearray(path.read_bytes()))
    return self._programs[num_samples]

  def padded_length(self, num_samples: int, backend: str = "jax") -> int:
    """The input length a batch whose longest row has `num_samples` is padded to."""
    for length in self.export_lengths:
      if length >= num_samples:
        return length
    if backend == "stablehlo":
      raise ValueError(
          f"{num_samples} samples exceed the longest exported program "
          f"({max(self.export_lengths, default=0)}); pass chunk_seconds"
      )
    return -(-num_samples // _BUCKET_SAMPLES) * _BUCKET_SAMPLES

  # ------------------------------------------------------------------------- utterances

  def encode(
      self,
      inputs,
      *,
      padding_mask=None,
      deduplicate: bool = False,
      offset: int = 0,
      chunk_seconds: Optional[float] = None,
      overlap_seconds: float = 1.0,
      batch_size: int = 8,
      backend: str = "jax",
  ):
    """Unit ids of one or more utterances.

    Args:
      inputs: a waveform [samples], a path, a batch [batch, samples] (with `padding_mask`), or
        a sequence of waveforms and/or paths (audio files are read at the tokenizer's rate).
      padding_mask: [batch, samples] bool, True = padding at the end of a row (2-D inputs).
      deduplicate: merge repeated consecutive ids; returns (units, durations in frames).
      offset: added to every id (e.g. to leave room for special tokens).
      chunk_seconds: cut longer utterances into chunks of this length (see module docs).
      overlap_seconds: context on each side of a chunk.
      batch_size: utterances (or chunks) per device call; similar lengths are batched.
      backend: "jax" or "stablehlo" (the serialized programs).

    Returns:
      for one waveform or path: int32 ids [frames] (or (units, durations)); otherwise a
      list of those, in input order.
    """
    waves, single = self._as_waveforms(inputs, padding_mask)
    pieces = []  # (utterance, first kept frame, frames kept, piece start frame, waveform)
    for u, wav in enumerate(waves):
      for keep_start, keep_len, start, piece in self._pieces(wav, chunk_seconds, overlap_seconds):
        pieces.append((u, keep_start, keep_len, start, piece))
    frames = [
        np.zeros(
            max(0, int(conv_output_length(len(w), self.spec.config.geometry_spec))), np.int32
        )
        for w in waves
    ]
    order = sorted(range(len(pieces)), key=lambda i: len(pieces[i][4]))
    for begin in range(0, len(order), batch_size):
      batch = [pieces[i] for i in order[begin : begin + batch_size]]
      width = self.padded_length(max(len(p[4]) for p in batch), backend)
      wav = np.zeros((len(batch), width), np.float32)
      mask = np.ones((len(batch), width), bool)
      for row, p in enumerate(batch):
        wav[row, : len(p[4])], mask[row, : len(p[4])] = p[4], False
      ids = self.encode_batch(wav, mask, backend=backend)
      for row, (u, keep_start, keep_len, start, _) in enumerate(batch):
        local = keep_start - start
        frames[u][keep_start : keep_start + keep_len] = ids[row, local : local + keep_len]
    results = []
    for ids in frames:
      if deduplicate:
        units, durations = run_lengths(ids)
        results.append((units + offset, durations))
      else:
        results.append(ids + offset)
    return results[0] if single else results

  def _as_waveforms(self, inputs, padding_mask) -> tuple[list[np.ndarray], bool]:
    from jaxdisco.data.audio import read_audio

    read = lambda x: read_audio(x, sample_rate=self.sample_rate)
    if isinstance(inputs, (str, os.PathLike)):
      return [read(inputs)], True
    if isinstance(inputs, (np.ndarray, jax.Array)):
      array = np.asarray(inputs, np.float32)
      if array.ndim == 1:
        return [array], True
      if array.ndim != 2:
        raise ValueError(f"inputs: expected [samples] or [batch, samples], got {array.shape}")
      if padding_mask is None:
        return list(array), False
      mask = np.asarray(padding_mask, bool)
      if mask.shape != array.shape:
        raise ValueError(f"padding_mask {mask.shape} != inputs {array.shape}")
      return [row[: int((~m).sum())] for row, m in zip(array, mask)], False
    if padding_mask is not None:
      raise ValueError("padding_mask is only for [batch, samples] array inputs")
    waves = [
        read(x) if isinstance(x, (str, os.PathLike)) else np.asarray(x, np.float32) for x in inputs
    ]
    for i, w in enumerate(waves):
      if w.ndim != 1:
        raise ValueError(f"inputs[{i}]: expected a waveform [samples], got shape {w.shape}")
    return waves, False

  def _pieces(self, wav: np.ndarray, chunk_seconds, overlap_seconds):
    """Yields (first kept frame, frames kept, piece start frame, piece waveform)."""
    cfg = self.spec.config
    total = int(conv_output_length(len(wav), cfg.geometry_spec))
    if total < 1:
      raise ValueError(
          f"a waveform of {len(wav)} samples is shorter than one frame "
          f"({receptive_field(cfg)} samples)"
      )
    stride, field = cfg.frame_stride, receptive_field(cfg)
    hop = (
        total if chunk_seconds is None else max(1, round(chunk_seconds * self.sample_rate / stride))
    )
    context = math.ceil(overlap_seconds * self.sample_rate / stride)
    if hop >= total:
      yield 0, total, 0, wav
      return
    for a in range(0, total, hop):
      b = min(total, a + hop)
      first, last = max(0, a - context), min(total, b + context)
      # Frames first..last-1 read samples [first * stride, (last - 1) * stride + field).
      yield a, b - a, first, wav[first * stride : (last - 1) * stride + field]


def _verify(directory: pathlib.Path, manifest: dict) -> None:
  files = manifest.get("files")
  if not isinstance(files, dict) or not files:
    raise TokenizerIntegrityError(f"{directory / export_lib.MANIFEST_NAME}: no 'files' hashes")
  if export_lib.content_hash(files) != manifest.get("content_hash"):
    raise TokenizerIntegrityError(
        f"{directory / export_lib.MANIFEST_NAME}: content_hash does not match its 'files' list "
        "(the manifest was edited after export)"
    )
  for name, expected in files.items():
    path = directory / name
    if not path.is_file():
      raise TokenizerIntegrityError(f"{path}: listed in the manifest but missing")
    found = export_lib.sha256_file(path)
    if found != expected:
      raise TokenizerIntegrityError(
          f"{path}: content hash mismatch (manifest sha256 {expected[:16]}..., file "
          f"{found[:16]}...): the file changed after export; re-export the tokenizer"
      )
