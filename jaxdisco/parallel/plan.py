r"""Will this config fit on that TPU slice? Compile the run's programs for it and read the answer.

  jaxdisco plan --config configs/wav2vec2_base.py --topology v5p-8 [--num-slices 2] [--fit]

`make_plan(config, topology)` builds the mesh a run on `topology` would use (its compile-only
TPU devices, `config.parallel`, dcn axes across slices), jits the train step of the config's
method and its eval step with the trainer's shardings, donation and remat, and compiles them
for TPU with libtpu's compiler; then the exported tokenizer program (what `export-tokenizer`
writes for this model) for one chip. No TPU is involved. From the compiled train step it reads,
per chip:

  * parameters and optimizer state (the layout's shard sizes, which are the compiled
    program's argument buffers), the batch, XLA's temporaries (activations kept for the
    backward pass, gradients, workspace), generated code, and their total against the HBM the
    compiler lets a program use (`tpu.Chip.usable_hbm_bytes`): headroom and a verdict;
  * the collectives of the step (kind, count, bytes), parsed from the compiled HLO;
  * analytic model FLOPs per step (`benchmarks/train_step.py`'s count) against the chip's
    peak: a lower bound on the step time, never a measurement.

A program that does not fit fails to compile on TPU ("Ran out of memory on HBM"); the plan
turns that into the verdict "does not fit" and a message that names what to change (per-chip
batch, `train.remat`, `parallel.fsdp`). `find_fit` bisects the largest per-chip batch that fits
for each remat policy. `check_compiled_fits` is the same check for the trainer on a real TPU.

Compiling BASE for a 4-chip slice takes minutes on a 2-core machine (the TPU compiler works on
the whole partitioned step); tiny configs take seconds.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
import warnings
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax.sharding import NamedSharding, PartitionSpec

from jaxdisco import methods
from jaxdisco.errors import ConfigError
from jaxdisco.parallel import layout as layout_lib
from jaxdisco.parallel import mesh as mesh_lib
from jaxdisco.parallel import rules as rules_lib
from jaxdisco.parallel import tpu

GiB = 2**30
PROGRAMS = ("train", "eval", "tokenizer")
# Below this share of usable HBM left free, the verdict is "tight": XLA's estimate excludes the
# runtime's own buffers (input prefetch, checkpoint staging), so a few percent can vanish.
TIGHT_HEADROOM = 0.05
TOKENIZER_BATCH = 8  # Rows of the tokenizer program compiled (its batch is symbolic).
TOKENIZER_CLUSTERS = 500  # Centroids of the kmeans units compiled (HuBERT iteration 2's K).


def format_bytes(n: int) -> str:
  if abs(n) >= 2**30 / 10:
    return f"{n / 2**30:.2f} GiB"
  return f"{n / 2**20:.1f} MiB"


class PlanError(ConfigError):
  """A config whose programs do not fit the slice; the message says what to change."""


@dataclasses.dataclass
class ProgramMemory:
  """Per-chip bytes of one compiled program (`compiled.memory_analysis()`), or the compiler's
  out-of-memory figures when it refused the program."""

  name: str
  arguments: int = 0
  outputs: int = 0
  aliased: int = 0  # Outputs written into donated arguments (the new train state).
  temporaries: int = 0
  code: int = 0
  compile_seconds: float = 0.0
  compiler_error: str = ""  # Set when compilation ran out of HBM.

  @property
  def total(self) -> int:
    """What the program holds at its peak, as XLA's buffer assignment counts it."""
    return self.arguments + self.outputs - self.aliased + self.temporaries + self.code

  @property
  def compiled(self) -> bool:
    return not self.compiler_error


def _memory(name: str, compiled, seconds: float) -> ProgramMemory:
  m = compiled.memory_analysis()
  return ProgramMemory(
      name,
      arguments=int(m.argument_size_in_bytes),
      outputs=int(m.output_size_in_bytes),
      aliased=int(m.alias_size_in_bytes),
      temporaries=int(m.temp_size_in_bytes),
      code=int(m.generated_code_size_in_bytes),
      compile_seconds=seconds,
  )


