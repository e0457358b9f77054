#!/usr/bin/env python3
"""A fairseq-trained HuBERT checkpoint of the demo size, for continued pretraining in jaxdisco.

    python tools/make_fairseq_hubert_demo.py --out fairseq-hubert-demo     # ~2 min on 2 cores
    jaxdisco pretrain --config configs/hubert_demo.py --workdir hubert-continued \\
      --config.train.init_from=fairseq-hubert-demo/checkpoint_last.pt \\
      --config.labels.train=fairseq-hubert-demo/train_ext.km \\
      --config.labels.valid=fairseq-hubert-demo/valid_ext.km \\
      --config.objective.label_rate=100 --config.train.num_steps=200

What it does, on the demo corpus's extended splits:
  1. MFCC k-means(50) labels at 100 Hz with jaxdisco's library (the HuBERT loop's first stage):
     `train_ext.km`, `valid_ext.km`, `dict.km.txt`.
  2. Builds fairseq's `HubertModel` with the architecture of `configs/hubert_demo.py` (64-channel
     layer-norm conv encoder with bias, 3 x 128 pre-LN Transformer, final_dim 64) and trains it
     in PyTorch with fairseq's own forward (its masking, its logits; loss = masked + unmasked
     cross-entropy + 10 x feature penalty, as the demo weighs them) for `--steps` updates of
     8 random 1 s crops, Adam at 1e-3 after 50 warm-up updates.
  3. Saves it the way fairseq's `checkpoint_utils.save_checkpoint` does (`Trainer.state_dict()`
     through `torch_persistent_save`, the label Dictionary in task_state) as
     `checkpoint_last.pt`, and prints the last logged masked accuracy.
Needs fairseq (and torch); jaxdisco itself never imports them.
"""

from __future__ import annotations

import argparse
import pathlib
import time

import numpy as np
import torch


def mfcc_labels(out: pathlib.Path, k: int) -> dict[str, list[np.ndarray]]:
  from jaxdisco.assets import demo_corpus_dir
  from jaxdisco.clustering import kmeans as km
  from jaxdisco.clustering import labels as lb
  from jaxdisco.data.audio import read_audio
  from jaxdisco.data.manifest import read_manifest
  from jaxdisco.data.mfcc import mfcc_features

  corpus = demo_corpus_dir()
  feats = {}
  for split in ("train_ext", "valid_ext"):
    manifest = read_manifest(corpus / f"{split}.tsv")
    feats[split] = [mfcc_features(read_audio(manifest.audio_path(i))) for i in range(len(manifest))]
  result = km.fit_kmeans(
      np.concatenate(feats["train_ext"]), km.KMeans(k=k, n_init=2, max_iter=20, seed=0)
  )
  labels = {}
  for split, f in feats.items():
    labels[split] = lb.assign_utterances(f, result.centroids)
    lb.write_km(out / f"{split}.km", labels[split])
  lb.write_dict(out, k)
  return labels


def build_model(k: int):
  from fairseq.data.dictionary import Dictionary
  from fairseq.models.hubert.hubert import HubertConfig, HubertModel
  from fairseq.tasks.hubert_pretraining import HubertPretrainingConfig

  dictionary = Dictionary()
  for unit in range(k):  # As fairseq reads dict.km.txt: unit "u" becomes row 4 + u.
    dictionary.add_symbol(str(unit))
  cfg = HubertConfig(
      _name="hubert",
      label_rate=100.0,
      extractor_mode="layer_norm",
      conv_feature_layers="[(64, 10, 5)] + [(64, 3, 2)] * 4 + [(64, 2, 2)] * 2",
      conv_bias=True,
      encoder_layers=3,
      encoder_embed_dim=128,
      encoder_ffn_embed_dim=512,
      encoder_attention_heads=4,
      layer_norm_first=True,
      conv_pos=32,
      conv_pos_groups=8,
      final_dim=64,
      untie_final_proj=True,
      dropout=0.05,
      attention_dropout=0.05,
      dropout_input=0.05,
      dropout_features=0.05,
      mask_prob=0.8,
  )
  task = HubertPretrainingConfig(
      _name="hubert_pretraining", data="demo_corpus", labels=["km"], label_rate=100.0,
      normalize=True,
  )
  return HubertModel(cfg, task, [dictionary]), cfg, task, dictionary


