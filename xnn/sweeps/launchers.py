"""What every launcher shares (``RunSpec``, the run log, ``sweep.json``) and the ``local`` launcher.

``LocalRuns`` keeps the local launcher's child processes (start, poll, signal);
``launch_local`` runs a whole sweep through it, and ``xnn search`` starts its
candidates through it one by one.

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


class LocalRuns:
  """``xnn train`` runs as children of this process, at most ``parallel`` at once, each in a slot (its GPUs).

  What ``launch_local`` and ``xnn search`` share: ``start`` looks whether another
  live process holds the run's workdir first; ``poll`` collects the runs that ended
  (their exit marker written, their status as ``launch_local`` reports it); ``signal``
  passes a signal on (SIGTERM: the run saves a checkpoint and stops). The children
  die with this process (``_die_with``): start them from the thread that outlives them.
  """

  def __init__(self, config: str, extra: Sequence[str] = (), parallel: int = 1):
    if parallel < 1:
      raise ValueError(f"--parallel must be >= 1, got {parallel}")
    self.config, self.extra, self.parallel = config, list(extra), parallel
    self.running: dict[int, tuple[RunSpec, subprocess.Popen, Any]] = {}
    self.free = list(range(parallel))
    self._preexec = _die_with(os.getpid())

  def __len__(self) -> int:
    return len(self.running)

  @property
  def has_room(self) -> bool:
    return bool(self.free)

  def start(self, s: RunSpec) -> str | None:
    """Starts ``s`` in a free slot; returns None, or why it was not started (its workdir is busy)."""
    busy = probe_workdir(s.workdir)
    if busy is not None:
      return _busy(busy)
    slot = self.free.pop(0)
    self.running[slot] = (s, *_start(s, self.config, self.extra, _visible_devices(slot, self.parallel),
                                     self._preexec))
    return None

  def pid(self, name: str) -> int | None:
    return next((p.pid for s, p, _ in self.running.values() if s.name == name), None)

  def poll(self) -> list[tuple[RunSpec, int, str]]:
    """The runs that have ended since the last call: (run, exit status, status text)."""
    out = []
    for slot, (s, proc, logf) in list(self.running.items()):
      code = proc.poll()
      if code is None:
        continue
      log_exit(logf, s.name, code)
      logf.close()
      del self.running[slot]
      self.free.append(slot)
      out.append((s, code, _exit_status(s, code)))
    return out

  def signal(self, signum: int = signal.SIGTERM, name: str | None = None) -> None:
    """Sends ``signum`` to the running run ``name`` (every running run if None)."""
    for s, proc, _ in self.running.values():
      if (name is None or s.name == name) and proc.poll() is None:
        proc.send_signal(signum)


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
  runs = LocalRuns(config, extra, parallel)
  stop = {"signum": None}

  def handle(signum, frame):
    del frame
    stop["signum"] = signum
    runs.signal(signal.SIGTERM)

  old = {sg: signal.signal(sg, handle) for sg in (signal.SIGTERM, signal.SIGINT)}
  try:
    queue = list(todo)
    while queue or runs:
      while queue and runs.has_room and stop["signum"] is None:
        s = queue.pop(0)
        why = runs.start(s)
        if why is not None:
          status[s.name] = why
          log(f"{s.name}: {why}")
          continue
        log(f"started {s.name} (pid {runs.pid(s.name)})")
      for s, _, text in runs.poll():
        status[s.name] = text
        log(f"{s.name}: {text}")
      if stop["signum"] is not None and not runs:
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
