"""Train-step time of every method's demo config, side by side in one process (paired rounds).

    python -m benchmarks method_steps            # 5 rounds x 20 steps per method
    python -m benchmarks method_steps --quick    # 2 rounds x 5 steps

Each demo config (`configs/*_demo.py` of HuBERT, WavLM, BEST-RQ, DinoSR and wav2vec 2.0's
`demo.py`) is built exactly as `jaxdisco pretrain` builds it (`train.state.run_state_factory`,
`train.step.jit_steps`: the method's model, loss, frozen parameters and parameter update) and
fed a synthetic batch of its own shapes (random audio; random pseudo-labels where the method
reads labels). Rounds interleave the methods, so load on the machine hits all of them alike;
the table gives the median seconds per step, the ratio to HuBERT's (the named peer: the loop
these methods replace) and the step's XLA FLOPs against this machine's matmul rate measured in
the same run. Compilation is excluded (one warm-up step each).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

DEMOS = {
    "hubert": "hubert_demo",
    "wavlm": "wavlm_demo",
    "best_rq": "best_rq_demo",
    "dinosr": "dinosr_demo",
    "wav2vec2": "demo",
}


def _load(name: str):
  import pathlib  # pylint: disable=g-import-not-at-top

  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

  path = pathlib.Path(__file__).resolve().parent.parent / "configs" / f"{name}.py"
  return config_flags.config_flags._LoadConfigModule(name, str(path)).get_config()  # pylint: disable=protected-access


def build(method_name: str):
  """(step(state, batch) -> (state, metrics), state, batch, FLOPs of one step or None)."""
  from flax import linen as nn  # pylint: disable=g-import-not-at-top

  from jaxdisco import methods  # pylint: disable=g-import-not-at-top
  from jaxdisco.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from jaxdisco.parallel import rules as rules_lib  # pylint: disable=g-import-not-at-top
  from jaxdisco.train.state import run_state_factory  # pylint: disable=g-import-not-at-top
  from jaxdisco.train.step import jit_steps  # pylint: disable=g-import-not-at-top

  config = _load(DEMOS[method_name])
  if "labels" in config:
    config.labels.train = "synthetic"
  method = methods.get_method(config.method)
  model_config = methods.check_config(config)
  mesh = mesh_lib.make_mesh(config.parallel)
  rules = rules_lib.rules_from_config(config.parallel)
  batch_sharding = rules_lib.batch_sharding(mesh, rules)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    optimizer, schedule, create, _, sharding = run_state_factory(
        config, method, model_config, mesh, rules
    )
    state = create()
    step, _ = jit_steps(
        method.loss_fn(model_config, config),
        optimizer,
        schedule,
        config.train,
        sharding,
        batch_sharding,
        method.param_update_fn(model_config, config),
    )
  rng = np.random.default_rng(0)
  shapes = method.example_batch(config, config.data.batch_size, config.data.crop_samples)
  batch = {}
  for name, s in shapes.items():
    if name == "waveform":
      batch[name] = rng.standard_normal(s.shape).astype(np.float32)
    elif name == "labels":
      batch[name] = rng.integers(0, config.labels.num_classes, s.shape).astype(np.int32)
    else:
      batch[name] = np.zeros(s.shape, s.dtype)
  batch = jax.device_put(batch, batch_sharding)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    compiled = step.lower(state, batch).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", 0.0)) if cost else None
  return compiled, state, batch, flops


def main(argv: Optional[list[str]] = None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--steps", type=int, default=20, help="steps per method per round")
  parser.add_argument("--quick", action="store_true", help="2 rounds of 5 steps")
  parser.add_argument("--methods", default=",".join(DEMOS))
  args = parser.parse_args(argv)
  if args.quick:
    args.rounds, args.steps = 2, 5
  from benchmarks.train_step import matmul_step, time_calls  # pylint: disable=g-import-not-at-top

  names = args.methods.split(",")
  unknown = sorted(set(names) - set(DEMOS))
  if unknown:
    parser.error(f"--methods: unknown {unknown}; expected some of {sorted(DEMOS)}")
  built = {}
  for name in names:
    compiled, state, batch, flops = build(name)
    state, _ = compiled(state, batch)  # Warm-up (and the donated state's first replacement).
    jax.block_until_ready(state)
    built[name] = [compiled, state, batch, flops]
  matmul, matmul_flops = matmul_step(2048)
  times = {name: [] for name in names}
  peak = []
  for _ in range(args.rounds):
    peak.append(min(time_calls(matmul, 3)))
    for name in names:
      compiled, state, batch, _ = built[name]
      t0 = time.perf_counter()
      for _ in range(args.steps):
        state, metrics = compiled(state, batch)
      jax.block_until_ready((state, metrics))
      times[name].append((time.perf_counter() - t0) / args.steps)
      built[name][1] = state
  rate = matmul_flops / statistics.median(peak)
  base = statistics.median(times["hubert"]) if "hubert" in times else None
  rows = []
  for name in names:
    seconds = statistics.median(times[name])
    flops = built[name][3]
    rows.append(
        {
            "method": name,
            "config": f"configs/{DEMOS[name]}.py",
            "s/step (median)": round(seconds, 4),
            "vs hubert": round(seconds / base, 2) if base else None,
            "GFLOP/step (XLA)": round(flops / 1e9, 2) if flops else None,
            "achieved / matmul rate": round(flops / seconds / rate, 3) if flops else None,
        }
    )
  print(f"matmul rate (2048^3 f32, this run): {rate / 1e9:.0f} GFLOP/s")
  head = list(rows[0])
  print("| " + " | ".join(head) + " |")
  print("|" + "---|" * len(head))
  for r in rows:
    print("| " + " | ".join(str(r[h]) for h in head) + " |")
  return rows


if __name__ == "__main__":
  main()
