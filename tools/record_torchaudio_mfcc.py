r"""Records the HuBERT reference's MFCC features (torchaudio's Kaldi-compatible MFCC + deltas)
for two inputs, so that tests/test_mfcc.py compares jaxdisco's MFCCs with them without
torchaudio installed (the test extras pin a torch that no torchaudio release matches).

The committed recording was made with torchaudio 2.11.1 on torch 2.13.0 (CPU):

  pip install --no-deps --target /tmp/torchaudio-2.11.1 torchaudio==2.11.1
  rm /tmp/torchaudio-2.11.1/torchaudio/lib/*.so   # built for another torch; not used here
  PYTHONPATH=/tmp/torchaudio-2.11.1 python tools/record_torchaudio_mfcc.py \
      tests/data/torchaudio_mfcc.npz

`compliance.kaldi.mfcc` and `functional.compute_deltas` are pure PyTorch: without its
compiled extension torchaudio still imports and runs them. The features are what the HuBERT
reference's MFCC dump computes: `kaldi.mfcc(wav, sample_frequency=16000, use_energy=False)`,
then deltas and delta-deltas (window 5), concatenated to 39 dimensions, float32.
"""

from __future__ import annotations

import hashlib
import pathlib
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
UTTERANCE = "audio/demo-0001.flac"


def reference_mfcc(wav: np.ndarray) -> np.ndarray:
  import torch
  import torchaudio.functional as F  # pylint: disable=import-outside-toplevel
  from torchaudio.compliance import kaldi  # pylint: disable=import-outside-toplevel

  x = torch.from_numpy(np.asarray(wav, np.float32)).view(1, -1)
  features = kaldi.mfcc(x, sample_frequency=16000, use_energy=False).T
  deltas = F.compute_deltas(features)
  return torch.cat([features, deltas, F.compute_deltas(deltas)]).T.numpy()


def main(out: pathlib.Path) -> None:
  import torch
  import torchaudio

  sys.path.insert(0, str(REPO))
  sys.path.insert(0, str(REPO / "tests"))
  from jaxdisco.assets import demo_corpus_dir
  from jaxdisco.data.audio import read_audio
  from test_mfcc import _signal  # The closed-form test signal.

  path = demo_corpus_dir() / UTTERANCE
  wav = read_audio(path)
  np.savez_compressed(
      out,
      demo_utterance=reference_mfcc(wav),
      demo_utterance_sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
      signal_16123=reference_mfcc(_signal(16123)),
      torchaudio_version=torchaudio.__version__,
      torch_version=torch.__version__,
  )


if __name__ == "__main__":
  main(pathlib.Path(sys.argv[1]))
