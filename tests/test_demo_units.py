"""End to end on the shipped demo corpus: MFCC (100 Hz) -> k-means K=50 -> .km -> eval-units.

Reference points: HuBERT reports PNMI 0.25 for MFCC K=100 on LibriSpeech; the synthetic,
noise-free demo corpus (fit and scored on train) gives about 0.42 here. Units with the same
histogram but shuffled over frames give about 0.014.
"""

import subprocess
import sys

import numpy as np

from jaxdisco.assets import demo_corpus_dir
from jaxdisco.clustering import kmeans as km
from jaxdisco.clustering import labels as lb
from jaxdisco.data.audio import read_audio
from jaxdisco.data.manifest import read_manifest
from jaxdisco.data.mfcc import mfcc_features
from jaxdisco.evaluation import units as ev


def test_mfcc_units_carry_phone_information(tmp_path):
  corpus = demo_corpus_dir()
  manifest = read_manifest(corpus / "train.tsv")
  features = [mfcc_features(read_audio(manifest.audio_path(i))) for i in range(len(manifest))]
  result = km.fit_kmeans(
      np.concatenate(features), km.KMeans(k=50, batch_size=10_000, n_init=2, max_iter=20, seed=0)
  )
  km_path = tmp_path / "train.km"
  lb.write_km(km_path, lb.assign_utterances(features, result.centroids))
  lb.write_dict(tmp_path, 50)

  metrics, phones, units = ev.evaluate_km_file(
      km_path, corpus / "train.align.jsonl", manifest_path=corpus / "train.tsv", frame_rate=100
  )
  shuffled = ev.unit_quality(phones, np.random.default_rng(0).permutation(units))
  print(
      f"demo MFCC K=50: PNMI {metrics['pnmi']:.4f}, phone purity "
      f"{metrics['phone_purity']:.4f}, cluster purity {metrics['cluster_purity']:.4f}; "
      f"shuffled PNMI {shuffled['pnmi']:.4f}"
  )
  assert metrics["frame_diff"] == 0  # MFCC frame count == alignment frame count exactly
  assert metrics["pnmi"] > 0.15 and metrics["pnmi"] > 5 * shuffled["pnmi"]
  assert metrics["phone_purity"] > 2 * shuffled["phone_purity"]

  cli = subprocess.run(
      [
          sys.executable,
          "-m",
          "jaxdisco.cli",
          "eval-units",
          "--units",
          str(km_path),
          "--alignments",
          str(corpus / "train.align.jsonl"),
          "--manifest",
          str(corpus / "train.tsv"),
          "--frame-rate",
          "100",
      ],
      capture_output=True,
      text=True,
      check=False,
      timeout=120,
  )
  assert cli.returncode == 0, cli.stderr
  assert f"PNMI            {metrics['pnmi']:.4f}" in cli.stdout
