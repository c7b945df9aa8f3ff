"""Slurm through submitit: a sweep is one job array, preempted runs requeue themselves and resume.

``submit`` hands every unfinished run to one submitit executor inside
``executor.batch()``: on Slurm that is one ``sbatch --array=0-(N-1)%P`` (one array
task per run, at most ``array_parallelism`` at once); submitit's local executor
(``executor="local"``) runs the same submissions as processes of this machine.

Each array task calls a ``TrainRun``: it starts ``python -m xnn.cli train ...`` as a
child (output appended to ``WORKDIR/launcher.log``) and waits for it. Preemption
and time-outs follow submitit's checkpointing protocol: Slurm sends USR2
``signal_delay_s`` seconds before the end (``#SBATCH --signal=USR2@S``; clusters
that preempt with ``PreemptParameters=send_user_signal`` send it at preemption);
submitit calls ``TrainRun.checkpoint()``, which SIGTERMs the child (``xnn train``
saves a checkpoint at the next step boundary and exits 143) and returns a
``DelayedSubmission`` of the same call; submitit requeues the task
(``scontrol requeue``), and the requeued ``xnn train`` resumes from the newest
verified checkpoint, ending where an uninterrupted run would. At most
``max_requeues`` time-outs are requeued.

Multi-node runs (``nodes`` > 1, one task per node): every task joins one
``jax.distributed`` job; submitit's ``JobEnvironment`` gives the ranks and the
first node, which coordinates.

Logs: submitit's in ``SWEEP_DIR/slurm/`` (``%A_%a`` = array job and task), each
run's training output in its ``launcher.log``.

``SlurmRuns`` submits runs one at a time instead (a job each, the same ``TrainRun``),
for ``xnn search``, whose candidates are known only one after another.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any, Sequence

from xnn.sweeps.launchers import LOG, RunSpec, _die_with, log_exit, log_start


def _import_submitit():
  """submitit, imported without its logging set-up in this process.

  submitit configures logging when imported (``logging.config.dictConfig``), which closes every handler the
  process already has -- absl's among them, and with it the stream it writes to. ``SUBMITIT_LOG_LEVEL=NOCONFIG``
  skips that here (its warnings reach stderr through logging's last-resort handler); the jobs it starts
  configure their own.
  """
  ours = "SUBMITIT_LOG_LEVEL" not in os.environ
  if ours:
    os.environ["SUBMITIT_LOG_LEVEL"] = "NOCONFIG"
  try:
    import submitit
  finally:
    if ours:
      del os.environ["SUBMITIT_LOG_LEVEL"]
  return submitit


submitit = _import_submitit()

LOG_FOLDER = "slurm"
_TIME = re.compile(r"^(?:(?P<d>\d+)-)?(?P<a>\d+)(?::(?P<b>\d+))?(?::(?P<c>\d+))?$")
_MEM = re.compile(r"^\d+[KMGT]?B?$", re.IGNORECASE)


@dataclasses.dataclass
class SlurmOptions:
  """What ``#SBATCH`` asks for, per array task (= per run)."""
  partition: str = ""
  account: str = ""
  time: str = "24:00:00"           # Slurm's formats: MM, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS
  nodes: int = 1
  gpus_per_node: int = 8           # 0: no --gpus-per-node line
  cpus_per_task: int = 16
  mem: str = ""                    # e.g. 64G; empty: the partition's default
  signal_delay_s: int = 120        # USR2 this long before the time limit
  array_parallelism: int = 16      # array tasks running at once
  max_requeues: int = 10           # time-outs / preemptions requeued per run
  setup: tuple[str, ...] = ("source .venv/bin/activate",)   # shell lines before srun
  executor: str = "slurm"          # "slurm", or "local": submitit's local executor (this machine)


def minutes(text: str) -> int:
  """Slurm's ``--time`` formats as whole minutes (rounded up); ValueError naming the value."""
  m = _TIME.match(text.strip())
  if not m:
    raise ValueError(f"--time {text!r}: expected minutes, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS")
  d, a, b, c = (int(m[g]) if m[g] else None for g in "dabc")
  if d is None:       # MM, MM:SS, HH:MM:SS
    h, mi, s = (0, a, b or 0) if c is None else (a, b, c)
  else:               # D-HH, D-HH:MM, D-HH:MM:SS
    h, mi, s = a, b or 0, c or 0
  total = (d or 0) * 1440 + h * 60 + mi + (1 if s else 0)
  if total <= 0:
    raise ValueError(f"--time {text!r}: must be at least a minute")
  return total


def check_options(opt: SlurmOptions) -> None:
  """Bad options are one line each, before anything is written or submitted."""
  minutes(opt.time)
  if opt.mem and not _MEM.match(opt.mem):
    raise ValueError(f"--mem {opt.mem!r}: expected a size such as 64G or 500M")
  if opt.executor not in ("slurm", "local"):
    raise ValueError(f"--slurm-executor {opt.executor!r}: expected slurm or local")
  if opt.executor == "local" and opt.nodes != 1:
    raise ValueError(f"--nodes {opt.nodes}: submitit's local executor runs on this one machine (use --nodes 1)")
  if opt.signal_delay_s * 1.0 >= minutes(opt.time) * 60:
    raise ValueError(f"--signal-delay {opt.signal_delay_s} s: must be shorter than --time {opt.time}")


def parameters(opt: SlurmOptions, name: str) -> dict[str, Any]:
  """``SlurmExecutor.update_parameters`` arguments (submitit's names for the ``#SBATCH`` lines)."""
  p: dict[str, Any] = {"job_name": f"xnn-{name}"[:64], "time": minutes(opt.time), "nodes": opt.nodes,
                       "ntasks_per_node": 1, "cpus_per_task": opt.cpus_per_task,
                       "signal_delay_s": opt.signal_delay_s, "array_parallelism": opt.array_parallelism,
                       "stderr_to_stdout": True, "setup": list(opt.setup)}
  for key in ("partition", "account", "mem"):
    if getattr(opt, key):
      p[key] = getattr(opt, key)
  if opt.gpus_per_node:
    p["gpus_per_node"] = opt.gpus_per_node
  return p


def executor(sweep_dir: str, opt: SlurmOptions, name: str):
  """The submitit executor of a sweep: Slurm's, or the local one with the same time, GPUs and signal delay."""
  folder = os.path.join(sweep_dir, LOG_FOLDER, "%j")
  p = parameters(opt, name)
  if opt.executor == "local":
    ex = submitit.LocalExecutor(folder, max_num_timeout=opt.max_requeues)
    ex.update_parameters(timeout_min=p["time"], gpus_per_node=p.get("gpus_per_node", 0),
                         signal_delay_s=p["signal_delay_s"], stderr_to_stdout=True)
    return ex
  ex = submitit.SlurmExecutor(folder, max_num_timeout=opt.max_requeues)
  ex.update_parameters(**p)
  return ex


def sbatch_text(sweep_dir: str, opt: SlurmOptions, name: str, n_runs: int) -> str:
  """The sbatch file submitit writes for an array of ``n_runs`` tasks (what ``SlurmExecutor`` submits).

  Rendered by submitit's own ``_make_sbatch_string`` with the executor's parameters,
  command and ``map_count`` (how ``SlurmExecutor`` submits arrays), without needing
  ``srun`` on this machine.
  """
  from submitit.slurm.slurm import _make_sbatch_string
  folder = Path(sweep_dir, LOG_FOLDER, "%j").expanduser().absolute()
  command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])
  return _make_sbatch_string(command=command, folder=folder, map_count=n_runs if n_runs > 1 else None,
                             **parameters(opt, name))


