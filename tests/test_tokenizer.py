"""Frozen tokenizers: export, load in a fresh process, StableHLO == library, HF parity,
chunking, dedup/offset, integrity checks and the tokenize command."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import linen as nn

import jaxdisco
from jaxdisco.assets import demo_corpus_dir
from jaxdisco.clustering import kmeans
from jaxdisco.data.audio import read_audio
from jaxdisco.data.normalize import normalize_waveform
from jaxdisco.export.huggingface import save_hf_checkpoint
from jaxdisco.export import tokenizer as export_lib
from jaxdisco.export.tokenizer import export_tokenizer
from jaxdisco.models.wav2vec2 import Wav2Vec2Backbone, Wav2Vec2ForPretraining
from jaxdisco.tokenize_files import tokenize_files
from jaxdisco.tokenizer import Tokenizer, TokenizerIntegrityError, run_lengths

from conftest import REPO, tiny_model_config

K = 24
LENGTHS = (16000, 11000, 6000)  # One padded batch of three utterances.


def _demo_batch():
  """[3, 16000] real speech, rows cut to LENGTHS (padding at the end), and the mask."""
  audio_dir = demo_corpus_dir() / "audio"
  wav = np.zeros((len(LENGTHS), 16000), np.float32)
  mask = np.ones(wav.shape, bool)
  for row, n in enumerate(LENGTHS):
    wav[row, :n] = read_audio(audio_dir / f"demo-{row + 1:04d}.flac")[:n]
    mask[row, :n] = False
  return wav, mask


@pytest.fixture(scope="module")
def hf_source(tmp_path_factory):
  """A tiny random HuBERT (post-LN, layer-norm conv encoder) saved as a HF directory."""
  cfg = tiny_model_config(extractor_mode="layer_norm")
  variables = Wav2Vec2Backbone(cfg).init(jax.random.key(0), np.zeros((1, 4000), np.float32))
  directory = tmp_path_factory.mktemp("hf_source")
  save_hf_checkpoint(
      directory, cfg, {"params": {"backbone": nn.meta.unbox(variables)["params"]}}, "hubert"
  )
  return directory


@pytest.fixture(scope="module")
def source_features(hf_source):
  """hidden_states 0 and 1 of the HF source on `_demo_batch()`, and frame validity."""
  wav, mask = _demo_batch()
  out = jaxdisco.load_pretrained(hf_source).extract_features(wav, mask, output_layers=[0, 1])
  return [np.asarray(h) for h in out["hidden_states"]], np.asarray(out["frame_valid"])


@pytest.fixture(scope="module")
def kmeans_tokenizers(hf_source, source_features, tmp_path_factory):
  """{layer: tokenizer dir} for layers 1 (with a program) and 0 (bounded receptive field).
  The centroids are K frames of the model's own features, so the units are varied."""
  hidden, valid = source_features
  root = tmp_path_factory.mktemp("kmeans_tok")
  out = {}
  for layer, lengths in ((1, (16000,)), (0, ())):
    frames = hidden[layer][valid]
    prefix = root / f"centroids_l{layer}"
    picks = np.random.default_rng(layer).choice(len(frames), K, replace=False)
    kmeans.save_centroids(prefix, frames[picks], {"layer": layer})
    out[layer] = export_tokenizer(
        hf_source,
        root / f"layer{layer}",
        layer=layer,
        centroids=prefix,
        export_lengths=lengths,
        progress=None,
    )
  return out


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A workdir holding a random tiny wav2vec 2.0 (pre-LN, with quantizer) at step 7, saved by
  the trainer's checkpoint code, with the demo's `data.normalize=True`."""
  import grain

  from jaxdisco.train import checkpoint

  cfg = tiny_model_config(
      extractor_mode="layer_norm",
      layer_norm_first=True,
      final_dim=8,
      latent_vars=8,
      latent_groups=2,
  )
  frames = cfg.num_frames(4000)
  variables = Wav2Vec2ForPretraining(cfg).init(
      jax.random.key(1),
      np.zeros((1, 4000), np.float32),
      None,
      np.zeros((1, frames), bool),
      temperature=2.0,
  )
  directory = tmp_path_factory.mktemp("workdir")
  manager = checkpoint.make_manager(directory, save_every=1, keep=1, async_save=False)
  data_iterator = iter(grain.MapDataset.range(4).to_iter_dataset())
  config = {"model": cfg.to_dict(), "data": {"normalize": True}}
  # The TrainState layout: state["params"] = {"params": ...}.
  checkpoint.save(manager, 7, {"params": nn.meta.unbox(variables)}, data_iterator, config)
  manager.wait_until_finished()
  manager.close()
  return directory


@pytest.fixture(scope="module")
def codebook_tokenizer(workdir, tmp_path_factory):
  return export_tokenizer(
      workdir,
      tmp_path_factory.mktemp("codebook_tok") / "tok",
      units="codebook",
      export_lengths=(16000,),
      progress=None,
  )


_FRESH_PROCESS = r"""
import json, sys
import jax, numpy as np
from safetensors.numpy import load_file
inputs = np.load(sys.argv[1])
wav, mask = inputs["wav"], inputs["mask"]
result = {}
for d in sys.argv[2:]:
  # Plain jax + safetensors: no jaxdisco model code.
  weights = {"encoder": load_file(d + "/encoder.safetensors"),
             "quantizer": load_file(d + "/quantizer.safetensors")}
  with open(f"{d}/programs/tokenize_{wav.shape[1]}.jax.export", "rb") as f:
    program = jax.export.deserialize(bytearray(f.read()))
  result[d] = {"plain": np.asarray(program.call(weights, wav, mask)).tolist()}
