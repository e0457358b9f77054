r"""Units under an overlapping speaker: agreement of clean and mixed utterances, per tokenizer.

  python tools/mixing_robustness_table.py --tokenizer hubert=HUBERT_TOK \
    --tokenizer wavlm=WAVLM_TOK \
    [--split valid_ext] [--ratios 0,5,10] [--overlaps 0.5,1]

Every utterance of the demo corpus split gets an utterance of another speaker (espeak voice)
over a share of it (--overlaps: 0.5 = a half-utterance chunk at a seeded position, what WavLM
trains on at its largest; 1 = all of it) at each energy ratio (clean : added, dB); each
tokenizer's units of the mixture are compared with its units of the clean utterance on the
overlapped frames (`jaxdisco.evaluation.mixing_robustness`). The same mixtures for every tokenizer, so the gain
of the second over the first is a paired bootstrap over utterances. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json

from jaxdisco.assets import demo_corpus_dir
from jaxdisco.data.audio import read_audio
from jaxdisco.data.manifest import read_manifest
from jaxdisco.evaluation import mixing_robustness as mr
from jaxdisco.tokenizer import Tokenizer


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tokenizer", action="append", required=True, help="NAME=DIRECTORY")
  parser.add_argument("--split", default="valid_ext", help="demo corpus split (a .tsv there)")
  parser.add_argument("--ratios", default="0,5,10", help="energy ratios in dB, comma-separated")
  parser.add_argument("--overlaps", default="0.5,1", help="shares of each utterance covered")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  corpus = demo_corpus_dir()
  meta = {r["id"]: r for r in map(json.loads, open(corpus / "meta.jsonl"))}
  manifest = read_manifest(corpus / f"{args.split}.tsv")
  speakers = [meta[manifest.utterance_id(i)]["voice"] for i in range(len(manifest))]
  partner = mr.different_speaker_partners(speakers, seed=args.seed)
  waves = [read_audio(manifest.audio_path(i)) for i in range(len(manifest))]
  interferers = [waves[j] for j in partner]
  tokenizers = dict(item.split("=", 1) for item in args.tokenizer)
  print(f"{len(waves)} utterances of {args.split}, {len(set(speakers))} voices\n")
  print("| overlap | energy ratio (dB) | " + " | ".join(f"{n} agreement" for n in tokenizers)
        + (" | gain, last vs first (± s.d., P(gain > 0)) |" if len(tokenizers) > 1 else " |"))
  print("|---:|---:|" + "---:|" * (len(tokenizers) + (len(tokenizers) > 1)))
  loaded = {name: Tokenizer.load(path) for name, path in tokenizers.items()}
  for overlap in (float(o) for o in args.overlaps.split(",")):
    for ratio in (float(r) for r in args.ratios.split(",")):
      results = {
          name: mr.unit_agreement_under_mixing(
              lambda w, t=tok: t.encode(list(w)), waves, interferers, ratio, overlap=overlap,
              seed=args.seed,
          )
          for name, tok in loaded.items()
      }
      cells = [f"{r['agreement']:.3f} ± {r['std']:.3f}" for r in results.values()]
      if len(results) > 1:
        first, last = list(results.values())[0], list(results.values())[-1]
        gain = mr.agreement_gain(first, last, seed=args.seed)
        cells.append(f"{gain['gain']:+.3f} ± {gain['std']:.3f} ({gain['p_positive']:.2f})")
      print(f"| {overlap:g} | {ratio:g} | " + " | ".join(cells) + " |")

if __name__ == "__main__":
  main()
