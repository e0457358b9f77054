r"""Where a train step's device time goes: a profiler trace of the jitted step, by model part.

    python -m benchmarks step_profile                       # CPU config, wav2vec 2.0
    python -m benchmarks step_profile --size base --batch 8 --batch 16 --out DIR   # on a GPU

For each batch size: compiles the trainer's step (`train_step.jaxdisco_step`), times
`--steps` steps (median), traces `--trace-steps` more with `jax.profiler`, and reads the trace
back (`jax.profiler.ProfileData`). Each device op of the trace is attributed to a model part
through the `op_name` metadata of its instruction in the compiled HLO (the Flax module path
and the primitive), and to forward or backward (`transpose(` in the path marks backward).

Prints, per batch size: step time; the device's busy time per step (the union of the ops'
intervals) against the step's wall time, so that launch gaps and host work show as the
difference; and a table of milliseconds per step by part x direction, with the part's achieved TFLOP/s (from the
analytic FLOPs) where the part does matmul-like work. Ops that overlap in time (GPU streams,
CPU threads) share the interval, so the parts add up to the busy time. `--out DIR` also writes
the top ops and kernels with their paths (`ops_b{batch}.tsv`); `--raw` keeps the trace and HLO,
which `--reread DIR --step-ms T` reads again on any machine (no device needed).
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import os
import re
import shutil
import statistics
import sys
import tempfile

import jax

from benchmarks import train_step as ts

# (part, substrings of the op path; first match wins). Paths are Flax module scopes.
PARTS = (
    ("conv stack", ("feature_encoder",)),
    ("feature proj/LN", ("feature_projection", "layer_norm_features", "post_extract_proj")),
    ("pos conv", ("pos_conv",)),
    ("attention", ("attention", "self_attn")),
    ("ffn", ("feed_forward", "ffn", "fc1", "fc2")),
    ("block norms", ("layers_", "layer_norm", "encoder")),
    ("quantizer", ("quantizer",)),
    ("heads/loss", ("project_q", "final_proj", "label_embed", "loss", "logits")),
    ("optimizer", ("optax", "adam", "scale_by", "clip", "update")),
    ("masking/negatives", ("mask", "negative", "random", "threefry", "sample")),
)
FLOP_PARTS = {"conv stack": "conv", "pos conv": "pos_conv", "attention": "attention", "ffn": "ffn"}

_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=.*?metadata=\{[^}]*op_name=\"([^\"]*)\"")


def hlo_op_paths(hlo_text: str) -> dict[str, str]:
  """Instruction name -> op_name metadata, for every instruction of the compiled module."""
  out = {}
  for line in hlo_text.splitlines():
    m = _INSTR.match(line)
    if m:
      out[m.group(1)] = m.group(2)
  return out


def classify(path: str) -> tuple[str, str]:
  """(part, 'fwd' | 'bwd') of an op path such as 'jit(step)/transpose(jvp(...))/.../dot'."""
  direction = "bwd" if "transpose(" in path else "fwd"
  lower = path.lower()
  for part, keys in PARTS:
    if any(k in lower for k in keys):
      return part, direction
  return "other", direction


def device_events(xplane_path: str) -> list[tuple[int, int, str, str]]:
  """(start_ns, end_ns, kernel or op name, op path or '') of every device op of a trace.

  GPU traces: the kernels on the device plane's stream lines; a kernel launched alone carries
  its op path ('name' stat), one inside a CUDA graph (XLA's command buffers) only the graph's
  name, so its path is found later from the kernel name, which is the HLO fusion's. CPU traces:
  host-thread events with an 'hlo_op' stat.
  """
  data = jax.profiler.ProfileData.from_file(xplane_path)
  out = []
  gpu_planes = [p for p in data.planes if p.name.startswith("/device:GPU")]
  for plane in gpu_planes[:1]:
    for line in plane.lines:
      if not line.name.startswith("Stream"):
        continue
      for ev in line.events:
        stats = dict(ev.stats)
        name = ev.name if ev.name else stats.get("hlo_op", "")
        start = int(ev.start_ns)
        out.append(
            (
                start,
                start + int(ev.duration_ns),
                name,
                stats.get("name", "") or "hlo_op:" + str(stats.get("hlo_op", "")),
            )
        )
  if not gpu_planes:
    for plane in data.planes:
      for line in plane.lines:
        for ev in line.events:
          stats = dict(ev.stats)
          if "hlo_op" in stats and ev.duration_ns > 0:
            start = int(ev.start_ns)
            out.append((start, start + int(ev.duration_ns), stats["hlo_op"], ""))
  return out


def time_shares(events: list[tuple[int, int, str, str]]) -> list[float]:
  """Each event's share of the busy wall time, in seconds: an interval where k ops run at once
  (other streams or threads) counts 1/k to each, so shares add up to the time the device was
  busy, not to the sum of overlapping durations."""
  bounds = []
  for i, (start, end, _, _) in enumerate(events):
    bounds += [(start, 1, i), (end, -1, i)]
  bounds.sort()
  shares = [0.0] * len(events)
  active: set[int] = set()
  last = None
  for t, kind, i in bounds:
    if active and last is not None and t > last:
      each = (t - last) * 1e-9 / len(active)
      for j in active:
        shares[j] += each
    last = t
    if kind == 1:
      active.add(i)
    else:
      active.discard(i)
  return shares


def resolve_path(name: str, path: str, paths: dict[str, str], by_kernel: dict[str, str]) -> str:
  """The op path of a trace event: its own, else its HLO instruction's by name."""
  if path and not path.startswith("hlo_op:"):
    return path
  if name in paths:
    return paths[name]
  if name in by_kernel:
    return by_kernel[name]
  hlo_op = path[len("hlo_op:") :] if path else ""
  return paths.get(hlo_op, "")


def profile_batch(
    method: str,
    cfg,
    batch: int,
    samples: int,
    steps: int,
    trace_steps: int,
    raw_dir: str | None = None,
    **variant,
):
  """(step seconds, {(op or kernel name, op path): busy wall seconds per step}).

  `variant`: `jaxdisco_step`'s conv / pos_conv choices. With `raw_dir`, the trace and the
  compiled HLO are copied there (`b{batch}.xplane.pb.gz`, `b{batch}.hlo.txt.gz`) for re-reading.
  """
  run, compiled = ts.jaxdisco_step(method, cfg, batch, samples, return_compiled=True, **variant)
  run()
  step_s = statistics.median(ts.time_calls(run, steps))
  with tempfile.TemporaryDirectory(prefix="jaxdisco-profile-") as trace_dir:
    with jax.profiler.trace(trace_dir):
      for _ in range(trace_steps):
        run()
    path = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True))[-1]
    hlo = compiled.as_text()
    if raw_dir:
      os.makedirs(raw_dir, exist_ok=True)
      with (
          open(path, "rb") as src,
          gzip.open(os.path.join(raw_dir, f"b{batch}.xplane.pb.gz"), "wb") as dst,
      ):
        shutil.copyfileobj(src, dst)
      with gzip.open(os.path.join(raw_dir, f"b{batch}.hlo.txt.gz"), "wt") as f:
        f.write(hlo)
    return step_s, summarize(path, hlo, trace_steps)


