r"""Train-step throughput of wav2vec 2.0 and HuBERT: jaxdisco vs Hugging Face Flax and PyTorch.

    python -m benchmarks train_step            # CPU config, 5 interleaved rounds
    python -m benchmarks train_step --quick    # 2 rounds (a smoke run)
    python benchmarks/train_step.py --peers none --ablations   # jaxdisco variants only

Config (`--size cpu`, the default): batch 4 x 2 s of 16 kHz audio, the standard 7 x 512 conv
stack, 4 layers x 256, 4 heads, FFN 1024, G x V = 2 x 320, 100 negatives, mask 0.65/10, no
dropout, LARGE-style norms (layer-norm extractor with conv bias, pre-LN Transformer). With a
GPU, `--size base` / `--size large` run the published sizes (15.6 s crops, batch 8), in
bfloat16 by default (`--dtype`); `bash benchmarks/gpu.sh` runs the GPU set.

Compared in one run, the same batch shapes for every implementation:
  * jaxdisco: the trainer's jitted step (`jaxdisco.train.step.make_train_step`): masks and
    negatives drawn inside the step, forward, backward, AdamW;
  * `transformers` PyTorch `Wav2Vec2ForPreTraining` (this venv): masks and negatives drawn with
    its numpy helpers, forward with its contrastive + diversity loss, backward, AdamW step;
  * `transformers` 4.57 `FlaxWav2Vec2ForPreTraining`, the last Flax implementation, in its own
    virtualenv (`benchmarks/.venv-hf-flax`, created on first use, see `hf_flax_env.py`): a jitted
    step with the contrastive + diversity loss written as in its pretraining example, AdamW;
  * jaxdisco HuBERT (500 classes, 50 Hz labels) alone: transformers has no HuBERT pretraining
    model to compare with;
  * the dense matmul rate of this machine in the run's dtype (jitted `jnp.dot`, 2048^3 on CPU,
    8192^3 on GPU), the physical ceiling, measured between contenders in every round; on a GPU
    of known datasheet rate the table also gives model FLOP utilization against that peak.
On a GPU, PyTorch runs on CUDA; the Flax venv installs CPU jax, so pass `--peers torch` there
(or `--flax-python` of a venv with a CUDA jax 0.4.38).
Rounds interleave the implementations (each runs `--steps` steps per round) so that load from
other processes hits all of them alike; figures are medians over every timed step.

FLOP model (`model_flops`): multiply-adds x 2 of the matmul-like work only (norms, GELU,
softmax and the optimizer are not counted), the same count for every implementation:
  * conv stack: per layer frames_out x kernel x c_in x c_out;
  * feature projection: frames x conv_dim x embed_dim;
  * positional conv (grouped): frames x kernel x (embed_dim / groups) x embed_dim;
  * attention per layer: 4 x frames x d^2 (q, k, v, out) + 2 x frames^2 x d (scores, values);
  * FFN per layer: 2 x frames x d x ffn;
  * wav2vec 2.0 heads: quantizer logits frames x conv_dim x G*V, codevector selection
    frames x G*V x codevector_dim / G, project_q and final_proj, and the contrastive logits
    frames x (1 + K) x final_dim; HuBERT heads: final_proj and cosine logits
    frames x classes x final_dim;
  * a train step counts as 3 x forward (backward = 2 x forward).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

SAMPLE_RATE = 16_000
# Persistent XLA cache of the benchmark's programs (git-ignored): a loaded 2-core machine can
# take minutes to compile each train step, and reruns then skip that.
COMPILE_CACHE = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".jax-cache")
# Datasheet dense bf16 rate (no sparsity), TFLOP/s, by device_kind substring: the MFU denominator.
DATASHEET_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}
HUBERT_CLASSES = 500  # HuBERT iteration-2 label count.
HUBERT_LABEL_RATE = 50.0

SIZES = {
    # name: (model overrides, batch, samples)
    "cpu": (
        dict(embed_dim=256, num_layers=4, num_heads=4, ffn_dim=1024),
        4,
        32_000,
    ),
    "base": (dict(embed_dim=768, num_layers=12, num_heads=12, ffn_dim=3072), 8, 250_000),
    "large": (
        dict(embed_dim=1024, num_layers=24, num_heads=16, ffn_dim=4096, final_dim=768),
        8,
        250_000,
    ),
}


def bench_model_config(size: str, dtype: str = "float32"):
  """The benchmark's ModelConfig: LARGE-style norms, no dropout, G x V = 2 x 320."""
  from jaxdisco.models.config import ModelConfig

  overrides, _, _ = SIZES[size]
  no_dropout = dict(
      dropout=0.0,
      attention_dropout=0.0,
      activation_dropout=0.0,
      dropout_input=0.0,
      dropout_features=0.0,
      layerdrop=0.0,
  )
  return ModelConfig(
      extractor_mode="layer_norm",
      conv_bias=True,
      layer_norm_first=True,
      feature_grad_mult=1.0,
      latent_vars=320,
      latent_groups=2,
      dtype=dtype,
      **no_dropout,
      **overrides,
  )