assert not [m for m in sys.modules if m.startswith("jaxdisco")]
import jaxdisco
for d in sys.argv[2:]:
  tok = jaxdisco.Tokenizer.load(d)
  rows = [w[~m] for w, m in zip(wav, mask)]
  result[d]["library"] = tok.encode_batch(wav, mask).tolist()
  result[d]["encode_jax"] = [x.tolist() for x in tok.encode(rows)]
  result[d]["encode_stablehlo"] = [x.tolist() for x in tok.encode(rows, backend="stablehlo")]
print("RESULT" + json.dumps(result))
"""


def check_stablehlo_in_fresh_process(dirs: list[str], tmp_path) -> None:
  """In a new Python process that imports no jaxdisco model code, each tokenizer directory's
  serialized program gives the same ids as `jaxdisco.Tokenizer` (bit for bit, padding -1), and
  `encode` agrees between the two paths."""
  wav, mask = _demo_batch()
  np.savez(tmp_path / "inputs.npz", wav=wav, mask=mask)
  proc = subprocess.run(
      [sys.executable, "-c", _FRESH_PROCESS, str(tmp_path / "inputs.npz"), *dirs],
      capture_output=True,
      text=True,
      timeout=600,
      cwd=REPO,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(proc.stdout.split("RESULT", 1)[1])
  for d in dirs:
    plain, library = np.asarray(result[d]["plain"]), np.asarray(result[d]["library"])
    np.testing.assert_array_equal(plain, library)  # Bit-identical ids, padding = -1.
    assert (plain[0] >= 0).all() and (plain[2] == -1).any()
    assert result[d]["encode_jax"] == result[d]["encode_stablehlo"]
    for row, ids in enumerate(result[d]["encode_jax"]):
      np.testing.assert_array_equal(ids, plain[row][plain[row] >= 0])


def test_fresh_process_stablehlo_equals_library(kmeans_tokenizers, codebook_tokenizer, tmp_path):
  check_stablehlo_in_fresh_process([str(kmeans_tokenizers[1]), str(codebook_tokenizer)], tmp_path)


def test_programs_run_on_every_backend(kmeans_tokenizers, codebook_tokenizer):
  """Programs are lowered for CPU, CUDA and TPU whichever backend exported them."""
  for directory in (kmeans_tokenizers[1], codebook_tokenizer):
    programs = sorted(pathlib.Path(directory).glob(f"{export_lib.PROGRAM_DIR}/*.jax.export"))
    assert programs, directory
    for path in programs:
      exported = jax.export.deserialize(bytearray(path.read_bytes()))
      assert exported.platforms == export_lib.PROGRAM_PLATFORMS == ("cpu", "cuda", "tpu")


def test_kmeans_ids_match_features_and_assign(source_features, kmeans_tokenizers):
  """The oracle: extract_features at the layer, then the library's k-means assignment."""
  tok = Tokenizer.load(kmeans_tokenizers[1])
  manifest = tok.manifest
  assert (manifest["layer"], manifest["vocab_size"], manifest["units"]) == (1, K, "kmeans")
  assert manifest["frame_rate"] == 50.0 and manifest["sample_rate"] == 16000
  assert manifest["source_step"] is None and manifest["normalize"] is False
  # Only layer_0 of the 2-layer source is kept.
  assert any("layer_0/" in k for k in tok.weights["encoder"])
  assert not any("layer_1/" in k for k in tok.weights["encoder"])
  wav, mask = _demo_batch()
  hidden, valid = source_features
  expected, _ = kmeans.assign(hidden[1][valid], tok.weights["quantizer"]["centroids"])
  ids = tok.encode_batch(wav, mask)
  np.testing.assert_array_equal(ids >= 0, valid)
  assert np.mean(ids[valid] == expected) >= 0.98  # Only float near-ties may differ.
  assert len(np.unique(expected)) > K // 3