_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_OOM = re.compile(r"\(([\d.]+)([KMGT]?)\)\s*exceeds available HBM \(([\d.]+)([KMGT]?)\)")


def _is_out_of_memory(error: Exception) -> bool:
  text = str(error)
  return "RESOURCE_EXHAUSTED" in text or "Ran out of memory" in text


def _oom_memory(name: str, error: Exception, seconds: float) -> ProgramMemory:
  """The compiler's "required (X) exceeds available HBM (Y)" as a ProgramMemory whose
  temporaries are X (the figure the compiler gives; arguments are counted apart)."""
  text = str(error)
  first = text.strip().splitlines()[0][:500]
  match = _OOM.search(text)
  required = int(float(match.group(1)) * _UNITS[match.group(2)]) if match else 0
  return ProgramMemory(name, temporaries=required, compile_seconds=seconds, compiler_error=first)


@dataclasses.dataclass
class Collective:
  kind: str
  count: int  # Executions per step (instructions inside loops counted once per iteration).
  # Result buffer bytes summed over those executions (compiled HLO prints no operand shapes):
  # the gathered array of an all-gather, the kept shard of a reduce-scatter.
  bytes: int


_COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_DTYPE_BYTES = {
    "pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4,
    "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16, "f8e4m3fn": 1, "f8e5m2": 1,
}  # fmt: skip
_SHAPE = re.compile(r"\b(" + "|".join(_DTYPE_BYTES) + r")\[([\d,]*)\]")
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(.*?)\s+([\w\-]+)\((.*)$")
_CALLEES = re.compile(r"\b(?:body|condition|to_apply|calls|called_computations)=\{?%?([\w.\-]+)")
_BODY = re.compile(r"\bbody=%?([\w.\-]+)")
_CONDITION = re.compile(r"\bcondition=%?([\w.\-]+)")
_CONSTANT = re.compile(r"s32\[\][^=]*\bconstant\((\d+)\)")
_TRIP_COUNT = re.compile(r'"known_trip_count":\{"n":"(\d+)"')


def _shape_bytes(text: str) -> int:
  return sum(
      _DTYPE_BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d)
      for dtype, dims in _SHAPE.findall(text)
  )


def _trip_from_condition(computations, condition):
  """A loop `i < N` from 0 (what `lax.scan` / `fori_loop` lower to) whose backend config
  lacks XLA's known_trip_count: N is the condition's one integer constant."""
  if condition is None:
    return None
  lines = computations.get(condition.group(1), [])
  found = [m for line in lines for m in [_CONSTANT.search(line)] if m]
  if len(found) != 1 or not any("direction=LT" in line for line in lines):
    return None
  return found[0]


def collectives(hlo_text: str) -> list[Collective]:
  """Collectives of a compiled (partitioned) HLO module, per execution of the entry
  computation. An instruction in a while loop's body counts once per iteration when XLA
  knows the trip count (gradient accumulation's scan, layer loops); async pairs
  (`all-gather-start` / `-done`) count once, at the start."""
  computations: dict[str, list[str]] = {}
  entry, current = None, None
  for line in hlo_text.splitlines():
    # Headers start at column 0 (instructions are indented); their parameter lists may hold
    # "=" (`/*index=5*/`) and braces (layouts).
    match = _COMPUTATION.match(line) if line[:1] not in (" ", "}") else None
    if match:
      current = match.group(1)
      computations[current] = []
      if line.startswith("ENTRY"):
        entry = current
    elif current is not None:
      computations[current].append(line)
  # Times each computation runs per step: callers' counts times loop trip counts.
  runs: dict[str, int] = {}

  def visit(name: str, times: int, depth: int = 0) -> None:
    if name not in computations or depth > 64:
      return
    runs[name] = runs.get(name, 0) + times
    for line in computations[name]:
      trip = _TRIP_COUNT.search(line)
      body = _BODY.search(line) if " while(" in line else None
      if body is not None and trip is None:
        trip = _trip_from_condition(computations, _CONDITION.search(line))
      for callee in _CALLEES.findall(line):
        loop = trip is not None and body is not None and callee == body.group(1)
        visit(callee, times * (int(trip.group(1)) if loop else 1), depth + 1)

  if entry is None:
    return []
  visit(entry, 1)
  found: dict[str, Collective] = {}
  for name, times in runs.items():
    for line in computations[name]:
      match = _INSTRUCTION.match(line)
      if not match:
        continue
      result, opcode, rest = match.groups()
      if opcode.endswith("-done"):
        continue
      kind = opcode[: -len("-start")] if opcode.endswith("-start") else opcode
      if kind not in _COLLECTIVES:
        continue
      size = _shape_bytes(result)
      entry_ = found.setdefault(kind, Collective(kind, 0, 0))
      entry_.count += times
      entry_.bytes += times * size
  return [found[k] for k in _COLLECTIVES if k in found]


