"""What every launcher shares (``RunSpec``, the run log, ``sweep.json``) and the ``local`` launcher.

Every launcher turns a named run into the same program, ``python -m xnn.cli train
--config FILE[:ARG] --workdir SWEEP_DIR/NAME --config.field=value ...``; they
differ in where it runs: here (``launch_local``), on Slurm through submitit
(``xnn.sweeps.slurm``) or on Cloud TPU queued resources (``xnn.sweeps.tpu``). Runs
whose workdir holds ``final.json`` are finished and skipped; any other run is
(re)started, and ``xnn train`` resumes it from its newest checkpoint, so
re-launching a sweep after a crash, a kill or a preemption completes it.

Each start of a run appends the program's output to ``WORKDIR/launcher.log``
between two marker lines (``log_start``, ``log_exit``), whatever the launcher;
``xnn sweep status`` reads the last segment. A launch records the sweep's runs in
``SWEEP_DIR/sweep.json`` (``record_sweep``), so runs not started yet show as pending.

One writer per run: ``xnn train`` holds its workdir's lock (``xnn.train.workdir_lock``)
for its whole life and refuses a workdir another live process holds. The local
launcher looks before it starts a run and reports a busy one as ``busy``, not as a
failure; its children die with it, even when it is killed with SIGKILL (Linux).
"""

from __future__ import annotations

import ctypes
import dataclasses
import datetime
import json
import os
import shlex
import signal
import socket
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


SWEEP_RECORD = "sweep.json"
LOG = "launcher.log"
START_MARK = "== xnn sweep: start "
EXIT_MARK = "== xnn sweep: exit "


def record_sweep(sweep_dir: str, config: str, specs: Sequence[RunSpec], launcher: str,
                 extra: Sequence[str] = ()) -> None:
  """Writes ``SWEEP_DIR/sweep.json``: the config, the launcher and every run (name, overrides)."""
  from xnn.train.metrics import atomic_write
  if "://" in sweep_dir:
    return
  os.makedirs(sweep_dir, exist_ok=True)
  record = {"config": config, "launcher": launcher, "extra": list(extra),
            "runs": [{"name": s.name, "overrides": overrides(s.run)} for s in specs]}
  atomic_write(os.path.join(sweep_dir, SWEEP_RECORD), json.dumps(record, indent=1) + "\n")


def log_start(log, name: str, where: str = "") -> None:
  """Marks a start of run ``name`` in its open (binary) log: host, pid, UTC time."""
  now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
  log.write(f"{START_MARK}{name} on {where or socket.gethostname()} pid {os.getpid()} at {now} ==\n".encode())
  log.flush()


def log_exit(log, name: str, code: int, why: str = "") -> None:
  """Marks the end of that start: the program's exit status (negative: killed by that signal)."""
  log.write(f"{EXIT_MARK}{name} status {code}{f' ({why})' if why else ''} ==\n".encode())
  log.flush()


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
  logf = open(os.path.join(s.workdir, LOG), "ab")
  log_start(logf, s.name)
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
        log_exit(logf, s.name, code)
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
