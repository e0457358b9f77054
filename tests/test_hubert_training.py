"""HuBERT iteration 1 at tiny size on the demo corpus: MFCC k-means labels -> masked prediction."""

import numpy as np
import pytest

from conftest import load_config, shrink_for_tests
from jaxdisco.assets import demo_corpus_dir
from jaxdisco.clustering import kmeans as km
from jaxdisco.clustering import labels as lb
from jaxdisco.data.audio import read_audio
from jaxdisco.data.manifest import read_manifest
from jaxdisco.data.mfcc import mfcc_features
from jaxdisco.train.metrics import read_metrics
from jaxdisco.train.pretrain import train_and_evaluate

K = 20


@pytest.fixture(scope="module")
def mfcc_labels(tmp_path_factory):
  """k-means(20) of the demo corpus's MFCCs, written as train/valid .km files (100 Hz)."""
  out = tmp_path_factory.mktemp("labels")
  corpus = demo_corpus_dir()
  feats = {}
  for split in ("train", "valid"):
    manifest = read_manifest(corpus / f"{split}.tsv")
    feats[split] = [mfcc_features(read_audio(manifest.audio_path(i))) for i in range(len(manifest))]
  result = km.fit_kmeans(
      np.concatenate(feats["train"]), km.KMeans(k=K, batch_size=10_000, n_init=1, max_iter=10)
  )
  for split, f in feats.items():
    lb.write_km(out / f"{split}.km", lb.assign_utterances(f, result.centroids))
  lb.write_dict(out, K)
  return out


@pytest.mark.parametrize("name", ["hubert_base_iter1", "hubert_large"])
def test_hubert_trains_on_mfcc_units(name, mfcc_labels, tmp_path):
  config = shrink_for_tests(load_config(name))
  demo = load_config("demo")
  config.data.train_manifest = demo.data.train_manifest
  config.data.valid_manifest = demo.data.valid_manifest
  config.labels.train = str(mfcc_labels / "train.km")
  config.labels.valid = str(mfcc_labels / "valid.km")
  config.labels.num_classes = K
  config.objective.label_rate = 100.0
  config.train.num_steps = 40
  config.train.log_every = 10
  config.train.eval_every = 40
  config.optim.lr = 2e-3
  config.optim.warmup_steps = 5
  train_and_evaluate(config, tmp_path)
  rows = [r for r in read_metrics(tmp_path) if "accuracy" in r]
  assert all(np.isfinite(r["loss"]) for r in rows)
  # Masked prediction of MFCC clusters is learnable from the first steps (unlike the
  # contrastive task): accuracy must beat chance (1/K) clearly by the end.
  assert rows[-1]["accuracy"] > 2.0 / K, rows[-1]
  assert rows[-1]["masked_loss"] < rows[0]["masked_loss"]
  assert any("valid_accuracy" in r for r in read_metrics(tmp_path))