@dataclasses.dataclass
class Plan:
  config_name: str
  method: str
  topology: tpu.Topology
  mesh_shape: dict
  batch_size: int  # Global rows per update.
  per_chip_batch: int  # Rows per chip per micro-batch.
  crop_samples: int
  remat: str
  layout: layout_lib.Layout
  programs: dict[str, ProgramMemory]
  collectives: list[Collective]
  model_flops_per_step: Optional[float]  # Forward + backward, whole job (None: not modelled).

  @property
  def train(self) -> ProgramMemory:
    return self.programs["train"]

  @property
  def usable_hbm(self) -> int:
    return self.topology.chip.usable_hbm_bytes

  @property
  def peak_bytes(self) -> int:
    """The largest program's per-chip total (the train step, in practice)."""
    return max(p.total + (0 if p.compiled else p.arguments) for p in self.programs.values())

  @property
  def headroom(self) -> int:
    return self.usable_hbm - self.peak_bytes

  @property
  def verdict(self) -> str:
    if not all(p.compiled for p in self.programs.values()) or self.headroom < 0:
      return "does not fit"
    if self.headroom < TIGHT_HEADROOM * self.usable_hbm:
      return "fits (tight)"
    return "fits"

  @property
  def fits(self) -> bool:
    return self.verdict != "does not fit"

  @property
  def step_time_lower_bound(self) -> Optional[float]:
    if not self.model_flops_per_step:
      return None
    peak = self.topology.num_chips * self.topology.chip.peak_bf16_flops
    return self.model_flops_per_step / peak

  def advice(self) -> str:
    return _advice(
        self.train,
        self.usable_hbm,
        self.topology.chip.device_kind,
        per_chip_batch=self.per_chip_batch,
        remat=self.remat,
        mesh_shape=self.mesh_shape,
        params_and_optimizer=self.layout.param_bytes_per_device
        + self.layout.optimizer_bytes_per_device,
    )

  def table(self) -> str:
    """The per-chip report, as printed by `jaxdisco plan`."""
    t = self.train
    params = self.layout.param_bytes_per_device
    optimizer = self.layout.optimizer_bytes_per_device
    total = t.total if t.compiled else t.temporaries + params + optimizer
    rows = [
        ("parameters", params),
        ("optimizer state", optimizer),
        ("batch + step scalars", max(t.arguments - params - optimizer, 0) if t.compiled else 0),
        ("activations/temporaries", t.temporaries),
        ("outputs not donated", t.outputs - t.aliased),
        ("generated code", t.code),
        ("total", total),
        ("usable HBM", self.usable_hbm),
        ("headroom", self.headroom),
    ]
    lines = [
        f"{self.config_name} ({self.method}) on {self.topology.describe()}",
        f"mesh {self.mesh_shape}; batch {self.batch_size} x {self.crop_samples} samples = "
        f"{self.per_chip_batch} per chip per micro-batch; train.remat={self.remat}",
        "",
        "per chip, train step",
    ]
    lines += [f"  {label:<24}{format_bytes(value):>12}" for label, value in rows]
    lines[-2] += f"   (datasheet: {self.topology.chip.hbm_bytes / GiB:g} GiB)"
    if not t.compiled:
      lines[-6] += "   (the compiler's figure: it ran out of HBM)"
    lines += [f"  {'verdict':<24}{self.verdict:>12}", "", "programs, per chip"]
    for p in self.programs.values():
      status = format_bytes(p.total) if p.compiled else "out of HBM"
      lines.append(f"  {p.name:<24}{status:>12}   compiled in {p.compile_seconds:.1f} s")
    lines += ["", "collectives of the train step, per step and chip (result buffer bytes)"]
    if not self.collectives:
      lines.append("  none" if t.compiled else "  (not compiled)")
    for c in self.collectives:
      lines.append(f"  {c.kind:<24}{c.count:>6} x {format_bytes(c.bytes):>12}")
    lines.append("")
    bound = self.step_time_lower_bound
    if bound is None:
      lines.append("model FLOPs: not modelled for this method")
    else:
      lines.append(
          f"model FLOPs per step {self.model_flops_per_step:.3e} (forward + backward, all chips):"
          f" at the {self.topology.chip.peak_bf16_flops / 1e12:g} TFLOP/s bf16 peak of each chip a"
          f" step takes at least {bound * 1e3:.1f} ms (a lower bound, not a measurement)"
      )
    if not self.fits:
      lines += ["", self.advice()]
    return "\n".join(lines)

  def to_json(self) -> dict:
    return {
        "config": self.config_name,
        "method": self.method,
        "topology": self.topology.name,
        "num_slices": self.topology.num_slices,
        "libtpu_topology": self.topology.libtpu_name,
        "device_kind": self.topology.chip.device_kind,
        "chips": self.topology.num_chips,
        "mesh": self.mesh_shape,
        "batch_size": self.batch_size,
        "per_chip_batch": self.per_chip_batch,
        "crop_samples": self.crop_samples,
        "remat": self.remat,
        "per_chip_bytes": {
            "parameters": self.layout.param_bytes_per_device,
            "optimizer": self.layout.optimizer_bytes_per_device,
            "train_step": dataclasses.asdict(self.train) | {"total": self.train.total},
        },
        "programs": {
            k: dataclasses.asdict(p) | {"total": p.total} for k, p in self.programs.items()
        },
        "usable_hbm_bytes": self.usable_hbm,
        "datasheet_hbm_bytes": self.topology.chip.hbm_bytes,
        "headroom_bytes": self.headroom,
        "verdict": self.verdict,
        "collectives": [dataclasses.asdict(c) for c in self.collectives],
        "model_flops_per_step": self.model_flops_per_step,
        "step_time_lower_bound_seconds": self.step_time_lower_bound,
        "advice": None if self.fits else self.advice(),
    }


