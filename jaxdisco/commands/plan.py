"""`jaxdisco plan --config CONFIG.py --topology v5p-8 [--num-slices N] [--fit] [--out plan.json]
[--config.field=value ...]`: compiles the run's train step, eval step and tokenizer program for
a TPU slice (no TPU needed; libtpu: pip install 'jaxdisco[tpu]') and prints per-chip memory
against HBM with a verdict, the train step's collectives and a lower bound on its step time.
Exits 2 with what to change when the config does not fit. Topology names are Cloud TPU's
accelerator types: v4 and v5p count TensorCores (v5p-8 is 4 chips), v5e and v6e count chips."""

import os

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file in configs/.", lock_config=True
)
_TOPOLOGY = flags.DEFINE_string(
    "topology", None, "TPU slice: v5p-128, v5e-16, v4-32, v6e-256, or a shape (v5p:4x4x8)."
)
_NUM_SLICES = flags.DEFINE_integer(
    "num-slices", 1, "Slices of that topology (multi-slice; parallel.dcn_* split them)."
)
_PER_CHIP_BATCH = flags.DEFINE_integer(
    "per-chip-batch", None, "Rows per chip per micro-batch (default: from data.batch_size)."
)
_FIT = flags.DEFINE_boolean(
    "fit", False, "Also find the largest per-chip batch that fits, for each train.remat policy."
)
_PROGRAMS = flags.DEFINE_list(
    "programs", ["train", "eval", "tokenizer"], "Programs to compile (train, eval, tokenizer)."
)
_OUT = flags.DEFINE_string("out", "plan.json", "Where to write the plan as JSON ('' for none).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _CONFIG.value is None or not _TOPOLOGY.value:
    raise app.UsageError("plan needs --config and --topology")
  from jaxdisco.parallel import tpu  # pylint: disable=g-import-not-at-top

  # Before jax first loads libtpu: without a local TPU, several processes may compile at once.
  tpu.allow_concurrent_libtpu()
  from jaxdisco.parallel import plan as plan_lib  # pylint: disable=g-import-not-at-top

  topology = tpu.topology(_TOPOLOGY.value, _NUM_SLICES.value)
  config_path = flags.FLAGS["config"].config_filename
  name = os.path.splitext(os.path.basename(config_path))[0]
  print(f"jaxdisco plan: {name} on {topology.describe()}", flush=True)
  plan = plan_lib.make_plan(
      _CONFIG.value,
      topology,
      per_chip_batch=_PER_CHIP_BATCH.value,
      programs=tuple(_PROGRAMS.value),
      config_name=name,
  )
  fit = None
  if _FIT.value:
    print("finding the largest per-chip batch that fits (train step only):", flush=True)
    fit = plan_lib.find_fit(_CONFIG.value, topology)
  print()
  print(plan.table())
  if fit is not None:
    print("\nlargest per-chip batch that fits, by train.remat:")
    for policy, rows in fit.items():
      print(f"  {policy:<14} {rows}")
  if _OUT.value:
    plan_lib.save_plan(plan, _OUT.value, fit)
    print(f"\nwrote {_OUT.value}")
  if not plan.fits:
    raise plan_lib.PlanError(f"{name} does not fit {topology.describe()}: {plan.advice()}")
