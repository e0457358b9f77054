"""Multi-process start-up: `jax.distributed.initialize` from the environment.

  * TPU pod slices: every worker runs the same command; JAX finds the coordinator and the
    process ids from the TPU metadata, so `initialize()` needs no arguments. We detect a pod
    by the variables Cloud TPU VMs set (or JAXDISCO_DISTRIBUTED=auto forces it).
  * Local multi-process runs (`launch/local_multiprocess.py`, tests): an explicit coordinator
    from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID, with gloo for CPU
    collectives.
Anything else is a single process and nothing happens. Must run before JAX touches a backend.
"""

from __future__ import annotations

import os

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
    jax.distributed.initialize(
        coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
        num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
        process_id=int(os.environ["JAX_PROCESS_ID"]),
    )
    _done = True
  elif _on_tpu_pod():
    jax.distributed.initialize()
    _done = True
  return _done


def is_main_process() -> bool:
  """Process 0 writes metrics, logs and progress; every process saves its own shards."""
  return jax.process_index() == 0