class TrainRun(submitit.helpers.Checkpointable):
  """One run as a submitit callable: ``xnn train`` in a child process; requeued on preemption.

  Submitit's checkpointing protocol (``submitit.helpers.Checkpointable``): on USR2,
  ``checkpoint()`` stops the child (SIGTERM: ``xnn train`` checkpoints and exits) and
  returns a ``DelayedSubmission`` of this same call, which submitit requeues.
  """

  def __init__(self, name: str, argv: Sequence[str], workdir: str, cwd: str, grace_s: float = 60.0):
    self.name, self.argv, self.workdir, self.cwd, self.grace_s = name, list(argv), workdir, cwd, grace_s
    self._child: subprocess.Popen | None = None
    self._log = None

  def __getstate__(self) -> dict[str, Any]:       # the child and the log stay with this process
    return {**self.__dict__, "_child": None, "_log": None}

  def __call__(self) -> dict[str, Any] | None:
    os.makedirs(self.workdir, exist_ok=True)
    with open(os.path.join(self.workdir, LOG), "ab") as self._log:
      log_start(self._log, self.name)
      self._child = subprocess.Popen([sys.executable, "-m", "xnn.cli", *self.argv], cwd=self.cwd,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **distributed_env()}, preexec_fn=_die_with(os.getpid()))
      code = self._wait(self._child)
      if code >= 128:        # SIGTERM alone (Slurm's preemption sends USR2 too): give its handler time to requeue
        deadline = time.time() + self.grace_s
        while time.time() < deadline:
          time.sleep(0.5)
      log_exit(self._log, self.name, code)
    self._log = None
    if code != 0:
      why = "interrupted; re-launching the sweep resumes it" if code >= 128 or code < 0 else "failed"
      raise RuntimeError(f"run {self.name} exited with status {code} ({why}); see {self.workdir}/{LOG}")
    try:
      with open(os.path.join(self.workdir, "final.json")) as f:
        return json.load(f)
    except (OSError, json.JSONDecodeError):
      return None

  @staticmethod
  def _wait(child: subprocess.Popen) -> int:
    """Waits by polling: ``Popen.wait()`` would hold the lock that ``checkpoint()``'s wait needs."""
    while child.poll() is None:
      time.sleep(0.2)
    return child.returncode

  def checkpoint(self, *args: Any, **kwargs: Any):
    """Stops the child so that it checkpoints, then resubmits this same call (submitit requeues it)."""
    child = self._child
    if child is not None and child.poll() is None:
      child.send_signal(signal.SIGTERM)
      deadline = time.time() + self.grace_s
      while child.poll() is None and time.time() < deadline:
        time.sleep(0.1)
      if child.poll() is None:
        child.kill()
        child.wait()
    if self._log is not None and child is not None:
      log_exit(self._log, self.name, child.returncode, "requeued")
    return super().checkpoint(*args, **kwargs)