def summarize(trace_path: str, hlo: str, trace_steps: int) -> dict[tuple[str, str], float]:
  """{(op or kernel name, op path): busy wall seconds per step} of a trace of the program."""
  events = device_events(trace_path)
  paths = hlo_op_paths(hlo)
  by_kernel = {k.replace(".", "_").replace("-", "_"): v for k, v in paths.items()}
  per_op = collections.defaultdict(float)
  for (_, _, name, p), share in zip(events, time_shares(events)):
    per_op[(name, resolve_path(name, p, paths, by_kernel))] += share / trace_steps
  return per_op


def report(method, cfg, batch, samples, step_s, per_op, out_dir, tag="") -> str:
  flops = ts.model_flops(cfg, batch, samples, method)
  table = collections.defaultdict(float)
  rows = []
  for (name, path), sec in per_op.items():
    if path:
      part, direction = classify(path)
    else:  # Library kernels inside a CUDA graph name no op.
      matmul = any(k in name.lower() for k in ("gemm", "nvjet", "cutlass", "xmma"))
      part, direction = ("unattributed matmul" if matmul else "unattributed"), "-"
    table[(part, direction)] += sec
    rows.append((sec, name, part, direction, path))
  busy = sum(per_op.values())
  audio_s = batch * samples / ts.SAMPLE_RATE
  lines = [
      f"{method} batch {batch} x {samples / ts.SAMPLE_RATE:g} s, {cfg.num_layers} x "
      f"{cfg.embed_dim}, {cfg.dtype}, {ts.device_name()}{tag}: step {step_s * 1e3:.1f} ms "
      f"({audio_s / step_s:.0f} audio s/s, {3 * flops['total'] / step_s / 1e12:.1f} model "
      f"TFLOP/s); device busy {busy * 1e3:.1f} ms/step ({100 * busy / step_s:.0f}% of the step)",
      "| part | fwd ms | bwd ms | total ms | % busy | fwd+bwd TFLOP/s |",
      "|---|---|---|---|---|---|",
  ]
  parts = sorted({p for p, _ in table}, key=lambda p: -sum(table[(p, d)] for d in DIRECTIONS))
  for part in parts:
    fwd, bwd = table[(part, "fwd")], table[(part, "bwd")] + table[(part, "-")]
    rate = ""
    if part in FLOP_PARTS and fwd + bwd > 0:
      rate = f"{3 * flops[FLOP_PARTS[part]] / (fwd + bwd) / 1e12:.3g}"
    lines.append(
        f"| {part} | {fwd * 1e3:.2f} | {bwd * 1e3:.2f} | {(fwd + bwd) * 1e3:.2f} | "
        f"{100 * (fwd + bwd) / busy:.1f} | {rate} |"
    )
  if out_dir:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"ops_b{batch}.tsv"), "w") as f:
      f.write("ms_per_step\top_or_kernel\tpart\tdirection\top_name\n")
      for sec, name, part, direction, path in sorted(rows, reverse=True)[:500]:
        f.write(f"{sec * 1e3:.4f}\t{name[:120]}\t{part}\t{direction}\t{path}\n")
  return "\n".join(lines)