def test_codebook_ids_match_model_codes(workdir, codebook_tokenizer):
  tok = Tokenizer.load(codebook_tokenizer)
  cfg = tok.spec.config
  assert tok.manifest["source_step"] == 7 and tok.manifest["normalize"] is True
  assert tok.vocab_size == cfg.latent_vars**cfg.latent_groups == 64
  assert not any("/layer_" in k for k in tok.weights["encoder"])
  wav, _ = _demo_batch()
  ids = tok.encode_batch(wav[:1])
  from jaxdisco.train.checkpoint import load_pretrained_params

  params = load_pretrained_params(workdir).params
  frames = cfg.num_frames(wav.shape[1])
  model = Wav2Vec2ForPretraining(cfg)
  codes = model.apply(
      params, normalize_waveform(wav[0])[None], None, np.zeros((1, frames), bool), temperature=1.0
  ).codes
  expected = np.asarray(codes[..., 0] * cfg.latent_vars + codes[..., 1])  # id = g0 * V + g1
  assert np.mean(ids == expected) >= 0.98


def test_hf_export_loads_in_transformers_with_same_hidden_states(
    source_features, kmeans_tokenizers
):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  directory = kmeans_tokenizers[1] / "hf"
  model, info = transformers.HubertModel.from_pretrained(directory, output_loading_info=True)
  assert not any(info.values()), info
  assert model.config.num_hidden_layers == 1
  wav, mask = _demo_batch()
  with torch.no_grad():
    hf = model.eval()(torch.from_numpy(wav[:1]), output_hidden_states=True)
  ours = source_features[0][1][:1]  # Row 0 has no padding.
  diff = np.abs(hf.hidden_states[-1].numpy() - ours).max()
  assert diff <= 5e-5, diff  # tests/test_hf_parity.py's hidden-state tolerance
  centroids = np.load(directory / "centroids.npy")
  torch_ids = torch.cdist(hf.hidden_states[-1][0], torch.from_numpy(centroids)).argmin(-1)
  tok = Tokenizer.load(kmeans_tokenizers[1])
  assert np.mean(torch_ids.numpy() == tok.encode_batch(wav, mask)[0]) >= 0.98