def _advice(
    train: ProgramMemory,
    usable: int,
    device_kind: str,
    *,
    per_chip_batch: int,
    remat: str,
    mesh_shape: dict,
    params_and_optimizer: int,
) -> str:
  """What to change, from the train step's figures: activations grow with the per-chip batch,
  remat trades them for recomputation, fsdp splits parameters and optimizer state."""
  needed = (train.total if train.compiled else train.temporaries + params_and_optimizer)
  lines = [
      f"the {train.name} needs {format_bytes(needed)} per chip but a {device_kind} chip lets a "
      f"program use {format_bytes(usable)}. Change one of:"
  ]
  per_row = train.temporaries / max(per_chip_batch, 1)
  fixed = needed - train.temporaries
  if per_row > 0:
    rows = int((usable * (1 - TIGHT_HEADROOM) - fixed) // per_row)
    if rows >= 1:
      lines.append(
          f"  - the per-chip batch: {per_chip_batch} rows now; about {rows} fit if activations "
          "scale with it (an estimate: `jaxdisco plan --fit` compiles to find it). Lower "
          "data.batch_size, or raise train.grad_accum_steps to keep the update size"
      )
    else:
      lines.append(
          f"  - the per-chip batch: {per_chip_batch} rows now; even one row may not fit: "
          "shorten data.crop_samples or split the model further"
      )
  else:
    lines.append(
        f"  - the per-chip batch: {per_chip_batch} rows now; lower data.batch_size (raise "
        "train.grad_accum_steps to keep the update size) or shorten data.crop_samples"
    )
  if remat != "full":
    lines.append(
        f"  - train.remat: {remat!r} now; 'full' keeps only each layer's input for the backward "
        "pass ('dots_saveable' keeps its matmul outputs)"
    )
  fsdp = mesh_shape.get("fsdp", 1)
  if params_and_optimizer > 0.1 * usable or fsdp == 1:
    lines.append(
        f"  - parallel.fsdp: {fsdp} now; parameters and optimizer state take "
        f"{params_and_optimizer / GiB:.2f} GiB per chip and shrink by the fsdp size (set "
        "parallel.data smaller and parallel.fsdp larger, or -1)"
    )
  return "\n".join(lines)


def _load_flop_model():
  """`model_flops` of `benchmarks/train_step.py`, the project's one FLOP model, loaded from the
  checkout beside this package (the console script's sys.path lacks the repository root);
  None for an installed package without benchmarks/."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  import pathlib  # pylint: disable=g-import-not-at-top

  try:
    from benchmarks.train_step import model_flops  # pylint: disable=g-import-not-at-top

    return model_flops
  except ImportError:
    pass
  path = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "train_step.py"
  if not path.exists():
    return None
  spec = importlib.util.spec_from_file_location("jaxdisco_benchmarks_train_step", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.model_flops


def _model_flops(config, model_config, batch_size: int) -> Optional[float]:
  """3 x the forward model FLOPs of `benchmarks/train_step.py` (backward = 2 x forward); None
  where it has no model of the method (vq-wav2vec) or cannot be loaded."""
  method = config.get("method", "wav2vec2")
  if method not in ("wav2vec2", "hubert") or not hasattr(model_config, "conv_spec"):
    return None
  model_flops = _load_flop_model()
  if model_flops is None:
    return None
  negatives = int(config.objective.get("num_negatives", 100))
  forward = model_flops(model_config, batch_size, config.data.crop_samples, method, negatives)
  return 3.0 * forward["total"]


def _prepare_config(config, topology: tpu.Topology, per_chip_batch, remat):
  config = config.copy_and_resolve_references()
  with config.unlocked():
    method = methods.get_method(config.get("method", "wav2vec2"))
    if method.uses_labels and not config.labels.train:
      config.labels.train = "<plan: labels are not read>"
    if remat is not None:
      config.train.remat = remat
    mesh_ici, mesh_dcn = mesh_lib.mesh_shapes(
        config.parallel, topology.num_chips, topology.num_slices
    )
    rules = rules_lib.rules_from_config(config.parallel)
    shape = dict(zip(mesh_lib.MESH_AXES, (i * d for i, d in zip(mesh_ici, mesh_dcn))))
    ways = math.prod(shape[a] for a in rules_lib.batch_mesh_axes(rules) if a in shape)
    if per_chip_batch is not None:
      config.data.batch_size = int(per_chip_batch) * ways * config.train.grad_accum_steps
  return config, method, ways


def _make_mesh(parallel, devices, topology: tpu.Topology):
  """`mesh.make_mesh` on the topology's devices; its torus-placement refusal (a mesh axis that
  is no product of torus sides) becomes a ConfigError, since the run would fail the same way."""
  try:
    return mesh_lib.make_mesh(parallel, devices)
  except NotImplementedError as e:
    ici, dcn = mesh_lib.mesh_shapes(parallel, topology.num_chips, topology.num_slices)
    raise ConfigError(
        f"parallel: per-slice mesh (data, fsdp, tensor) = {ici} does not map onto the "
        f"{'x'.join(map(str, topology.shape))} chip torus of {topology.accelerator_type}: each "
        "size must be a product of some of the torus sides (jax.experimental.mesh_utils: "
        f"{str(e).splitlines()[0][:200]}). Pick parallel.fsdp / parallel.tensor from those "
        "products."
    ) from None


def _say_default(line: str) -> None:
  print(line, flush=True)


def make_plan(
    config,
    topology: tpu.Topology,
    *,
    per_chip_batch: Optional[int] = None,
    remat: Optional[str] = None,
    programs: Sequence[str] = PROGRAMS,
    config_name: str = "config",
    say: Optional[Callable[[str], None]] = _say_default,
) -> Plan:
  """Compiles `programs` of `config`'s run for `topology` and reports per-chip memory.

  `per_chip_batch` (rows per chip per micro-batch) replaces `data.batch_size`; by default the
  config's global batch is compiled, as the run would. `remat` replaces `train.remat`.
  """
  say = say or (lambda line: None)
  config, method, ways = _prepare_config(config, topology, per_chip_batch, remat)
  devices = topology.devices()
  mesh = _make_mesh(config.parallel, devices, topology)
  model_config = methods.check_config(config, len(devices))
  rules = rules_lib.rules_from_config(config.parallel)
  batch_sharding = rules_lib.batch_sharding(mesh, rules)
  data, train = config.data, config.train
  per_chip = data.batch_size // (ways * train.grad_accum_steps)
  from jaxdisco.train.state import run_state_factory
  from jaxdisco.train.step import jit_steps

  results: dict[str, ProgramMemory] = {}
  found_collectives: list[Collective] = []
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    optimizer, schedule, _, abstract_state, state_sharding = run_state_factory(
        config, method, model_config, mesh, rules
    )
    layout = layout_lib.state_layout(abstract_state, state_sharding)
    batch = {
        k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=batch_sharding)
        for k, v in method.example_batch(config, data.batch_size, data.crop_samples).items()
    }
    loss_fn = method.loss_fn(model_config, config)
    # The trainer's own jitted steps (`train.step.jit_steps`): same shardings, donation, remat.
    train_step, eval_step = jit_steps(
        loss_fn,
        optimizer,
        schedule,
        train,
        state_sharding,
        batch_sharding,
        method.param_update_fn(model_config, config),
    )
    jitted = {
        "train": lambda: train_step.lower(abstract_state, batch),
        "eval": lambda: eval_step.lower(abstract_state.params, batch),
    }
    names = {"train": "train step", "eval": "eval step", "tokenizer": "tokenizer program"}
    for program in programs:
      if program not in PROGRAMS:
        raise ValueError(f"programs: expected some of {PROGRAMS}, got {program!r}")
      say(f"  compiling the {names[program]} for {topology.name} ...")
      start = time.perf_counter()
      try:
        with warnings.catch_warnings():
          # The persistent compilation cache (tests enable it) cannot hold executables of
          # compile-only devices; jax warns on each attempt and compiles anyway.
          warnings.filterwarnings("ignore", "Error (reading|writing) persistent compilation")
          compiled = _compile(program, jitted, config, model_config, method, devices[0])
      except Exception as e:  # pylint: disable=broad-except
        if not _is_out_of_memory(e):
          raise
        results[program] = _oom_memory(names[program], e, time.perf_counter() - start)
        say(f"    out of HBM after {results[program].compile_seconds:.1f} s")
        continue
      results[program] = _memory(names[program], compiled, time.perf_counter() - start)
      say(
          f"    {format_bytes(results[program].total)} per chip, compiled in "
          f"{results[program].compile_seconds:.1f} s"
      )
      if program == "train":
        found_collectives = collectives(compiled.as_text())
  if "train" not in results:
    raise ValueError("a plan needs the train step among its programs")
  if results["train"].compiled is False:
    # The compiler gave temporaries only: count the state the program would have held too.
    results["train"].arguments = (
        layout.param_bytes_per_device + layout.optimizer_bytes_per_device
    )
  return Plan(
      config_name=config_name,
      method=method.name,
      topology=topology,
      mesh_shape=dict(mesh.shape),
      batch_size=data.batch_size,
      per_chip_batch=per_chip,
      crop_samples=data.crop_samples,
      remat=train.remat,
      layout=layout,
      programs=results,
      collectives=found_collectives,
      model_flops_per_step=_model_flops(config, model_config, data.batch_size),
  )


def _one_chip_mesh(device):
  # The training axis names, so the models' logical rules still resolve (to size-1 axes).
  return jax.sharding.Mesh(
      np.asarray([device]).reshape((1,) * len(mesh_lib.MESH_AXES)), mesh_lib.MESH_AXES
  )


def _compile(program, jitted, config, model_config, method, device):
  if program == "tokenizer":
    # A one-chip program, exported and compiled as `export-tokenizer` and its users do: off the
    # training mesh.
    with jax.set_mesh(_one_chip_mesh(device)):
      return compile_tokenizer_program(config, model_config, method, device)
  return jitted[program]().compile()


def compile_tokenizer_program(config, model_config, method, device, num_samples=None):
  """Compiles, for `device`'s platform, the `jax.export` program that `export-tokenizer` writes
  for this model (its first unit kind), on shapes only: serialised, deserialised and called as
  a user of the tokenizer directory would."""
  from flax import traverse_util  # pylint: disable=g-import-not-at-top

  from jaxdisco.export import tokenizer as export_lib  # pylint: disable=g-import-not-at-top
  from jaxdisco.export import unit_kinds  # pylint: disable=g-import-not-at-top

  num_samples = int(num_samples or config.data.crop_samples)
  kind_name = method.unit_kinds[0]
  kind = unit_kinds.get_kind(kind_name)
  boxed = jax.eval_shape(method.boxed_init_fn(model_config, config, (1, num_samples), 0))
  params = rules_lib.unbox_shapes(boxed)
  layer = model_config.num_layers if kind.uses_layer else 0
  pretrained = _ShapesOnly(params=params, config=model_config)
  encoder = kind.encoder(pretrained, layer)
  flat = lambda tree: {
      k: jax.ShapeDtypeStruct(v.shape, v.dtype)
      for k, v in traverse_util.flatten_dict(dict(tree), sep="/").items()
  }
  extra = {}
  if kind_name == "kmeans":
    quantizer = {
        "centroids": jax.ShapeDtypeStruct((TOKENIZER_CLUSTERS, model_config.embed_dim), jnp.float32)
    }
  else:
    quantizer = flat(params["params"]["quantizer"])
    if kind_name == "codebook":
      extra = dict(num_groups=model_config.latent_groups, num_vars=model_config.latent_vars)
    else:
      extra = dict(num_groups=model_config.vq_groups, num_vars=model_config.vq_vars)
  spec = unit_kinds.TokenizerSpec(
      kind=kind_name, config=model_config, layer=layer, normalize=bool(config.data.normalize),
      **extra,
  )
  weights = {"encoder": flat(encoder), "quantizer": quantizer}
  exported = jax.export.deserialize(export_lib.serialize_program(spec, weights, num_samples))
  one_chip = _one_chip_mesh(device)
  on_device = lambda x: jax.ShapeDtypeStruct(
      x.shape, x.dtype, sharding=NamedSharding(one_chip, PartitionSpec())
  )
  return (
      jax.jit(exported.call)
      .lower(
          jax.tree.map(on_device, weights),
          on_device(jax.ShapeDtypeStruct((TOKENIZER_BATCH, num_samples), jnp.float32)),
          on_device(jax.ShapeDtypeStruct((TOKENIZER_BATCH, num_samples), jnp.bool_)),
      )
      .compile()
  )


@dataclasses.dataclass
class _ShapesOnly:
  """The two fields of a `Pretrained` that unit kinds read, holding shapes."""

  params: Any
  config: Any


def find_fit(
    config,
    topology: tpu.Topology,
    *,
    policies: Optional[Sequence[str]] = None,
    max_batch: int = 4096,
    say: Optional[Callable[[str], None]] = _say_default,
) -> dict[str, int]:
  """The largest per-chip batch (rows per chip per micro-batch) whose train step fits, for each
  remat policy (0: not even one row). Compiles the train step only: a linear guess from the
  first two compiles, then bisection, a handful of compiles per policy."""
  from jaxdisco.models.transformer import REMAT_POLICIES  # pylint: disable=g-import-not-at-top

  say = say or (lambda line: None)
  policies = tuple(policies or REMAT_POLICIES)
  out = {}
  for policy in policies:
    cache: dict[int, Plan] = {}

    def fits(rows: int) -> bool:
      if rows not in cache:
        say(f"  remat={policy}: trying {rows} per chip")
        cache[rows] = make_plan(
            config, topology, per_chip_batch=rows, remat=policy, programs=("train",), say=None
        )
        p = cache[rows]
        say(f"    {p.peak_bytes / GiB:.2f} GiB of {p.usable_hbm / GiB:.2f}: {p.verdict}")
      return cache[rows].fits

    if not fits(1):
      out[policy] = 0
      continue
    one = cache[1]
    low, high = 1, None
    if fits(2):
      low = 2
      per_row = max(cache[2].train.temporaries - one.train.temporaries, 1)
      guess = int(2 + (one.usable_hbm * (1 - TIGHT_HEADROOM) - cache[2].peak_bytes) // per_row)
      guess = max(3, min(guess, max_batch))
      if fits(guess):
        low = guess
        step = max(1, guess // 8)
        while low < max_batch:
          probe = min(low + step, max_batch)
          if not fits(probe):
            high = probe
            break
          low, step = probe, step * 2
        else:
          high = max_batch + 1
      else:
        high = guess
    else:
      high = 2
    while high is not None and high - low > 1:
      mid = (low + high) // 2
      if fits(mid):
        low = mid
      else:
        high = mid
    out[policy] = low
    say(f"  remat={policy}: at most {low} per chip")
  return out


def save_plan(plan: Plan, path, fit: Optional[dict[str, int]] = None) -> None:
  data = plan.to_json()
  if fit is not None:
    data["largest_per_chip_batch"] = fit
  with open(path, "w") as f:
    json.dump(data, f, indent=2)
    f.write("\n")


def check_compiled_fits(compiled, config=None, *, name: str = "train step", hbm_bytes=None):
  """Raises PlanError with the plan's advice when `compiled` (a `jax.stages.Compiled` for TPU)
  needs more HBM per chip than the chip lets it use; returns its ProgramMemory otherwise.

  For the trainer on a real TPU, after compiling and before the first step. The limit is
  `hbm_bytes`, else the device's own `bytes_limit`, else the chip table. With `config`, the
  message names its per-chip batch, remat and fsdp size.
  """
  memory = _memory(name, compiled, 0.0)
  device = None
  try:
    device = compiled.input_shardings[0][0].device_set.pop() if compiled.input_shardings else None
  except Exception:  # pylint: disable=broad-except
    device = None
  device = device or jax.devices()[0]
  limit = hbm_bytes
  if limit is None:
    try:
      limit = (device.memory_stats() or {}).get("bytes_limit")
    except Exception:  # pylint: disable=broad-except  # Compile-only devices have no stats.
      limit = None
  chip = tpu.chip_for_device_kind(device.device_kind)
  if limit is None and chip is not None:
    limit = chip.usable_hbm_bytes
  if limit is None or memory.total <= limit:
    return memory
  per_chip, remat, mesh_shape = 1, "none", {}
  if config is not None:
    mesh = getattr(compiled.input_shardings[0][0], "mesh", None)
    mesh_shape = dict(mesh.shape) if mesh is not None else {}
    rules = rules_lib.rules_from_config(config.parallel)
    ways = math.prod(mesh_shape.get(a, 1) for a in rules_lib.batch_mesh_axes(rules))
    per_chip = config.data.batch_size // max(ways * config.train.grad_accum_steps, 1)
    remat = config.train.remat
  raise PlanError(
      _advice(
          memory,
          int(limit),
          device.device_kind,
          per_chip_batch=per_chip,
          remat=remat,
          mesh_shape=mesh_shape,
          params_and_optimizer=memory.arguments,
      )
  )