def distributed_env() -> dict[str, str]:
  """``jax.distributed``'s coordinates for a multi-task submitit job (``xnn.train.distributed``); {} for one task.

  The first node coordinates on a port derived from the job id, which every task knows.
  """
  try:
    env = submitit.JobEnvironment()
  except RuntimeError:       # not inside a submitit job
    return {}
  if env.num_tasks <= 1:
    return {}
  port = 20000 + zlib.crc32(env.job_id.encode()) % 20000
  return {"XNN_COORDINATOR_ADDRESS": f"{env.hostnames[0]}:{port}", "XNN_NUM_PROCESSES": str(env.num_tasks),
          "XNN_PROCESS_ID": str(env.global_rank)}


def runs(specs: Sequence[RunSpec], config: str, extra: Sequence[str] = (), cwd: str | None = None) -> list[TrainRun]:
  """A ``TrainRun`` per unfinished run."""
  cwd = cwd or os.getcwd()
  return [TrainRun(s.name, s.train_args(config, extra), s.workdir, cwd) for s in specs if not s.finished]


def submit(sweep_dir: str, specs: Sequence[RunSpec], config: str, opt: SlurmOptions, *, extra: Sequence[str] = (),
           name: str = "sweep") -> list[tuple[TrainRun, Any]]:
  """Submits every unfinished run as one job array; (run, submitit job) pairs."""
  check_options(opt)
  todo = runs(specs, config, extra)
  if not todo:
    return []
  ex = executor(sweep_dir, opt, name)
  with ex.batch():
    jobs = [ex.submit(r) for r in todo]
  return list(zip(todo, jobs))


