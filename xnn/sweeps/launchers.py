"""Sweep launchers: ``local`` processes, Cloud TPU VM pod slices, Slurm clusters.

Every launcher turns a named run into the same program, ``python -m xnn.cli train
--config FILE[:ARG] --workdir SWEEP_DIR/NAME --config.field=value ...``; they
differ in where it runs. Runs whose workdir holds ``final.json`` are finished and
skipped; any other run is (re)started, and ``xnn train`` resumes it from its
newest checkpoint, so re-launching a sweep after a crash or a kill completes it.

One writer per run: ``xnn train`` holds its workdir's lock (``xnn.train.workdir_lock``)
for its whole life and refuses a workdir another live process holds. The local
launcher looks before it starts a run and reports a busy one as ``busy``, not as a
failure; its children die with it, even when it is killed with SIGKILL (Linux).
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from typing import Any, Sequence

from xnn.sweeps.spec import Run, overrides
from xnn.train.workdir_lock import WorkdirBusy, probe_workdir


@dataclasses.dataclass
class RunSpec:
  name: str
  run: Run
  workdir: str

  def train_args(self, config: str, extra: Sequence[str] = ()) -> list[str]:
    return ["train", f"--config={config}", f"--workdir={self.workdir}", *overrides(self.run), *extra]

  @property
  def finished(self) -> bool:
    return os.path.exists(os.path.join(self.workdir, "final.json"))

  def final(self) -> dict[str, Any] | None:
    try:
      with open(os.path.join(self.workdir, "final.json")) as f:
        return json.load(f)
    except (OSError, json.JSONDecodeError):
      return None


def run_specs(named: Sequence[tuple[str, Run]], sweep_dir: str) -> list[RunSpec]:
  return [RunSpec(n, r, os.path.join(sweep_dir, n)) for n, r in named]


# ----------------------------------------------------------------------------- local


def _visible_devices(slot: int, parallel: int) -> dict[str, str]:
  """Splits this machine's GPUs between ``parallel`` concurrent runs (none on CPU)."""
  gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
  if gpus is None:
    try:
      out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
      n = len([line for line in out.stdout.splitlines() if line.startswith("GPU ")])
      gpus = ",".join(map(str, range(n))) if n else ""
    except (OSError, subprocess.SubprocessError):
      gpus = ""
  ids = [g for g in gpus.split(",") if g]
  if not ids or parallel <= 1:
    return {}
  mine = ids[slot::parallel]
  return {"CUDA_VISIBLE_DEVICES": ",".join(mine)} if mine else {}


_PR_SET_PDEATHSIG = 1     # linux/prctl.h


def _die_with(parent_pid: int):
  """A ``preexec_fn`` that has the kernel send the child SIGTERM when its parent dies (Linux), or None.

  ``prctl(PR_SET_PDEATHSIG)`` (man 2 prctl) fires when the *thread* that forked the
  child ends; ``launch_local`` forks from the thread that waits for every child, which
  outlives them. SIGTERM makes ``xnn train`` save a checkpoint and stop. The setting
  survives ``exec``. Elsewhere (macOS, BSD) there is no such call: a SIGTERM/SIGINT to
  the launcher is still passed on, a SIGKILL leaves the children running.
  """
  if not sys.platform.startswith("linux"):
    return None
  libc = ctypes.CDLL(None, use_errno=True)      # loaded here: the child only calls it

  def preexec():
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
      raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:               # the launcher died before the call
      os._exit(128 + signal.SIGTERM)
  return preexec


def _busy(err: WorkdirBusy) -> str:
  who = err.holder.describe() if err.holder else "another process"
  return f"busy, not started: its workdir is in use by {who}"


def _start(s: RunSpec, config: str, extra: Sequence[str], env: dict[str, str], preexec) -> tuple[subprocess.Popen, Any]:
  """Starts ``xnn train`` for ``s``, its output appended to ``WORKDIR/launcher.log``; (process, log file)."""
  os.makedirs(s.workdir, exist_ok=True)
  logf = open(os.path.join(s.workdir, "launcher.log"), "ab")
  proc = subprocess.Popen([sys.executable, "-m", "xnn.cli", *s.train_args(config, extra)], stdout=logf,
                          stderr=subprocess.STDOUT, env={**os.environ, **env}, preexec_fn=preexec)
  return proc, logf


