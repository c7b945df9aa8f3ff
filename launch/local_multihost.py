"""Run one xnn command as N processes on this machine, joined by jax.distributed.

    python launch/local_multihost.py --processes 2 --devices-per-process 4 -- \
        xnn train --workdir runs/mh --config.train.num_epochs=1

Each process sees ``--devices-per-process`` simulated CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count``), so 2 x 4 behaves like a
two-host job with 8 devices: per-host input sharding, cross-process gradient
all-reduce, multi-process orbax checkpoints. It is how the multi-host path is
tested on a laptop; real clusters use ``XNN_DISTRIBUTED=auto`` (TPU pods, Slurm).
Exits with the first non-zero status of the processes.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--processes", type=int, default=2)
  p.add_argument("--devices-per-process", type=int, default=4)
  p.add_argument("command", nargs=argparse.REMAINDER, help="the command after --")
  a = p.parse_args(argv)
  cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
  if not cmd:
    p.error("give the command to run after --")
  if a.processes < 1 or a.devices_per_process < 1:
    p.error(f"--processes and --devices-per-process must be >= 1, got {a.processes} and {a.devices_per_process}")
  port = free_port()
  procs = []
  for pid in range(a.processes):
    env = {**os.environ, "XNN_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
           "XNN_NUM_PROCESSES": str(a.processes), "XNN_PROCESS_ID": str(pid),
           "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={a.devices_per_process}"}
    procs.append(subprocess.Popen(cmd, env=env))
  codes = [proc.wait() for proc in procs]
  return next((c for c in codes if c), 0)


if __name__ == "__main__":
  sys.exit(main())
