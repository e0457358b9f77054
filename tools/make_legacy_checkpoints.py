r"""Writes the tiny training workdirs that tests/test_checkpoint_compat.py resumes and loads.

They pin the on-disk format of checkpoints written by an older jaxdisco: run this with that
version importable, e.g. for the committed ones (written by commit fc50bab, before checkpoints
recorded their method and before absent config fields compared equal to their defaults):

  git worktree add /tmp/jaxdisco-fc50bab fc50bab
  PYTHONPATH=/tmp/jaxdisco-fc50bab python tools/make_legacy_checkpoints.py \
      tests/data/legacy_fc50bab

Each run trains 2 steps on the first 8 utterances of the demo corpus's train split and keeps
the step-2 checkpoint: `wav2vec2/` (configs/demo.py) and `hubert/` (configs/hubert_demo.py, on
seeded random 100 Hz labels written beside it as `labels/train.km`, K = 8).
"""

from __future__ import annotations

import pathlib
import shutil
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
NUM_UTTERANCES = 8
NUM_CLASSES = 8


def _tiny(config):
  m = config.model
  m.conv_layers = "[(16, 10, 5)] + [(16, 3, 2)] * 4 + [(16, 2, 2)] * 2"
  m.embed_dim, m.num_layers, m.num_heads, m.ffn_dim = 16, 2, 2, 32
  m.pos_conv_kernel, m.pos_conv_groups = 8, 4
  if "latent_vars" in m:
    m.final_dim, m.latent_vars, m.latent_groups = 16, 8, 2
  else:
    m.final_dim = 16
  config.data.crop_samples = config.data.min_samples = 16_000
  config.data.batch_size = 2
  config.data.verify_files = False
  if "num_negatives" in config.objective:
    config.objective.num_negatives = 4
  config.optim.warmup_steps = 1
  config.train.num_steps = 2
  config.train.log_every = 1
  config.train.eval_every = config.train.checkpoint_every = 2
  config.train.keep_checkpoints = 1
  config.data.valid_manifest = ""
  return config


def _load(name):
  from ml_collections import config_flags

  path = REPO / "configs" / f"{name}.py"
  loader = config_flags.config_flags._LoadConfigModule  # pylint: disable=protected-access
  return loader(name, str(path)).get_config()


def write_manifest(out: pathlib.Path) -> pathlib.Path:
  """The first NUM_UTTERANCES train utterances of the demo corpus, rooted at the corpus."""
  from jaxdisco.assets import demo_corpus_dir

  corpus = demo_corpus_dir()
  lines = (corpus / "train.tsv").read_text().splitlines()
  path = out / "train.tsv"
  root = str(corpus / lines[0].strip())
  path.write_text("\n".join([root] + lines[1 : NUM_UTTERANCES + 1]) + "\n")
  return path


def write_labels(out: pathlib.Path, manifest: pathlib.Path) -> pathlib.Path:
  """Seeded random 100 Hz labels, one line per utterance of `manifest`."""
  from jaxdisco.data.mfcc import num_frames

  rng = np.random.default_rng(0)
  lines = [
      " ".join(map(str, rng.integers(0, NUM_CLASSES, num_frames(int(line.split("\t")[1])))))
      for line in manifest.read_text().splitlines()[1:]
  ]
  (out / "labels").mkdir(parents=True, exist_ok=True)
  path = out / "labels" / "train.km"
  path.write_text("\n".join(lines) + "\n")
  return path


def main(out: pathlib.Path) -> None:
  from jaxdisco.train.pretrain import train_and_evaluate

  if out.exists():
    shutil.rmtree(out)
  out.mkdir(parents=True)
  manifest = write_manifest(out)
  demo = _tiny(_load("demo"))
  demo.data.train_manifest = str(manifest)
  train_and_evaluate(demo, out / "wav2vec2")

  hubert = _tiny(_load("hubert_demo"))
  hubert.data.train_manifest = str(manifest)
  hubert.labels.train = str(write_labels(out, manifest))
  hubert.labels.valid = ""
  hubert.labels.num_classes = NUM_CLASSES
  train_and_evaluate(hubert, out / "hubert")
  for run in ("wav2vec2", "hubert"):  # Keep only what a resume and a load read.
    for extra in ("events", "curves.png"):
      for p in (out / run).glob(f"{extra}*"):
        p.unlink() if p.is_file() else shutil.rmtree(p)


if __name__ == "__main__":
  main(pathlib.Path(sys.argv[1]))