def model_flops(cfg, batch: int, samples: int, method: str, num_negatives: int = 100) -> dict:
  """Forward FLOPs of one batch by component (see the module docstring); 'total' included."""
  per = {}
  length, conv = samples, 0
  c_in = 1
  for c_out, kernel, stride in cfg.conv_spec:
    length = (length - kernel) // stride + 1
    conv += 2 * length * kernel * c_in * c_out
    c_in = c_out
  frames, d = length, cfg.embed_dim
  per["conv"] = conv
  per["projection"] = 2 * frames * cfg.conv_dim * d
  per["pos_conv"] = 2 * frames * cfg.pos_conv_kernel * (d // cfg.pos_conv_groups) * d
  per["attention"] = cfg.num_layers * (2 * 4 * frames * d * d + 2 * 2 * frames * frames * d)
  per["ffn"] = cfg.num_layers * 2 * 2 * frames * d * cfg.ffn_dim
  if method == "wav2vec2":
    gv = cfg.latent_groups * cfg.latent_vars
    per["heads"] = (
        2
        * frames
        * (
            cfg.conv_dim * gv
            + gv * cfg.codevector_dim // cfg.latent_groups
            + cfg.codevector_dim * cfg.final_dim
            + d * cfg.final_dim
            + (1 + num_negatives) * cfg.final_dim
        )
    )
  else:
    per["heads"] = 2 * frames * (d * cfg.final_dim + HUBERT_CLASSES * cfg.final_dim)
  per = {k: v * batch for k, v in per.items()}
  per["total"] = sum(per.values())
  return per


def run_config(method: str, cfg, batch: int, samples: int):
  """The trainer's ConfigDict for `method` with the benchmark's model, crop and objective."""
  from jaxdisco.methods import get_method

  c = get_method(method).defaults()
  for field, value in dataclasses.asdict(cfg).items():
    if field in c.model:
      c.model[field] = value
  c.data.batch_size, c.data.crop_samples = batch, samples
  c.objective.mask_prob, c.objective.mask_length = 0.65, 10
  if method == "wav2vec2":
    c.objective.num_negatives = 100
  else:
    c.objective.label_rate = HUBERT_LABEL_RATE
    c.labels.num_classes = HUBERT_CLASSES
  c.optim.warmup_steps = 10
  return c


def synthetic_batch(method: str, batch: int, samples: int, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  out = {
      "waveform": rng.standard_normal((batch, samples), dtype=np.float32),
      "padding_mask": np.zeros((batch, samples), bool),
  }
  if method == "hubert":
    labels = int(samples / SAMPLE_RATE * HUBERT_LABEL_RATE)
    out["labels"] = rng.integers(0, HUBERT_CLASSES, (batch, labels)).astype(np.int32)
  return out


def lax_conv1d(x, kernel, stride: int):
  """XLA's native VALID conv: the ablation baseline of `feature_encoder.strided_conv1d`."""
  return jax.lax.conv_general_dilated(
      x, kernel.astype(x.dtype), (stride,), "VALID", dimension_numbers=("NWC", "WIO", "NWC")
  )


# Conv-stack implementations the ablation swaps in while the step is traced.
CONV_VARIANTS = {"matmul": None, "lax": lax_conv1d}


def lax_grouped_conv(x, kernel, groups: int):
  """The positional conv as XLA's grouped convolution with XLA's gradients (the ablation of
  `jaxdisco.models.grouped_conv`)."""
  from jaxdisco.models import grouped_conv

  return grouped_conv.lax_grouped_conv(x, kernel, groups)


POS_CONV_VARIANTS = {"fft": None, "lax": lax_grouped_conv}


def jaxdisco_step(
    method: str,
    cfg,
    batch: int,
    samples: int,
    remat: str = "none",
    conv: str = "matmul",
    return_compiled: bool = False,
    pos_conv: str = "fft",
):
  """() -> None running one jitted train step on a fixed batch (state carried along).

  The step is compiled here (ahead of time), with `conv` selecting the conv stack's
  implementation and `pos_conv` the positional conv's (CONV_VARIANTS, POS_CONV_VARIANTS).
  With `return_compiled`, returns (run, the compiled step) instead.
  """
  from flax import linen as nn
  from unittest import mock

  from jaxdisco.models import feature_encoder, positional
  from jaxdisco import methods
  from jaxdisco.train.optimizer import learning_rate_schedule, make_optimizer
  from jaxdisco.train.state import TrainState
  from jaxdisco.train.step import make_train_step

  config = run_config(method, cfg, batch, samples)
  m = methods.get_method(method)
  params = nn.meta.unbox(m.boxed_init_fn(cfg, config, (batch, samples), 0)())
  optimizer = make_optimizer(config.optim, config.train.num_steps)
  step = make_train_step(
      m.loss_fn(cfg, config),
      optimizer,
      learning_rate_schedule(config.optim, config.train.num_steps),
      remat=remat,
  )
  holder = {"state": TrainState.create(params, optimizer, jax.random.key(0))}
  data = jax.device_put(synthetic_batch(method, batch, samples))
  conv_fn = CONV_VARIANTS[conv] or feature_encoder.strided_conv1d
  pos_fn = POS_CONV_VARIANTS[pos_conv] or positional.grouped_conv1d
  with (
      mock.patch.object(feature_encoder, "strided_conv1d", conv_fn),
      mock.patch.object(positional, "grouped_conv1d", pos_fn),
  ):
    compiled = jax.jit(step, donate_argnums=0).lower(holder["state"], data).compile()
  if jax.default_backend() == "gpu":
    kernel = "cuDNN" if "cudnn$fmha" in compiled.as_text() else "XLA"
    _log(f"  {method} {cfg.attention=}: {kernel} attention in the compiled step")

  def run():
    holder["state"], metrics = compiled(holder["state"], data)
    jax.block_until_ready(metrics["loss"])

  return (run, compiled) if return_compiled else run


def torch_step(cfg, batch: int, samples: int) -> Callable:
  """() -> None: one transformers PyTorch Wav2Vec2ForPreTraining step with AdamW.

  With cfg.dtype bfloat16 the forward runs under CUDA autocast (bf16 matmuls, fp32 master
  weights), the mixed precision PyTorch recipes use."""
  import torch
  from transformers import Wav2Vec2Config, Wav2Vec2ForPreTraining
  from transformers.models.wav2vec2 import modeling_wav2vec2 as hf

  from jaxdisco.export.huggingface import config_to_hf

  torch.set_num_threads(os.cpu_count() or 1)
  torch.manual_seed(0)
  device = "cuda" if torch.cuda.is_available() else "cpu"
  hf_cfg = dict(config_to_hf(cfg), num_negatives=100, mask_time_prob=0.65, mask_time_length=10)
  model = Wav2Vec2ForPreTraining(Wav2Vec2Config(**hf_cfg)).to(device).train()
  model.set_gumbel_temperature(2.0)
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-6)
  wav = torch.from_numpy(synthetic_batch("wav2vec2", batch, samples)["waveform"]).to(device)
  frames = cfg.num_frames(samples)

  autocast = device == "cuda" and cfg.dtype == "bfloat16"

  def run():
    mask = hf._compute_mask_indices((batch, frames), 0.65, 10, min_masks=2)
    negatives = hf._sample_negative_indices((batch, frames), 100, mask)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
      out = model(
          wav,
          mask_time_indices=torch.from_numpy(mask).to(device),
          sampled_negative_indices=torch.from_numpy(negatives).to(device),
      )
    out.loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    if device == "cuda":
      torch.cuda.synchronize()

  return run


class FlaxPeer:
  """The HF Flax worker: a subprocess in its own venv, stepping on request."""

  def __init__(self, cfg, batch: int, samples: int, python: str):
    from jaxdisco.export.huggingface import config_to_hf

    worker = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hf_flax_worker.py")
    spec = dict(
        hf_config=dict(config_to_hf(cfg), num_negatives=100, mask_time_prob=0.65),
        batch=batch,
        samples=samples,
        frames=cfg.num_frames(samples),
    )
    self.proc = subprocess.Popen(
        [python, "-I", worker, json.dumps(spec)],  # -I: benchmarks/ must not shadow stdlib.
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    self.info = self._read()  # Versions and compile time, once the first step has run.

  def _read(self) -> dict:
    line = self.proc.stdout.readline()
    if not line:
      raise RuntimeError(f"hf_flax_worker exited with code {self.proc.wait()}")
    return json.loads(line)

  def steps(self, n: int) -> list[float]:
    self.proc.stdin.write(f"{n}\n")
    return self._read()["times"]

  def close(self):
    if self.proc.poll() is None:
      self.proc.stdin.close()
      self.proc.wait(timeout=60)


def matmul_step(n: int, dtype: str = "float32") -> tuple[Callable, float]:
  """(() -> None running one n^3 matmul, its FLOPs); 2048 saturates 2 CPU cores."""
  a = jax.random.normal(jax.random.key(1), (n, n), dtype)
  b = jax.random.normal(jax.random.key(2), (n, n), dtype)
  f = jax.jit(jnp.dot)
  f(a, b).block_until_ready()
  return lambda: f(a, b).block_until_ready(), 2.0 * n**3


def time_calls(fn: Callable, n: int) -> list[float]:
  out = []
  for _ in range(n):
    t0 = time.perf_counter()
    fn()
    out.append(time.perf_counter() - t0)
  return out


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def _log(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)


def main(argv: Optional[list[str]] = None) -> list[dict]:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument(
      "--size", default=None, choices=sorted(SIZES), help="default: cpu (base on GPU)"
  )
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--steps", type=int, default=3, help="steps per implementation per round")
  parser.add_argument("--quick", action="store_true", help="2 rounds of 2 steps")
  parser.add_argument(
      "--peers", default="flax,torch", help="comma-separated subset of flax,torch, or 'none'"
  )
  parser.add_argument(
      "--ablations",
      action="store_true",
      help="also time jaxdisco wav2vec2 with XLA's native conv, with XLA's grouped conv for "
      "the positional conv (and its gradients), and with remat=dots_saveable (CPU) or XLA's attention instead of "
      "cuDNN's (GPU)",
  )
  parser.add_argument("--no-hubert", action="store_true", help="time wav2vec 2.0 only")
  parser.add_argument("--flax-python", default=None, help="python of a ready HF Flax venv")
  parser.add_argument(
      "--dtype",
      default=None,
      choices=("float32", "bfloat16"),
      help="compute dtype of every contender and of the matmul ceiling (default: float32 on "
      "CPU, where bf16 is no faster; bfloat16 on GPU)",
  )
  args = parser.parse_args(argv)
  if args.quick:
    args.rounds, args.steps = 2, 2
  if not jax.config.jax_compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", COMPILE_CACHE)
  on_gpu = jax.default_backend() == "gpu"
  size = args.size or ("base" if on_gpu else "cpu")
  dtype = args.dtype or ("bfloat16" if on_gpu else "float32")
  peers = set() if args.peers == "none" else set(args.peers.split(","))
  cfg = bench_model_config(size, dtype)
  _, batch, samples = SIZES[size]
  audio_s = batch * samples / SAMPLE_RATE
  _log(
      f"train_step: size={size} batch={batch} x {samples / SAMPLE_RATE:g} s {dtype} on {device_name()}"
  )

  # name -> (run one step, forward FLOPs of the model it trains)
  contenders: dict[str, tuple[Callable, float]] = {}
  w2v_flops = model_flops(cfg, batch, samples, "wav2vec2")["total"]
  hub_flops = model_flops(cfg, batch, samples, "hubert")["total"]
  compile_s = {}
  builders = [
      ("jaxdisco wav2vec2", lambda: jaxdisco_step("wav2vec2", cfg, batch, samples), w2v_flops),
  ]
  if not args.no_hubert:
    builders.append(
        ("jaxdisco hubert", lambda: jaxdisco_step("hubert", cfg, batch, samples), hub_flops)
    )
  if args.ablations:
    variants = [("conv=lax", cfg, dict(conv="lax")), ("pos_conv=lax", cfg, dict(pos_conv="lax"))]
    if on_gpu:  # "auto" picks cuDNN flash attention there; XLA's is the baseline.
      variants.append(("attention=xla", dataclasses.replace(cfg, attention="xla"), {}))
    else:
      variants.append(("remat=dots_saveable", cfg, dict(remat="dots_saveable")))
    for label, variant_cfg, kwargs in variants:
      builders.append(
          (
              f"jaxdisco wav2vec2 {label}",
              lambda c=variant_cfg, kw=kwargs: jaxdisco_step("wav2vec2", c, batch, samples, **kw),
              w2v_flops,
          )
      )
  if "torch" in peers:
    builders.append(("HF PyTorch wav2vec2", lambda: torch_step(cfg, batch, samples), w2v_flops))
  for name, build, flops in builders:
    t0 = time.perf_counter()
    run = build()
    run()  # Compiles (jax) or warms up (torch).
    compile_s[name] = time.perf_counter() - t0
    contenders[name] = (run, flops)
    _log(f"  {name}: ready in {compile_s[name]:.1f} s")
  flax_peer = None
  if "flax" in peers:
    from benchmarks import hf_flax_env

    python = args.flax_python or hf_flax_env.ensure_venv(log=_log)
    t0 = time.perf_counter()
    flax_peer = FlaxPeer(cfg, batch, samples, python)
    compile_s["HF Flax wav2vec2"] = time.perf_counter() - t0
    contenders["HF Flax wav2vec2"] = (lambda: None, w2v_flops)  # Timed in the worker.
    _log(f"  HF Flax wav2vec2: ready in {compile_s['HF Flax wav2vec2']:.1f} s ({flax_peer.info})")
  matmul, matmul_flops = matmul_step(8192 if on_gpu else 2048, dtype)

  times = {name: [] for name in contenders}
  matmul_times = []
  try:
    for r in range(args.rounds):
      for name, (run, _) in contenders.items():
        # Between contenders: the ceiling under the same load. A GPU product takes ~2 ms, so
        # 2 calls there catch clock ramps and launch gaps: take 20.
        matmul_times += time_calls(matmul, 20 if on_gpu else 2)
        if name == "HF Flax wav2vec2":
          times[name] += flax_peer.steps(args.steps)
        else:
          times[name] += time_calls(run, args.steps)
      medians = {n: statistics.median(t[-args.steps :]) for n, t in times.items()}
      _log(
          f"  round {r + 1}/{args.rounds}: "
          + ", ".join(f"{n} {s:.3f} s" for n, s in medians.items())
      )
  finally:
    if flax_peer is not None:
      flax_peer.close()

  matmul_rate = matmul_flops / statistics.median(matmul_times)
  peak = datasheet_peak() if dtype == "bfloat16" else None
  base = statistics.median(times["jaxdisco wav2vec2"])
  rows = []
  for name, (_, flops) in contenders.items():
    step_s = statistics.median(times[name])
    rate = 3 * flops / step_s
    rows.append(
        dict(
            implementation=name,
            step_s=round(step_s, 4),
            audio_s_per_s=round(audio_s / step_s, 2),
            gflops=round(rate / 1e9, 1),
            pct_of_matmul=round(100 * rate / matmul_rate, 1),
            **({"mfu_pct": round(100 * rate / peak, 1)} if peak else {}),
            jaxdisco_speedup=round(step_s / base, 2) if "wav2vec2" in name else None,
            compile_s=round(compile_s[name], 1),
            spread=f"{min(times[name]):.3f}-{max(times[name]):.3f}",
        )
    )
  rows.append(
      dict(
          implementation=f"{dtype} matmul (ceiling)",
          step_s=round(statistics.median(matmul_times), 4),
          audio_s_per_s=None,
          gflops=round(matmul_rate / 1e9, 1),
          pct_of_matmul=100.0,
          **({"mfu_pct": round(100 * matmul_rate / peak, 1)} if peak else {}),
          jaxdisco_speedup=None,
          compile_s=None,
          spread=f"best {matmul_flops / min(matmul_times) / 1e9:.1f} GFLOP/s",
      )
  )
  print(format_table(rows, cfg, batch, samples, args))
  return rows


def device_name() -> str:
  if jax.default_backend() == "cpu":
    return f"{cpu_model()} x {os.cpu_count()}"
  return f"{jax.devices()[0].device_kind} ({jax.default_backend()})"


def datasheet_peak() -> Optional[float]:
  """Datasheet dense bf16 FLOP/s of this accelerator, or None (CPU, unknown device)."""
  if jax.default_backend() == "cpu":
    return None
  kind = jax.devices()[0].device_kind
  return next((t * 1e12 for k, t in DATASHEET_BF16_TFLOPS.items() if k in kind), None)


def format_table(rows: list[dict], cfg, batch: int, samples: int, args) -> str:
  flops = model_flops(cfg, batch, samples, "wav2vec2")
  head = (
      f"train step, {batch} x {samples / SAMPLE_RATE:g} s audio, {cfg.num_layers} x "
      f"{cfg.embed_dim} pre-LN, {cfg.dtype}, {device_name()}, jax {jax.__version__}; "
      f"medians of {args.rounds} rounds x {args.steps} steps.\n"
      f"wav2vec2 forward GFLOP per batch: "
      + ", ".join(f"{k} {v / 1e9:.2f}" for k, v in flops.items())
      + "\njaxdisco_speedup = peer step time / jaxdisco wav2vec2 step time; pct_of_matmul = "
      "achieved model FLOP/s (3 x forward) / measured matmul FLOP/s"
      + (
          "; mfu_pct = the same / the datasheet dense bf16 peak.\n"
          if "mfu_pct" in rows[0]
          else ".\n"
      )
  )
  cols = list(rows[0])
  lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
  for r in rows:
    lines.append("| " + " | ".join("–" if r[c] is None else str(r[c]) for c in cols) + " |")
  return head + "\n".join(lines)


if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  main()