def test_chunking_equals_unchunked_with_bounded_receptive_field(kmeans_tokenizers):
  """Layer 0 of a layer-norm conv encoder sees conv field + half the positional conv (4
  frames): with 5 frames of context every chunked unit equals the unchunked one."""
  tok = Tokenizer.load(kmeans_tokenizers[0])
  wav = np.concatenate(
      [read_audio(demo_corpus_dir() / "audio" / f"demo-{i:04d}.flac") for i in (1, 2)]
  )[:60_000]
  whole = tok.encode(wav)
  chunked = tok.encode(wav, chunk_seconds=0.5, overlap_seconds=0.1)
  np.testing.assert_array_equal(chunked, whole)
  # Without context the frames next to each border change: the comparison can fail.
  assert not np.array_equal(tok.encode(wav, chunk_seconds=0.5, overlap_seconds=0.0), whole)
  # Transformer layers see everything: chunking keeps the length, not every unit.
  deep = Tokenizer.load(kmeans_tokenizers[1])
  assert deep.encode(wav, chunk_seconds=0.5, overlap_seconds=0.1).shape == whole.shape


def test_dedup_and_offset(kmeans_tokenizers):
  tok = Tokenizer.load(kmeans_tokenizers[1])
  wav, _ = _demo_batch()
  ids = tok.encode(wav[0])
  units, durations = tok.encode(wav[0], deduplicate=True, offset=3)
  np.testing.assert_array_equal(np.repeat(units - 3, durations), ids)
  assert (units[1:] != units[:-1]).all() and durations.sum() == len(ids)
  np.testing.assert_array_equal(tok.encode(wav[0], offset=3), ids + 3)
  np.testing.assert_array_equal(run_lengths(np.array([5, 5, 1, 5]))[1], [2, 1, 1])


def test_tampered_directory_is_refused(kmeans_tokenizers, tmp_path):
  copy = shutil.copytree(kmeans_tokenizers[1], tmp_path / "tok")
  data = bytearray((copy / "quantizer.safetensors").read_bytes())
  data[-1] ^= 1
  (copy / "quantizer.safetensors").write_bytes(bytes(data))
  with pytest.raises(TokenizerIntegrityError, match="quantizer.safetensors"):
    Tokenizer.load(copy)
  shutil.copy(kmeans_tokenizers[1] / "quantizer.safetensors", copy / "quantizer.safetensors")
  manifest = json.loads((copy / "tokenizer.json").read_text())
  manifest["files"]["quantizer.safetensors"] = "0" * 64
  (copy / "tokenizer.json").write_text(json.dumps(manifest))
  with pytest.raises(TokenizerIntegrityError, match="tokenizer.json"):
    Tokenizer.load(copy)