def dry_run(sweep_dir: str, specs: Sequence[RunSpec], config: str, opt: SlurmOptions, *, extra: Sequence[str] = (),
            name: str = "sweep", log=print) -> None:
  """Prints the job array submitit would submit: the sbatch file, then each array task's run."""
  check_options(opt)
  todo = runs(specs, config, extra)
  if not todo:
    log("every run is finished: nothing to submit")
    return
  log(f"# one job array of {len(todo)} tasks (at most {min(len(todo), opt.array_parallelism)} at once), "
      f"submitted with sbatch by submitit; logs in {os.path.join(sweep_dir, LOG_FOLDER)}/")
  log(sbatch_text(sweep_dir, opt, name, len(todo)))
  for i, r in enumerate(todo):
    log(f"# array task {i}: {r.name}\n#   {shlex.join(['python', '-m', 'xnn.cli', *r.argv])}")


class SlurmRuns:
  """Runs submitted one at a time, each its own submitit job, at most ``parallel`` in flight.

  For what learns its runs one by one (``xnn search``: each candidate is known only
  once the previous ones are told); the interface of ``launchers.LocalRuns``. Each
  job is a ``TrainRun`` (requeued on preemption, like an array task). ``signal``
  cancels the job (``scancel``: Slurm sends SIGTERM, ``xnn train`` saves a checkpoint;
  submitit's local executor sends SIGINT to the task, whose ``xnn train`` child then
  gets SIGTERM). The exit status of a run that ended is the one its ``launcher.log``
  recorded.
  """

  def __init__(self, sweep_dir: str, config: str, opt: SlurmOptions, extra: Sequence[str] = (), parallel: int = 1,
               name: str = "search"):
    check_options(opt)
    self.config, self.extra, self.parallel = config, list(extra), parallel
    self.executor = executor(sweep_dir, opt, name)
    self.jobs: dict[str, tuple[RunSpec, Any]] = {}
    self.cwd = os.getcwd()

  def __len__(self) -> int:
    return len(self.jobs)

  @property
  def has_room(self) -> bool:
    return len(self.jobs) < self.parallel

  def start(self, s: RunSpec) -> str | None:
    from xnn.sweeps.launchers import _busy
    from xnn.train.workdir_lock import probe_workdir
    busy = probe_workdir(s.workdir)
    if busy is not None:
      return _busy(busy)
    run = TrainRun(s.name, s.train_args(self.config, self.extra), s.workdir, self.cwd)
    self.jobs[s.name] = (s, self.executor.submit(run))
    return None

  def pid(self, name: str) -> str | None:
    """The submitit job id of run ``name``."""
    return self.jobs[name][1].job_id if name in self.jobs else None

  def poll(self) -> list[tuple[RunSpec, int, str]]:
    from xnn.sweeps.launchers import _exit_status
    from xnn.sweeps.status import last_exit
    out = []
    for name, (s, job) in list(self.jobs.items()):
      if not job.done():
        continue
      del self.jobs[name]
      code = last_exit(s.workdir)
      code = 1 if code is None else code       # the job ended without logging an exit: it failed around the run
      out.append((s, code, _exit_status(s, code)))
    return out

  def signal(self, signum: int = signal.SIGTERM, name: str | None = None) -> None:
    del signum                                 # a job is stopped by cancelling it
    for n, (_, job) in list(self.jobs.items()):
      if name is None or n == name:
        job.cancel(check=False)