def _exit_status(s: RunSpec, code: int) -> str:
  """A finished child's status: done, interrupted (it saved a checkpoint), killed, busy or failed."""
  if code == 0:
    return "done"
  if code >= 128:
    return "interrupted"
  if code < 0:
    try:
      name = signal.Signals(-code).name
    except ValueError:
      name = f"signal {-code}"
    return f"killed by {name} (see {s.workdir}/launcher.log)"
  busy = probe_workdir(s.workdir)         # refused because another writer holds the workdir
  return _busy(busy) if busy else f"failed (exit {code}, see {s.workdir}/launcher.log)"


def launch_local(specs: Sequence[RunSpec], config: str, *, parallel: int = 1, extra: Sequence[str] = (),
                 dry_run: bool = False, log=print) -> dict[str, str]:
  """Runs the sweep as local processes, ``parallel`` at a time; returns name -> status.

  SIGTERM/SIGINT to the launcher is passed on to the running runs, which save a
  checkpoint and stop; launching again resumes them. A SIGKILL of the launcher sends
  them SIGTERM too (Linux, see ``_die_with``). A run whose workdir another live
  process holds (a run of another launcher, a straggler of a killed one) is not
  started: its status is ``busy, not started: …``, and so is that of a run that its
  ``xnn train`` refused for the same reason.
  """
  if parallel < 1:
    raise ValueError(f"--parallel must be >= 1, got {parallel}")
  status: dict[str, str] = {}
  todo = []
  for s in specs:
    if s.finished:
      status[s.name] = "done (skipped)"
    else:
      todo.append(s)
  if dry_run:
    for s in todo:
      log(shlex.join([sys.executable, "-m", "xnn.cli", *s.train_args(config, extra)]))
    return {**status, **{s.name: "dry-run" for s in todo}}
  running: dict[int, tuple[RunSpec, subprocess.Popen, Any]] = {}
  stop = {"signum": None}

  def handle(signum, frame):
    del frame
    stop["signum"] = signum
    for _, proc, _ in running.values():
      if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)

  old = {sg: signal.signal(sg, handle) for sg in (signal.SIGTERM, signal.SIGINT)}
  preexec = _die_with(os.getpid())
  try:
    queue = list(todo)
    free = list(range(parallel))
    while queue or running:
      while queue and free and stop["signum"] is None:
        s = queue.pop(0)
        busy = probe_workdir(s.workdir)
        if busy is not None:
          status[s.name] = _busy(busy)
          log(f"{s.name}: {status[s.name]}")
          continue
        slot = free.pop(0)
        running[slot] = (s, *_start(s, config, extra, _visible_devices(slot, parallel), preexec))
        log(f"started {s.name} (pid {running[slot][1].pid})")
      for slot, (s, proc, logf) in list(running.items()):
        code = proc.poll()
        if code is None:
          continue
        logf.close()
        del running[slot]
        free.append(slot)
        status[s.name] = _exit_status(s, code)
        log(f"{s.name}: {status[s.name]}")
      if stop["signum"] is not None and not running:
        break
      time.sleep(0.2)
  finally:
    for sg, h in old.items():
      signal.signal(sg, h)
  for s in queue if stop["signum"] is not None else []:
    status[s.name] = "not started"
  if stop["signum"] is not None:
    raise KeyboardInterrupt(f"sweep stopped by signal {stop['signum']}; launch again to resume")
  return status


# ----------------------------------------------------------------------------- TPU


@dataclasses.dataclass
class TpuOptions:
  name: str
  zone: str
  accelerator_type: str = "v5litepod-16"
  runtime_version: str = "v2-alpha-tpuv5-lite"
  project: str = ""
  create: bool = False
  install: str = "pip install -U 'jax[tpu]' && pip install -e ."   # run in the repo copy on every worker
  repo_dir: str = "xnn"