def test_tokenize_folder_with_corrupt_file(kmeans_tokenizers, tmp_path):
  folder = tmp_path / "audio"
  folder.mkdir()
  for i in (3, 4, 5):
    shutil.copy(demo_corpus_dir() / "audio" / f"demo-{i:04d}.flac", folder)
  (folder / "broken.flac").write_bytes(b"not audio at all" * 10)
  tok_dir = kmeans_tokenizers[1]
  tok = Tokenizer.load(tok_dir)
  summary = tokenize_files(tok, [folder], tmp_path / "units.jsonl", deduplicate=True, progress=None)
  assert summary["utterances"] == 3
  assert len(summary["skipped"]) == 1 and "broken.flac" in summary["skipped"][0][0]
  records = [json.loads(x) for x in (tmp_path / "units.jsonl").read_text().splitlines()]
  assert [r["id"] for r in records] == ["demo-0003", "demo-0004", "demo-0005"]
  units, durations = tok.encode(folder / "demo-0004.flac", deduplicate=True)
  assert records[1]["units"] == units.tolist() and records[1]["durations"] == durations.tolist()
  # The command: .km lines + sidecar ids, the corrupt file reported, exit status 0.
  env = dict(os.environ, PYTHONPATH=str(REPO))
  proc = subprocess.run(
      [
          sys.executable,
          "-m",
          "jaxdisco.cli",
          "tokenize",
          f"--tokenizer={tok_dir}",
          str(folder),
          f"--out={tmp_path / 'out' / 'units.km'}",
          "--format=km",
      ],
      capture_output=True,
      text=True,
      timeout=600,
      env=env,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "broken.flac" in proc.stdout and "3 utterances" in proc.stdout
  progress = [line for line in proc.stdout.splitlines() if line.startswith("tokenize ")]
  assert progress and "(100%)" in progress[-1], proc.stdout  # The whole corpus, once done.
  assert "s of audio/s" in progress[-1] and "ETA" in progress[-1]
  lines = (tmp_path / "out" / "units.km").read_text().splitlines()
  ids = (tmp_path / "out" / "units.km.ids").read_text().split()
  assert ids == ["demo-0003", "demo-0004", "demo-0005"]
  assert lines[1] == " ".join(map(str, tok.encode(folder / "demo-0004.flac").tolist()))


def test_last_layer_units_follow_the_centroids_convention(workdir, tmp_path):
  """Units of the last layer of a pre-LN model (`workdir`): the export reads the centroids'
  hidden_states convention, records it, and its ids are the nearest centroid of that
  convention's features; asking for the other one is refused; an export made before
  tokenizer.json recorded it loads as the transformers 4.x convention it was made with."""
  from jaxdisco.errors import TokenizerError

  pretrained = jaxdisco.load_pretrained(workdir)
  layer = pretrained.config.num_layers
  wav, mask = _demo_batch()
  for convention in ("transformers5", "transformers4"):
    out = pretrained.extract_features(wav, mask, hidden_states_convention=convention)
    frames = np.asarray(out["hidden_states"][layer])
    valid = np.asarray(out["frame_valid"])
    prefix = tmp_path / f"centroids_{convention}"
    picks = np.random.default_rng(0).choice(int(valid.sum()), K, replace=False)
    kmeans.save_centroids(
        prefix, frames[valid][picks], {"layer": layer, "hidden_states_convention": convention}
    )
    directory = export_tokenizer(
        workdir,
        tmp_path / convention,
        layer=layer,
        centroids=prefix,
        export_lengths=(),
        export_hf=False,
        normalize=False,  # As extract_features is given the waveform.
        progress=None,
    )
    tok = Tokenizer.load(directory)
    assert tok.manifest["hidden_states_convention"] == convention
    expected, _ = kmeans.assign(frames[valid], kmeans.load_centroids(prefix)[0])
    assert np.mean(tok.encode_batch(wav, mask)[valid] == expected) >= 0.98
  with pytest.raises(TokenizerError, match="fit on 'transformers4' features"):
    export_tokenizer(
        workdir,
        tmp_path / "contradiction",
        layer=layer,
        centroids=prefix,
        hidden_states_convention="transformers5",
        export_lengths=(),
        progress=None,
    )
  manifest = json.loads((directory / "tokenizer.json").read_text())
  del manifest["hidden_states_convention"]
  (directory / "tokenizer.json").write_text(json.dumps(manifest))
  assert Tokenizer.load(directory).spec.hidden_states_convention == "transformers4"


def test_tokenizer_needs_no_training_input_stack():
  """Loading and running a tokenizer imports neither grain nor the audio readers: a serving
  environment has jax, flax and safetensors, not the pretraining input pipeline."""
  code = (
      "import sys; import jaxdisco.tokenizer, jaxdisco.export.tokenizer; "
      "from jaxdisco.export import unit_kinds; import numpy as np; "
      "unit_kinds.normalize_rows(np.ones((1, 8), np.float32), np.zeros((1, 8), bool)); "
      "print(sorted(m for m in ('grain', 'soundfile', 'librosa', 'orbax') if m in sys.modules))"
  )
  proc = subprocess.run(
      [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip() == "[]"
