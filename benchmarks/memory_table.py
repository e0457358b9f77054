r"""Per-device parameter + optimizer memory of BASE and LARGE on pod-sized meshes, from an
ahead-of-time lowering on abstract devices (runs on a laptop CPU in about 15 s).

  python benchmarks/memory_table.py                       # fsdp over all devices
  python benchmarks/memory_table.py --data 4 --devices 8,64,256

For each (config, device count) the train step is traced and lowered for TPU with the
trainer's shardings (`jaxdisco.parallel.aot`), so an uneven split or a bad rule fails here. The
bytes are exact shard sizes: fp32 params, AdamW moments (2x params); activations, gradients
and XLA temporaries come on top and depend on batch, crop and remat.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent


def _load_config(name: str):
  from ml_collections import config_flags

  return config_flags.config_flags._LoadConfigModule(  # pylint: disable=protected-access
      name, str(REPO / "configs" / f"{name}.py")
  ).get_config()


def memory_rows(
    devices=(8, 64, 256),
    configs=("wav2vec2_base", "wav2vec2_large"),
    data: int = 1,
    tensor: int = 1,
    lower: bool = True,
) -> list[dict]:
  from jaxdisco.parallel import aot

  rows = []
  for name in configs:
    for n in devices:
      config = _load_config(name)
      p = config.parallel
      p.data, p.fsdp, p.tensor, p.dcn_data = data, -1, tensor, 1
      start = time.perf_counter()
      result = aot.lower_train_step(config, n, lower=lower)
      layout = result.layout
      rows.append(
          {
              "config": name,
              "devices": n,
              "mesh": result.mesh_shape,
              "param_mib": layout.param_bytes / 2**20,
              "param_mib_per_device": layout.param_bytes_per_device / 2**20,
              "opt_mib_per_device": layout.optimizer_bytes_per_device / 2**20,
              "expected_fsdp_mib": result.expected_fsdp_bytes / 2**20,
              "replicated_pct": 100 * layout.replicated_fraction,
              "lower_seconds": time.perf_counter() - start,
          }
      )
  return rows


def format_table(rows: list[dict]) -> str:
  lines = [
      "| config | devices | mesh (data, fsdp, tensor) | params total | params / device | "
      "optimizer / device | params+opt / device | ideal fsdp split | replicated |",
      "|---|---|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    mesh = tuple(r["mesh"][a] for a in ("data", "fsdp", "tensor"))
    lines.append(
        f"| {r['config']} | {r['devices']} | {mesh} | {r['param_mib']:.1f} MiB | "
        f"{r['param_mib_per_device']:.2f} MiB | {r['opt_mib_per_device']:.2f} MiB | "
        f"{r['param_mib_per_device'] + r['opt_mib_per_device']:.2f} MiB | "
        f"{r['expected_fsdp_mib']:.2f} MiB | {r['replicated_pct']:.2f}% |"
    )
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--devices", default="8,64,256", help="comma-separated device counts")
  parser.add_argument("--data", type=int, default=1, help="data-parallel size (fsdp fills)")
  parser.add_argument("--tensor", type=int, default=1, help="tensor-parallel size")
  parser.add_argument("--no-lower", action="store_true", help="shapes only, skip lowering")
  args = parser.parse_args(argv)
  rows = memory_rows(
      tuple(int(n) for n in args.devices.split(",")),
      data=args.data,
      tensor=args.tensor,
      lower=not args.no_lower,
  )
  print(format_table(rows))
  return 0


if __name__ == "__main__":
  sys.path.insert(0, str(REPO))
  sys.exit(main())
