"""vq-wav2vec codes as a frozen tokenizer: export (library and command), ids equal the model's
codes, plain-jax StableHLO == library in a fresh process, `jaxdisco tokenize`, and refusals."""

import jax
import numpy as np
import pytest
from flax import linen as nn

from conftest import run_cli
from jaxdisco.data.normalize import normalize_waveform
from jaxdisco.export.tokenizer import export_tokenizer
from jaxdisco.models.vq_wav2vec_codes import codes_to_ids, vq_wav2vec_codes
from jaxdisco.models.vq_wav2vec_config import VqWav2VecConfig
from jaxdisco.models.wav2vec1 import VqWav2Vec
from jaxdisco.tokenizer import Tokenizer
from test_tokenizer import _demo_batch, check_stablehlo_in_fresh_process

VARS = 8
TINY = dict(
    encoder_layers="[(16, 10, 5), (16, 8, 4), (16, 4, 2), (16, 4, 2), (16, 4, 2)]",
    aggregator_layers="[(16, 2, 1), (16, 3, 1)]",
    vq_vars=VARS,
    prediction_steps=2,
)


def _save_workdir(directory, cfg: VqWav2VecConfig, seed: int):
  """A random tiny vq-wav2vec saved by the trainer's checkpoint code (step 5, normalize)."""
  import grain

  from jaxdisco.train import checkpoint

  variables = VqWav2Vec(cfg).init(jax.random.key(seed), np.zeros((1, 4000), np.float32))
  manager = checkpoint.make_manager(directory, save_every=1, keep=1, async_save=False)
  data_iterator = iter(grain.MapDataset.range(4).to_iter_dataset())
  config = {"method": "vq_wav2vec", "model": cfg.to_dict(), "data": {"normalize": True}}
  checkpoint.save(manager, 5, {"params": nn.meta.unbox(variables)}, data_iterator, config)
  manager.wait_until_finished()
  manager.close()
  return directory


@pytest.fixture(scope="module")
def vq_tokenizers(tmp_path_factory):
  """{vq_type: (workdir, tokenizer dir)}: gumbel exported by the command, k-means by the
  library."""
  root = tmp_path_factory.mktemp("vq_tok")
  out = {}
  for seed, vq_type in enumerate(("gumbel", "kmeans")):
    cfg = VqWav2VecConfig(**TINY, vq_type=vq_type, vq_depth=2 if vq_type == "gumbel" else 1)
    workdir = _save_workdir(root / f"run_{vq_type}", cfg, seed)
    tok = root / f"tok_{vq_type}"
    if vq_type == "gumbel":
      proc = run_cli(
          "export-tokenizer",
          f"--workdir={workdir}",
          f"--out={tok}",
          "--units=vq_wav2vec",
          "--export-lengths=16000",
      )
      assert proc.returncode == 0, proc.stderr[-3000:]
    else:
      export_tokenizer(workdir, tok, units="vq_wav2vec", export_lengths=(16000,), progress=None)
    out[vq_type] = (workdir, tok)
  return out


@pytest.mark.parametrize("vq_type", ["gumbel", "kmeans"])
def test_ids_equal_the_models_codes(vq_tokenizers, vq_type):
  from jaxdisco.train.checkpoint import load_pretrained_params

  workdir, tok_dir = vq_tokenizers[vq_type]
  tok = Tokenizer.load(tok_dir)
  m = tok.manifest
  assert (m["units"], m["model_type"], m["vq_type"]) == ("vq_wav2vec", "vq_wav2vec", vq_type)
  assert tok.vocab_size == VARS**2 and m["num_groups"] == 2 and m["num_vars"] == VARS
  assert "g0*V + g1" in m["id_mapping"] and m["hf"] is None
  assert tok.frame_rate == 100.0 and m["source_step"] == 5 and m["normalize"] is True
  # Only the encoder is stored: no aggregator, no step projections.
  assert all(k.startswith("conv_") or k.startswith("norm_") for k in tok.weights["encoder"])
  _, config, params, _ = load_pretrained_params(workdir)
  wav, mask = _demo_batch()
  ids = tok.encode_batch(wav, mask)
  for row in range(len(wav)):
    n = int((~mask[row]).sum())
    utterance = normalize_waveform(wav[row, :n])[None]
    codes = np.asarray(vq_wav2vec_codes(config, params, utterance))
    expected = codes_to_ids(codes, VARS)[0]
    assert ids[row, : len(expected)].tolist() == expected.tolist()  # id = g0 * V + g1
    assert (ids[row, len(expected) :] == -1).all()
  assert len(np.unique(ids[ids >= 0])) > 1


def test_fresh_process_stablehlo_equals_library(vq_tokenizers, tmp_path):
  check_stablehlo_in_fresh_process(
      [str(vq_tokenizers[t][1]) for t in ("gumbel", "kmeans")], tmp_path
  )


def test_tokenize_command(vq_tokenizers, tmp_path):
  from jaxdisco.assets import demo_corpus_dir

  tok_dir = vq_tokenizers["kmeans"][1]
  audio = demo_corpus_dir() / "audio" / "demo-0003.flac"
  proc = run_cli(
      "tokenize",
      f"--tokenizer={tok_dir}",
      str(audio),
      f"--out={tmp_path / 'units.km'}",
      "--format=km",
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = (tmp_path / "units.km").read_text().splitlines()[0]
  assert line == " ".join(map(str, Tokenizer.load(tok_dir).encode(audio).tolist()))


def test_wrong_units_and_hf_export_are_refused(vq_tokenizers, tmp_path):
  workdir = vq_tokenizers["gumbel"][0]
  with pytest.raises(ValueError, match="units='vq_wav2vec'"):
    export_tokenizer(workdir, tmp_path / "a", units="codebook", progress=None)
  with pytest.raises(ValueError, match="no Hugging Face export"):
    export_tokenizer(
        workdir, tmp_path / "b", units="vq_wav2vec", hf_model_type="wav2vec2", progress=None
    )
