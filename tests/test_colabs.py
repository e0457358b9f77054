"""The Colab notebooks in colabs/ run top to bottom at their tiny size on CPU (nbclient, one
kernel each, the suite's compile cache), and are what tools/make_colabs.py generates."""

import json
import math
import os
import pathlib
import re
import subprocess
import sys

import nbclient  # The test extras install nbclient, nbformat and ipykernel.
import nbformat
import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
COLABS = REPO / "colabs"


def execute(name: str, cwd: pathlib.Path, timeout: int = 900):
  """Runs colabs/<name>.ipynb in `cwd` with JAXDISCO_COLAB_TINY=1; returns the executed notebook
  and its text output (streams and results) joined. `timeout` is per cell, a hang guard only."""
  nb = nbformat.read(COLABS / f"{name}.ipynb", as_version=4)
  # The kernel inherits this environment: the tiny switch, CPU, and the suite's compile cache
  # (conftest sets JAX_COMPILATION_CACHE_DIR).
  env = dict(os.environ, JAXDISCO_COLAB_TINY="1", JAX_PLATFORMS="cpu")
  for var in ("XLA_FLAGS", "MPLBACKEND"):  # The notebook sets the first; inline plots need
    env.pop(var, None)  # the kernel's default matplotlib backend.
  client = nbclient.NotebookClient(
      nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
  )
  client.execute(env=env)
  return nb, _text(nb)


def _text(nb) -> str:
  parts = []
  for cell in nb.cells:
    for output in cell.get("outputs", []):
      if output.output_type == "stream":
        parts.append(output.text)
      elif output.output_type in ("execute_result", "display_data"):
        parts.append(output.data.get("text/plain", ""))
  return "\n".join(parts)


def _images(nb) -> int:
  return sum(
      "image/png" in output.get("data", {})
      for cell in nb.cells
      for output in cell.get("outputs", [])
  )


def test_notebooks_match_their_generator():
  proc = subprocess.run(
      [sys.executable, str(REPO / "tools" / "make_colabs.py"), "--check"],
      capture_output=True,
      text=True,
      timeout=60,
  )
  assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("name", ["quickstart", "pretrain_wav2vec2", "hubert_loop", "scaling"])
def test_notebook_structure(name):
  """Install cell first (installing only when jaxdisco is missing), then one size switch."""
  from IPython.core.inputtransformer2 import TransformerManager

  nb = nbformat.read(COLABS / f"{name}.ipynb", as_version=4)
  nbformat.validate(nb)
  code = [c for c in nb.cells if c.cell_type == "code"]
  install = TransformerManager().transform_cell(code[0].source)
  assert "except ImportError:" in install
  assert "get_ipython().run_line_magic('pip', 'install -q ./jaxdisco-src')" in install
  assert "get_ipython().system('git clone -q --depth 1 {JAXDISCO_SOURCE} jaxdisco-src')" in install
  switches = [c for c in code if "JAXDISCO_COLAB_TINY" in c.source]
  assert len(switches) == 1 and "parameters" in switches[0].metadata.get("tags", [])
  assert code.index(switches[0]) <= 2


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
  """One working directory for the pretrain and quickstart notebooks: the quickstart reuses the
  finished tiny run there, as a Colab user running both would."""
  return tmp_path_factory.mktemp("colab_demo")


def test_pretrain_notebook(demo_dir):
  import conftest

  nb, text = execute("pretrain_wav2vec2", demo_dir)
  workdir = demo_dir / "runs" / "wav2vec2_demo_tiny"
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  losses = [r["loss"] for r in rows if "loss" in r]
  assert len(losses) == 6 and all(math.isfinite(x) for x in losses), rows
  valid = [r["valid_loss"] for r in rows if "valid_loss" in r]
  assert len(valid) == 2 and all(math.isfinite(x) for x in valid), rows
  # The notebook's shrink() is the suite's shrink_for_tests: they must not drift apart.
  tiny = conftest.shrink_for_tests(conftest.load_config("demo"))
  assert json.loads((workdir / "config.json").read_text())["model"] == json.loads(
      tiny.model.to_json()
  )
  assert "6 logged train steps" in text
  assert "frames x 32 dims, 3 hidden states" in text
  assert _images(nb) == 2  # Curves and hidden states (train_and_evaluate keeps pyplot usable).


def test_quickstart_notebook(demo_dir):
  nb, text = execute("quickstart", demo_dir)
  tokenizer = demo_dir / "runs" / "wav2vec2_demo_tiny" / "tokenizer"
  manifest = json.loads((tokenizer / "tokenizer.json").read_text())
  assert manifest["units"] == "kmeans" and manifest["vocab_size"] == 8 and manifest["layer"] == 2
  assert "kmeans units, vocabulary 8, 50 frames/s, layer 2" in text
  # demo-0129 is 49877 samples: floor((49877 - 400) / 320) + 1 = 155 frames.
  assert "demo-0129: 3.12 s -> 155 frames" in text
  pnmi = float(re.search(r"valid: \d+ frames, PNMI ([0-9.]+)", text).group(1))
  assert 0 < pnmi < 1
  assert _images(nb) == 1


def test_hubert_loop_notebook(tmp_path):
  nb, text = execute("hubert_loop", tmp_path)
  work = tmp_path / "runs" / "hubert_loop_tiny"
  rows = json.loads((work / "units_table.json").read_text())
  assert len(rows) == 6  # MFCC, iteration 1, iteration 2 units x train, valid
  assert all(0 < r["metrics"]["pnmi"] < 1 and r["k"] == 8 for r in rows), rows
  assert "8 stages" in text
  markdown = [
      o.data["text/markdown"]
      for c in nb.cells
      for o in c.get("outputs", [])
      if "text/markdown" in o.get("data", {})
  ]
  assert len(markdown) == 1 and "| MFCC k-means | 8 | train |" in markdown[0]
  assert _images(nb) == 4  # Quality bars, training curves, two co-occurrence plots.


def test_scaling_notebook(tmp_path):
  _, text = execute("scaling", tmp_path)
  assert "8 devices on cpu" in text
  assert "mesh {'data': 1, 'fsdp': 4, 'tensor': 2}" in text
  # fsdp splits the model dimension, tensor the FFN: each device holds 1/8 of the kernel.
  assert (
      "layer_0/ffn_in/kernel (32, 64): spec P('fsdp', 'tensor'), shard (8, 32) on each of 8 "
      "devices"
  ) in text
  assert "('embed', 'mlp')     (33, 64) -> P(None, 'tensor')" in text  # 33 stays whole
  assert "Parameter layout on mesh {'data': 1, 'fsdp': 4, 'tensor': 2}" in text
  metrics = tmp_path / "runs" / "scaling_demo" / "metrics.jsonl"
  rows = [json.loads(line) for line in metrics.read_text().splitlines()]
  assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
  assert all(math.isfinite(r["loss"]) for r in rows)
  assert "wav2vec2 pretraining: 0.04M params" in text and "mesh {'data': 2, 'fsdp': 4," in text
  # The demo model lowered for 64 chips: fsdp=64 splits nearly every parameter byte.
  pod = re.search(r"mesh \{'data': 1, 'fsdp': 64, 'tensor': 1\}: .* ([0-9.]+)% of parameter", text)
  assert pod and float(pod.group(1)) < 5