def batches(labels, batch_size: int, seed: int):
  """Random 1 s crops (aligned to the 10 ms labels) of normalized audio + their labels."""
  from jaxdisco.assets import demo_corpus_dir
  from jaxdisco.data.audio import read_audio
  from jaxdisco.data.manifest import read_manifest

  manifest = read_manifest(demo_corpus_dir() / "train_ext.tsv")
  waves = [read_audio(manifest.audio_path(i)).astype(np.float32) for i in range(len(manifest))]
  waves = [(w - w.mean()) / (w.std() + 1e-5) for w in waves]  # task.normalize, per utterance
  rng = np.random.default_rng(seed)
  while True:
    wav, lab = [], []
    for i in rng.integers(0, len(waves), batch_size):
      last_frame = min(len(waves[i]) - 16000, 160 * (len(labels[i]) - 100)) // 160
      start = int(rng.integers(0, max(1, last_frame + 1)))
      wav.append(waves[i][160 * start : 160 * start + 16000])
      lab.append(labels[i][start : start + 100] + 4)  # Dictionary indices.
    yield torch.from_numpy(np.stack(wav)), torch.from_numpy(np.stack(lab).astype(np.int64))


def train(model, labels, steps: int, log_every: int = 50):
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-6)
  schedule = torch.optim.lr_scheduler.LambdaLR(
      optimizer, lambda s: min((s + 1) / 50, max(0.0, (steps - s) / max(1, steps - 50)))
  )
  model.train()
  data = batches(labels, 8, seed=0)
  history, last = [], {}
  t0 = time.perf_counter()
  for step in range(1, steps + 1):
    wav, target = next(data)
    out = model(wav, target_list=[target], padding_mask=torch.zeros_like(wav, dtype=torch.bool))
    logits_m, logits_u = out["logit_m_list"][0], out["logit_u_list"][0]
    # fairseq's targets: the positive is column 0 of each row (HubertModel.compute_nce).
    loss_m = torch.nn.functional.cross_entropy(logits_m, logits_m.new_zeros(len(logits_m)).long())
    loss_u = torch.nn.functional.cross_entropy(logits_u, logits_u.new_zeros(len(logits_u)).long())
    loss = loss_m + loss_u + 10.0 * out["features_pen"]
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
    optimizer.step()
    schedule.step()
    accuracy = (logits_m.argmax(-1) == 0).float().mean().item()
    history.append((loss.item(), loss_m.item(), accuracy))
    if step % log_every == 0 or step == steps:
      mean = np.mean(history, axis=0)
      last = {"loss": mean[0], "masked_loss": mean[1], "masked_accuracy": mean[2]}
      history = []
      print(
          f"fairseq step {step}: loss {mean[0]:.3f} masked_loss {mean[1]:.3f} "
          f"masked accuracy {mean[2]:.3f} ({time.perf_counter() - t0:.0f} s)",
          flush=True,
      )
  return last


def save(path: pathlib.Path, model, cfg, task, dictionary, steps: int) -> None:
  from fairseq import checkpoint_utils
  from fairseq.dataclass.configs import FairseqConfig
  from omegaconf import OmegaConf, open_dict

  full = OmegaConf.structured(FairseqConfig())
  with open_dict(full):
    full.model = OmegaConf.structured(cfg)
    full.task = OmegaConf.structured(task)
  state = {
      "args": None,
      "cfg": OmegaConf.to_container(full, resolve=True, enum_to_str=True),
      "model": model.state_dict(),
      "criterion": {},
      "optimizer_history": [
          {
              "criterion_name": "HubertCriterion",
              "optimizer_name": "FairseqAdam",
              "lr_scheduler_state": {"best": None},
              "num_updates": steps,
          }
      ],
      "task_state": {"dictionaries": [dictionary]},
      "extra_state": {"metrics": {}, "previous_training_time": 0.0},
  }
  checkpoint_utils.torch_persistent_save(state, str(path))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", type=pathlib.Path, required=True)
  parser.add_argument("--steps", type=int, default=300, help="fairseq training updates")
  parser.add_argument("--k", type=int, default=50, help="MFCC k-means clusters")
  args = parser.parse_args()
  args.out.mkdir(parents=True, exist_ok=True)
  torch.manual_seed(0)
  torch.set_num_threads(2)
  labels = mfcc_labels(args.out, args.k)
  model, cfg, task, dictionary = build_model(args.k)
  last = train(model, labels["train_ext"], args.steps)
  save(args.out / "checkpoint_last.pt", model.eval(), cfg, task, dictionary, args.steps)
  print(f"wrote {args.out / 'checkpoint_last.pt'} after {args.steps} fairseq updates: {last}")


if __name__ == "__main__":
  main()
