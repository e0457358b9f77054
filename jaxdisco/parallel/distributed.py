"""Multi-process start-up: `jax.distributed.initialize` from the environment.

  * TPU pod slices: every worker runs the same command; JAX finds the coordinator and the
    process ids from the TPU metadata, so `initialize()` needs no arguments. We detect a pod
    by the variables Cloud TPU VMs set (or JAXDISCO_DISTRIBUTED=auto forces it).
  * Local multi-process runs (`launch/local_multiprocess.py`, tests): an explicit coordinator
    from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID, with gloo for CPU
    collectives.
Anything else is a single process and nothing happens. Must run before JAX touches a backend.

Processes meet at barriers of the coordination service (`barrier`), never at a device
collective: on CPU, gloo gives up on a collective whose peers are not there within a fixed 30 s,
and two hosts easily drift that far apart while one compiles or restores a checkpoint. For the
same reason `run_in_lockstep` compiles a step on every process *before* the first execution
and waits at a barrier in between.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

import jax

_done = False


def _on_tpu_pod() -> bool:
  if os.environ.get("JAXDISCO_DISTRIBUTED", "") == "auto":
    return True
  hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  return len([h for h in hosts.split(",") if h]) > 1


def initialize_from_env() -> bool:
  """Initializes the distributed runtime if the environment asks for it; True if it did."""
  global _done
  if _done:
    return True
  if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    if os.environ.get("JAXDISCO_CPU_COLLECTIVES", "gloo"):
      jax.config.update(
          "jax_cpu_collectives_implementation", os.environ.get("JAXDISCO_CPU_COLLECTIVES", "gloo")
      )
    _orbax_uses_coordination_barriers()
    jax.distributed.initialize(
        coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
        num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
        process_id=int(os.environ["JAX_PROCESS_ID"]),
    )
    _done = True
  elif _on_tpu_pod():
    _orbax_uses_coordination_barriers()
    jax.distributed.initialize()
    _done = True
  return _done


def is_main_process() -> bool:
  """Process 0 writes metrics, logs and progress; every process saves its own shards."""
  return jax.process_index() == 0


def _orbax_uses_coordination_barriers() -> None:
  """Orbax syncs hosts around saves and restores with a device collective unless told to use
  the coordination service (its `experimental_orbax_use_distributed_barrier` flag): turn the
  flag on, whether or not absl flags have been parsed."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint  # pylint: disable=g-import-not-at-top,unused-import  (defines it)

  name = "experimental_orbax_use_distributed_barrier"
  if name in flags.FLAGS:
    flags.FLAGS[name].value = True
    flags.FLAGS[name].present = 1  # Readable before absl parses the command line.


BARRIER_TIMEOUT_S = 1800  # Longer than any compile or restore of a pod-size program.


def barrier(name: str, timeout_s: float = BARRIER_TIMEOUT_S) -> None:
  """Blocks until every process has called `barrier(name)` (no-op for one process). Names are
  used once per run, in the same order on every process."""
  if jax.process_count() == 1:
    return
  from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top

  jax_distributed.global_state.client.wait_at_barrier(f"jaxdisco/{name}", int(timeout_s * 1000))


def _signature(args) -> tuple:
  leaves, treedef = jax.tree.flatten(args)
  return (treedef, tuple((x.shape, str(x.dtype)) for x in leaves))


def run_in_lockstep(
    jitted: Callable, name: str, check: Optional[Callable[[Any], Any]] = None
) -> Callable[..., Any]:
  """`jitted` (a `jax.jit` function), called the same way; on several processes each new input
  signature is lowered and compiled first, then every process waits at a barrier, so the first
  execution (where gloo connects the hosts' collectives) starts on all hosts together. Every
  process must call it with the same sequence of signatures (SPMD programs do).

  `check(compiled)` runs on each new program before its first execution (the trainer's HBM
  check, `plan.check_compiled_fits`): a program that cannot run stops there, with a message,
  instead of in the middle of a step."""
  if jax.process_count() == 1 and check is None:
    return jitted
  compiled: dict[tuple, Callable] = {}

  def call(*args):
    key = _signature(args)
    program = compiled.get(key)
    if program is None:
      program = jitted.lower(*args).compile()
      if check is not None:
        check(program)
      if jax.process_count() > 1:
        barrier(f"{name}/compiled/{len(compiled)}")
      compiled[key] = program
    return program(*args)

  return call
