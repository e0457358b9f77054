"""Tokenizer throughput: seconds of audio tokenized per second, jaxdisco vs transformers (CPU).

    python -m benchmarks tokenize_throughput            # 16 utterances x 10 s
    python -m benchmarks tokenize_throughput --quick    # 4 utterances x 4 s; main(argv) returns rows

(Not named tokenize.py: run as a script, such a file would shadow the standard library's
`tokenize` for every benchmark in this folder.)

The model is BASE size (7-layer conv encoder, 768-dim post-LN Transformer), randomly
initialised, cut at layer 6, with K=500 random centroids: the HuBERT iteration-2 tokenizer
shape. Both sides read the same export: jaxdisco runs `Tokenizer.encode` (jit, all devices);
PyTorch loads `hf/` with `transformers.HubertModel` and takes hidden_states[-1] plus the nearest
centroid (`torch.cdist`). Each side runs once untimed (compilation, warm-up), then the timed
pass over the same utterances, in batches of `--batch-size`. "agreement" is the fraction of
frames where both give the same unit.
"""

from __future__ import annotations

import argparse
import pathlib
import tempfile
import time

import jax
import numpy as np
from flax import linen as nn

from jaxdisco.export.huggingface import save_hf_checkpoint
from jaxdisco.export.tokenizer import export_tokenizer
from jaxdisco.models.config import ModelConfig
from jaxdisco.models.wav2vec2 import Wav2Vec2Backbone
from jaxdisco.tokenizer import Tokenizer

LAYER, K = 6, 500


def _build(directory: pathlib.Path) -> Tokenizer:
  cfg = ModelConfig()  # BASE
  variables = Wav2Vec2Backbone(cfg).init(jax.random.key(0), np.zeros((1, 16000), np.float32))
  save_hf_checkpoint(
      directory / "source",
      cfg,
      {"params": {"backbone": nn.meta.unbox(variables)["params"]}},
      "hubert",
  )
  centroids = np.random.default_rng(0).standard_normal((K, cfg.embed_dim)).astype(np.float32)
  out = export_tokenizer(
      directory / "source",
      directory / "tokenizer",
      layer=LAYER,
      centroids=centroids,
      export_lengths=(),
      progress=None,
  )
  return Tokenizer.load(out)


def _torch_units(hf_dir: pathlib.Path, waves, batch_size: int) -> tuple[list, float]:
  import torch
  import transformers

  model = transformers.HubertModel.from_pretrained(hf_dir).eval()
  centroids = torch.from_numpy(np.load(hf_dir / "centroids.npy"))

  def run():
    units = []
    for start in range(0, len(waves), batch_size):
      batch = torch.from_numpy(np.stack(waves[start : start + batch_size]))
      with torch.no_grad():
        hidden = model(batch, output_hidden_states=True).hidden_states[-1]
        dist = torch.cdist(hidden, centroids.expand(hidden.shape[0], -1, -1))
      units.extend(dist.argmin(-1).numpy())
    return units

  run()  # warm-up
  start = time.perf_counter()
  units = run()
  return units, time.perf_counter() - start


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--quick", action="store_true", help="4 utterances x 4 s")
  parser.add_argument("--utterances", type=int, default=None)
  parser.add_argument("--seconds", type=float, default=None)
  parser.add_argument("--batch-size", type=int, default=4)
  parser.add_argument("--skip-torch", action="store_true")
  args = parser.parse_args(argv)
  count = args.utterances or (4 if args.quick else 16)
  seconds = args.seconds or (4.0 if args.quick else 10.0)
  rng = np.random.default_rng(0)
  # Equal lengths, so neither side pays for padding; 0.1 * noise is speech-like in level.
  waves = [0.1 * rng.standard_normal(int(seconds * 16000)).astype(np.float32) for _ in range(count)]
  audio_seconds = count * seconds
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    tok = _build(pathlib.Path(tmp))
    tok.encode(waves[: args.batch_size], batch_size=args.batch_size)  # compile
    start = time.perf_counter()
    ours = tok.encode(waves, batch_size=args.batch_size)
    wall = time.perf_counter() - start
    device = f"{jax.devices()[0].platform} x{len(jax.devices())}"
    rows.append(
        {
            "backend": f"jaxdisco ({device})",
            "audio_s": audio_seconds,
            "wall_s": wall,
            "audio_s_per_s": audio_seconds / wall,
            "agreement": 1.0,
        }
    )
    if not args.skip_torch:
      import torch

      theirs, wall = _torch_units(tok.directory / "hf", waves, args.batch_size)
      agreement = float(np.mean(np.concatenate(ours) == np.concatenate(theirs)))
      rows.append(
          {
              "backend": f"transformers (torch cpu, {torch.get_num_threads()} threads)",
              "audio_s": audio_seconds,
              "wall_s": wall,
              "audio_s_per_s": audio_seconds / wall,
              "agreement": agreement,
          }
      )
  print(f"BASE, layer {LAYER}, K={K}; {count} utterances x {seconds:g} s, batch {args.batch_size}")
  print(f"{'backend':<44} {'audio s':>8} {'wall s':>8} {'audio s/s':>10} {'agreement':>10}")
  for r in rows:
    print(
        f"{r['backend']:<44} {r['audio_s']:>8.1f} {r['wall_s']:>8.2f} "
        f"{r['audio_s_per_s']:>10.1f} {r['agreement']:>10.4f}"
    )
  return rows


if __name__ == "__main__":
  main()
