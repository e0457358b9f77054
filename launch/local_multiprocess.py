#!/usr/bin/env python3
r"""Runs one command as N local JAX processes with M simulated CPU devices each: a multi-host
pod on one machine, for tests and for trying multi-host code without a pod.

  python launch/local_multiprocess.py --num_processes 2 --devices_per_process 4 -- \
      jaxdisco pretrain --config configs/demo.py --workdir /tmp/mh --config.train.num_steps=20 \
      --config.optim.warmup_steps=10

Each process gets JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID (read by
`jaxdisco.parallel.distributed.initialize_from_env`, which then uses gloo for CPU
collectives) and XLA_FLAGS=--xla_force_host_platform_device_count=M. Output lines are prefixed
with the process id. SIGTERM/SIGINT are forwarded to every process (a simulated preemption);
if one process fails the others are stopped. The exit status is the first non-zero one.

Flags:
  --num_processes N        processes to start (default 2)
  --devices_per_process M  simulated CPU devices in each (default 4)
  --port P                 coordinator port on localhost (default: a free one)
  --timeout S              stop everything after S seconds (default: none)
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _stream(proc: subprocess.Popen, prefix: str) -> None:
  for line in proc.stdout:
    sys.stdout.write(f"{prefix}{line}")
    sys.stdout.flush()


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      description="Run a command as N local JAX processes with M CPU devices each.",
      usage="%(prog)s [--num_processes N] [--devices_per_process M] [--port P] -- COMMAND ...",
  )
  parser.add_argument("--num_processes", type=int, default=2)
  parser.add_argument("--devices_per_process", type=int, default=4)
  parser.add_argument("--port", type=int, default=0)
  parser.add_argument("--timeout", type=float, default=0)
  parser.add_argument("command", nargs=argparse.REMAINDER)
  args = parser.parse_args(argv)
  command = args.command[1:] if args.command[:1] == ["--"] else args.command
  if not command:
    parser.error("no command given (put it after --)")
  port = args.port or _free_port()
  procs = []
  for i in range(args.num_processes):
    env = dict(
        os.environ,
        JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
        JAX_NUM_PROCESSES=str(args.num_processes),
        JAX_PROCESS_ID=str(i),
        JAX_PLATFORMS="cpu",
        PYTHONUNBUFFERED="1",
        XLA_FLAGS=(
            os.environ.get("XLA_FLAGS", "")
            + f" --xla_force_host_platform_device_count={args.devices_per_process}"
        ),
    )
    procs.append(
        subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    )
  threads = [
      threading.Thread(target=_stream, args=(p, f"[{i}] "), daemon=True)
      for i, p in enumerate(procs)
  ]
  for t in threads:
    t.start()

  def forward(signum, frame):
    for p in procs:
      if p.poll() is None:
        p.send_signal(signum)

  signal.signal(signal.SIGTERM, forward)
  signal.signal(signal.SIGINT, forward)

  deadline = time.monotonic() + args.timeout if args.timeout else None
  status = 0
  while any(p.poll() is None for p in procs):
    failed = [p.returncode for p in procs if p.returncode not in (None, 0)]
    timed_out = deadline is not None and time.monotonic() > deadline
    if failed or timed_out:
      status = failed[0] if failed else 124
      time.sleep(5)  # Let the others report their side of the failure.
      for p in procs:
        if p.poll() is None:
          p.kill()
      break
    time.sleep(0.2)
  for p in procs:
    p.wait()
  for t in threads:
    t.join(timeout=5)
  return status or next((p.returncode for p in procs if p.returncode), 0)


if __name__ == "__main__":
  sys.exit(main())