def tpu_commands(specs: Sequence[RunSpec], config: str, opt: TpuOptions, extra: Sequence[str] = ()) -> list[list[str]]:
  """The gcloud commands that run the sweep on a Cloud TPU VM pod slice, in order.

  Every run is one ``tpu-vm ssh --worker=all`` so each host runs the same
  program; ``XNN_DISTRIBUTED=auto`` makes ``jax.distributed.initialize()`` find the
  pod by itself. Workdirs may be ``gs://`` paths (orbax and TFDS read them).
  """
  base = ["gcloud", "compute", "tpus", "tpu-vm"]
  where = [f"--zone={opt.zone}"] + ([f"--project={opt.project}"] if opt.project else [])
  cmds = []
  if opt.create:
    cmds.append(base + ["create", opt.name, *where, f"--accelerator-type={opt.accelerator_type}",
                        f"--version={opt.runtime_version}"])
  cmds.append(base + ["scp", "--recurse", ".", f"{opt.name}:{opt.repo_dir}", *where, "--worker=all"])
  cmds.append(base + ["ssh", opt.name, *where, "--worker=all", f"--command=cd {opt.repo_dir} && {opt.install}"])
  for s in specs:
    if s.finished:
      continue
    train = shlex.join(["python3", "-m", "xnn.cli", *s.train_args(config, extra)])
    cmds.append(base + ["ssh", opt.name, *where, "--worker=all",
                        f"--command=cd {opt.repo_dir} && XNN_DISTRIBUTED=auto {train}"])
  return cmds


# ----------------------------------------------------------------------------- Slurm


@dataclasses.dataclass
class SlurmOptions:
  nodes: int = 1
  gpus_per_node: int = 8
  partition: str = ""
  time: str = "24:00:00"
  cpus_per_task: int = 16
  setup: str = "source .venv/bin/activate"


def sbatch_script(spec: RunSpec, config: str, opt: SlurmOptions, extra: Sequence[str] = ()) -> str:
  """An sbatch script for one run: one task per node; jax.distributed reads Slurm's environment."""
  lines = ["#!/bin/bash", f"#SBATCH --job-name=xnn-{spec.name[:60]}", f"#SBATCH --nodes={opt.nodes}",
           "#SBATCH --ntasks-per-node=1", f"#SBATCH --gpus-per-node={opt.gpus_per_node}",
           f"#SBATCH --cpus-per-task={opt.cpus_per_task}", f"#SBATCH --time={opt.time}",
           f"#SBATCH --output={spec.workdir}/slurm-%j.out", "#SBATCH --signal=TERM@120"]
  if opt.partition:
    lines.append(f"#SBATCH --partition={opt.partition}")
  train = shlex.join(["python", "-m", "xnn.cli", *spec.train_args(config, extra)])
  lines += ["set -euo pipefail", opt.setup, f"mkdir -p {shlex.quote(spec.workdir)}",
            f"srun --kill-on-bad-exit=1 env XNN_DISTRIBUTED=auto {train}"]
  return "\n".join(lines) + "\n"


def launch_slurm(specs: Sequence[RunSpec], config: str, opt: SlurmOptions, *, extra: Sequence[str] = (),
                 dry_run: bool = False, log=print) -> dict[str, str]:
  """Writes ``WORKDIR/job.sbatch`` per unfinished run and submits it with ``sbatch``."""
  status = {}
  for s in specs:
    if s.finished:
      status[s.name] = "done (skipped)"
      continue
    script = sbatch_script(s, config, opt, extra)
    path = os.path.join(s.workdir, "job.sbatch")
    if dry_run:
      log(f"# {path}\n{script}sbatch {path}\n")
      status[s.name] = "dry-run"
      continue
    os.makedirs(s.workdir, exist_ok=True)
    with open(path, "w") as f:
      f.write(script)
    out = subprocess.run(["sbatch", path], capture_output=True, text=True, check=True)
    status[s.name] = out.stdout.strip()
    log(f"{s.name}: {status[s.name]}")
  return status
