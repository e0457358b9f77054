#!/usr/bin/env python3
"""Synthesize a *checking* corpus: speech the demo recipes were never tuned on.

The demo corpus (`jaxdisco/assets/demo_corpus`) is where the demo configs' sizes, steps and
K were chosen; numbers measured there are tuning numbers. This corpus is for checking that a
recipe holds beyond it. It shares only the text grammar (so the phone inventory is comparable)
and differs in everything the acoustics depend on:

  * voices: none of the demo's 14. Half use espeak-ng's Klatt formant synthesizer (`+klatt*`
    variants), a different synthesis method from the demo's default one, the others accents
    and variants the demo lacks (Lancaster, West Midlands; m1, m4, m6, f1);
  * speaking rates 110-125 and 205-220 wpm (the demo: 130-190), base pitches 15-25 and 80-90
    (the demo: 30-70);
  * stationary noise added to every utterance at an SNR drawn from 15-30 dB (the demo is clean);
  * its own sentence seed.

Its size follows the held-out corpus of issue 19 (576 train + 64 valid utterances), written
as Ogg Opus with fairseq manifests and espeak's phone alignments, in the demo corpus's formats:

    python tools/make_checking_corpus.py --out /tmp/checking_corpus

then e.g. the demo loop on it, with only the data and alignments overridden:

    jaxdisco hubert-iterate --config configs/hubert_demo.py --workdir runs/hubert-checking \\
      --config.data.train_manifest=/tmp/checking_corpus/train.tsv \\
      --config.data.valid_manifest=/tmp/checking_corpus/valid.tsv \\
      --config.loop.train_alignments=/tmp/checking_corpus/train.align.jsonl \\
      --config.loop.valid_alignments=/tmp/checking_corpus/valid.align.jsonl

Requires espeak-ng (`apt-get install espeak-ng libespeak-ng1`), numpy, soundfile and soxr.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import random
import shutil
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import make_demo_corpus as demo  # noqa: E402  pylint: disable=wrong-import-position

VOICES = [
    "en-gb-x-gbclan+klatt",
    "en-gb-x-gbcwmd+klatt2",
    "en-us+klatt3",
    "en-gb-x-gbclan+m4",
    "en-gb-x-gbcwmd+f1",
    "en-us+m6",
]
RATES = [110, 115, 120, 125, 205, 210, 215, 220]
PITCHES = [15, 20, 25, 80, 85, 90]
SNR_DB = (15.0, 30.0)


def add_noise(audio: np.ndarray, rng: random.Random) -> np.ndarray:
  """White noise at an SNR uniform in SNR_DB, measured against the utterance's speech power
  (its non-silent samples), then the peak rescaled to the demo corpus's."""
  speech = audio[np.abs(audio) > 1e-4]
  power = float(np.mean(np.square(speech))) if speech.size else 1e-6
  snr = rng.uniform(*SNR_DB)
  noise_rng = np.random.default_rng(rng.getrandbits(32))
  noise = noise_rng.standard_normal(audio.shape) * np.sqrt(power / 10 ** (snr / 10))
  out = audio + noise
  return (out * (demo.PEAK / max(np.max(np.abs(out)), 1e-9))).astype(np.float32)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  ap.add_argument("--out", type=pathlib.Path, required=True)
  ap.add_argument("--num-train", type=int, default=576)
  ap.add_argument("--num-valid", type=int, default=64)
  ap.add_argument("--seed", type=int, default=20261203)
  args = ap.parse_args(argv)
  for name in ("num_train", "num_valid"):
    if getattr(args, name) < 1:
      ap.error(f"--{name.replace('_', '-')}: expected a count >= 1, got {getattr(args, name)}")
  total = args.num_train + args.num_valid
  rng = random.Random(args.seed)
  sentences = demo.make_sentences(rng, 4 * total + 50)
  audio_dir = args.out / "audio"
  if audio_dir.exists():
    shutil.rmtree(audio_dir)
  audio_dir.mkdir(parents=True)
  tts = demo.Espeak()
  utts = demo.synthesize(
      tts,
      rng,
      sentences,
      args.num_train,
      args.num_valid,
      audio_dir,
      extended=True,
      voices=VOICES,
      rates=RATES,
      pitches=PITCHES,
      prefix="check",
      transform=add_noise,
  )
  tts.close()
  stats = {"seed": args.seed, "espeak_version": demo.espeak_version()}
  for split in ("train", "valid"):
    rows = [u for u in utts if u["split"] == f"{split}_ext"]
    stats[split] = demo.write_split(args.out, split, rows)
  with open(args.out / "meta.jsonl", "w") as f:
    keys = ("id", "split", "voice", "rate", "pitch", "text", "duration_s")
    f.writelines(json.dumps({k: u[k] for k in keys}) + "\n" for u in utts)
  with open(args.out / "speakers.tsv", "w") as f:  # Voice = speaker, for across-speaker ABX.
    f.writelines(f"{u['id']}\t{u['voice']}\n" for u in utts)
  secs = stats["train"]["seconds"] + stats["valid"]["seconds"]
  print(
      f"wrote {args.out}: train={stats['train']['count']} valid={stats['valid']['count']} "
      f"utterances, {secs / 60:.1f} min, voices {len(VOICES)}, espeak-ng {stats['espeak_version']}"
  )
  return 0


if __name__ == "__main__":
  sys.exit(main())