DIRECTIONS = ("fwd", "bwd", "-")


def main(argv=None):
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--size", default=None, choices=sorted(ts.SIZES))
  parser.add_argument("--method", default="wav2vec2", choices=("wav2vec2", "hubert"))
  parser.add_argument("--batch", type=int, action="append", help="repeatable; default: size's")
  parser.add_argument("--dtype", default=None, choices=("float32", "bfloat16"))
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--trace-steps", type=int, default=3)
  parser.add_argument("--out", default=None, help="folder for the per-op and per-kernel TSVs")
  parser.add_argument(
      "--raw", action="store_true", help="also keep the trace and HLO of the first batch in --out"
  )
  parser.add_argument("--conv", default="matmul", choices=sorted(ts.CONV_VARIANTS))
  parser.add_argument("--pos-conv", default="fft", choices=sorted(ts.POS_CONV_VARIANTS))
  parser.add_argument(
      "--set",
      action="append",
      default=[],
      help="ModelConfig override FIELD=VALUE (repeatable), e.g. --set attention=xla",
  )
  parser.add_argument("--reread", default=None, help="folder of a --raw run: report it again")
  parser.add_argument("--step-ms", type=float, default=None, help="with --reread: its step time")
  args = parser.parse_args(argv)
  on_gpu = jax.default_backend() == "gpu"
  size = args.size or ("base" if on_gpu else "cpu")
  cfg = ts.bench_model_config(size, args.dtype or ("bfloat16" if on_gpu else "float32"))
  if args.set:
    import dataclasses

    fields = {f.name: f.type for f in dataclasses.fields(cfg)}
    overrides = {}
    for item in args.set:
      key, _, value = item.partition("=")
      if key not in fields:
        parser.error(f"--set {item}: ModelConfig has no field {key!r}")
      old = getattr(cfg, key)
      overrides[key] = type(old)(value) if not isinstance(old, bool) else value == "true"
    cfg = dataclasses.replace(cfg, **overrides)
  _, default_batch, samples = ts.SIZES[size]
  if args.reread:
    batch = (args.batch or [default_batch])[0]
    with gzip.open(os.path.join(args.reread, f"b{batch}.hlo.txt.gz"), "rt") as f:
      hlo = f.read()
    with tempfile.NamedTemporaryFile(suffix=".xplane.pb") as trace:
      with gzip.open(os.path.join(args.reread, f"b{batch}.xplane.pb.gz"), "rb") as f:
        shutil.copyfileobj(f, trace)
      trace.flush()
      per_op = summarize(trace.name, hlo, args.trace_steps)
    step_s = (args.step_ms or float("nan")) / 1e3
    print(report(args.method, cfg, batch, samples, step_s, per_op, args.out, " (reread)"))
    return
  for i, batch in enumerate(args.batch or [default_batch]):
    raw = args.out if args.raw and i == 0 else None
    result = profile_batch(
        args.method,
        cfg,
        batch,
        samples,
        args.steps,
        args.trace_steps,
        raw,
        conv=args.conv,
        pos_conv=args.pos_conv,
    )
    print(report(args.method, cfg, batch, samples, *result, args.out), flush=True)


if __name__ == "__main__":
  main()
