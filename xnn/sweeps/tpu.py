"""Cloud TPU sweeps that survive preemption: queued resources and a supervisor per slice.

Each of ``slices`` slices is a queued resource ``NAME-i`` with a node of the same
name (``gcloud compute tpus queued-resources create ... [--spot | --best-effort]``).
One supervisor thread per slice takes the next unfinished run of the sweep and
runs ``xnn train`` on every worker of its slice (``gcloud compute tpus tpu-vm ssh
--worker=all``; ``XNN_DISTRIBUTED=auto`` lets ``jax.distributed.initialize()`` find
the pod). When that command fails, the supervisor asks the queued resource's state
(``queued-resources describe``):

* not ``ACTIVE`` (spot capacity reclaimed: ``SUSPENDING``/``SUSPENDED``, or
  ``FAILED``): the slice was preempted. The queued resource is deleted and created
  again, the code copied and installed again, and the same run is rerun; it resumes
  from its newest verified checkpoint (workdirs must be where every worker and every
  new slice sees them, e.g. ``gs://``). Preemptions do not count as failures.
* ``ACTIVE``: a worker failed. The run is rerun on every worker (it resumes from its
  checkpoint), at most ``max_restarts`` times; then it is ``failed``.

What goes to the workers is only the code (``bundle_files``: ``git ls-files``, never
``.venv``, ``runs/`` or ``.git``; without git, an explicit include list), packed into one
tarball, ``tpu-vm scp``'d and unpacked into ``repo_dir``, then ``install`` runs there.
Each run's output is appended to its ``launcher.log`` (in the run folder, or under
``runs/tpu-logs/`` for a ``gs://`` sweep). When the sweep is done the slices are
deleted unless ``keep``.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import shlex
import subprocess
import tarfile
import tempfile
import threading
import time
from typing import Sequence

from xnn.sweeps.launchers import LOG, RunSpec, log_exit, log_start

ACTIVE = "ACTIVE"
WAITING = ("ACCEPTED", "CREATING", "PROVISIONING", "WAITING_FOR_RESOURCES")
EXCLUDED = (".venv", "runs", ".git")                  # never copied to a worker
INCLUDED = ("pyproject.toml", "README.md", "xnn", "experiments", "launch")   # without git
BUNDLE = "xnn_bundle.tgz"
CONFIG_DIR = ".xnn_sweep"                             # a config from outside the copied folder goes here


@dataclasses.dataclass
class TpuOptions:
  name: str
  zone: str
  project: str = ""
  accelerator_type: str = "v5litepod-16"
  runtime_version: str = "v2-alpha-tpuv5-lite"
  slices: int = 1
  spot: bool = False
  best_effort: bool = False
  install: str = "pip install -U 'jax[tpu]' && pip install -e ."   # run in repo_dir on every worker
  repo_dir: str = "xnn"
  python: str = "python3"
  max_restarts: int = 3
  keep: bool = False
  poll_s: float = 30.0
  provision_timeout_s: float = 6 * 3600.0


class GcloudError(RuntimeError):
  pass


def slice_name(opt: TpuOptions, i: int) -> str:
  return f"{opt.name}-{i}"


def _where(opt: TpuOptions) -> list[str]:
  return [f"--zone={opt.zone}"] + ([f"--project={opt.project}"] if opt.project else [])


def create_cmd(opt: TpuOptions, i: int) -> list[str]:
  capacity = ["--spot"] if opt.spot else ["--best-effort"] if opt.best_effort else []
  name = slice_name(opt, i)
  return ["gcloud", "compute", "tpus", "queued-resources", "create", name, f"--node-id={name}", *_where(opt),
          f"--accelerator-type={opt.accelerator_type}", f"--runtime-version={opt.runtime_version}", *capacity]


def describe_cmd(opt: TpuOptions, i: int) -> list[str]:
  return ["gcloud", "compute", "tpus", "queued-resources", "describe", slice_name(opt, i), *_where(opt),
          "--format=value(state.state)"]


def delete_cmd(opt: TpuOptions, i: int) -> list[str]:
  return ["gcloud", "compute", "tpus", "queued-resources", "delete", slice_name(opt, i), *_where(opt),
          "--force", "--quiet"]


def scp_cmd(opt: TpuOptions, i: int, local: str) -> list[str]:
  return ["gcloud", "compute", "tpus", "tpu-vm", "scp", local, f"{slice_name(opt, i)}:{BUNDLE}", *_where(opt),
          "--worker=all"]


def ssh_cmd(opt: TpuOptions, i: int, command: str) -> list[str]:
  return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", slice_name(opt, i), *_where(opt), "--worker=all",
          f"--command={command}"]


def unpack_command(opt: TpuOptions) -> str:
  d = shlex.quote(opt.repo_dir)
  return f"rm -rf {d} && mkdir -p {d} && tar xzf {BUNDLE} -C {d} && cd {d} && {opt.install}"


def train_command(opt: TpuOptions, spec: RunSpec, config: str, extra: Sequence[str]) -> str:
  train = shlex.join([opt.python, "-m", "xnn.cli", *spec.train_args(config, extra)])
  return f"cd {shlex.quote(opt.repo_dir)} && XNN_DISTRIBUTED=auto {train}"


def bundle_files(root: str = ".") -> list[str]:
  """The files the workers need: git's tracked and untracked-but-not-ignored files, less ``EXCLUDED``."""
  try:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=root,
                         capture_output=True, check=True, timeout=60)
    files = [f for f in out.stdout.decode().split("\0") if f]
  except (OSError, subprocess.SubprocessError):
    files = []
    for top in INCLUDED:
      path = os.path.join(root, top)
      if os.path.isfile(path):
        files.append(top)
      for folder, dirs, names in os.walk(path):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        files += [os.path.relpath(os.path.join(folder, n), root) for n in names]
  return sorted(f for f in files if f.split("/")[0] not in EXCLUDED and os.path.isfile(os.path.join(root, f)))


def worker_config(config: str, root: str = ".") -> tuple[str, str | None]:
  """(the config as the workers name it, the file to add to the bundle if it lies outside ``root``)."""
  path, sep, arg = config.partition(":")
  rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
  if not rel.startswith(".."):
    return rel + sep + arg, None
  return f"{CONFIG_DIR}/{os.path.basename(path)}{sep}{arg}", path


def make_bundle(out: str, config: str, root: str = ".") -> list[str]:
  """Writes the tarball of ``bundle_files`` (and an outside config); returns what it holds."""
  files = bundle_files(root)
  _, outside = worker_config(config, root)
  with tarfile.open(out, "w:gz") as tar:
    for f in files:
      tar.add(os.path.join(root, f), arcname=f, recursive=False)
    if outside:
      tar.add(outside, arcname=f"{CONFIG_DIR}/{os.path.basename(outside)}", recursive=False)
  return files + ([f"{CONFIG_DIR}/{os.path.basename(outside)}"] if outside else [])


def plan(specs: Sequence[RunSpec], config: str, opt: TpuOptions, extra: Sequence[str] = ()) -> list[str]:
  """What the supervisor would run, as lines (``--dry-run``)."""
  todo = [s for s in specs if not s.finished]
  wconfig, _ = worker_config(config)
  lines = [f"# {opt.slices} slice(s) work through {len(todo)} runs; per slice:"]
  lines += [shlex.join(create_cmd(opt, i)) for i in range(opt.slices)]
  lines += [f"# until ACTIVE (every {opt.poll_s:g} s): {shlex.join(describe_cmd(opt, 0))}",
            f"# copy {len(bundle_files())} files (git ls-files; never {', '.join(EXCLUDED)}) as one tarball:",
            shlex.join(scp_cmd(opt, 0, BUNDLE)), shlex.join(ssh_cmd(opt, 0, unpack_command(opt))),
            "# then each run on the next free slice (preempted: recreate the slice and rerun; it resumes):"]
  lines += [shlex.join(ssh_cmd(opt, 0, train_command(opt, s, wconfig, extra))) for s in todo]
  if not opt.keep:
    lines.append("# at the end: " + shlex.join(delete_cmd(opt, 0)))
  return lines


def log_dir(sweep_dir: str) -> str:
  """Where the supervisor writes each run's log: the sweep folder, or a local one for a URL."""
  if "://" not in sweep_dir:
    return sweep_dir
  return os.path.join("runs", "tpu-logs", os.path.basename(sweep_dir.rstrip("/")))


class Supervisor:
  """Works through a sweep on ``opt.slices`` queued-resource slices; ``run()`` returns name -> status."""

  def __init__(self, specs: Sequence[RunSpec], config: str, opt: TpuOptions, extra: Sequence[str] = (),
               log_dir: str = ".", root: str = ".", say=print):
    self.specs, self.opt, self.extra, self.log_dir, self.root = list(specs), opt, list(extra), log_dir, root
    self.config, _ = worker_config(config, root)
    self.source_config = config
    self.say = say
    self.status: dict[str, str] = {s.name: "done (skipped)" for s in self.specs if s.finished}
    self.queue = collections.deque(s for s in self.specs if not s.finished)
    self.lock = threading.Lock()
    self.bundle = ""
    self.errors: dict[int, str] = {}

  # --- gcloud ---------------------------------------------------------------------------------

  def _gcloud(self, cmd: list[str], check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
      last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
      raise GcloudError(f"{shlex.join(cmd[:5])} {cmd[5]} failed (status {proc.returncode}): {last}")
    return proc

  def state(self, i: int) -> str | None:
    """The queued resource's state, or None if it does not exist."""
    proc = self._gcloud(describe_cmd(self.opt, i), check=False)
    return (proc.stdout.strip() or None) if proc.returncode == 0 else None

  def _wait_active(self, i: int) -> None:
    deadline = time.time() + self.opt.provision_timeout_s
    while True:
      state = self.state(i)
      if state == ACTIVE:
        return
      if state not in WAITING or time.time() > deadline:
        raise GcloudError(f"slice {slice_name(self.opt, i)} did not become ACTIVE (state {state})")
      time.sleep(self.opt.poll_s)

  def bring_up(self, i: int) -> None:
    """Makes slice ``i`` ACTIVE (creating or re-creating its queued resource), copies and installs the code."""
    name = slice_name(self.opt, i)
    state = self.state(i)
    if state not in (ACTIVE, *WAITING):
      if state is not None:
        self.say(f"{name}: {state}; deleting it to create it again")
        self._gcloud(delete_cmd(self.opt, i))
      self.say(f"{name}: creating the queued resource ({self.opt.accelerator_type})")
      self._gcloud(create_cmd(self.opt, i))
    self._wait_active(i)
    self.say(f"{name}: ACTIVE; copying the code and installing it on every worker")
    self._gcloud(scp_cmd(self.opt, i, self.bundle))
    self._gcloud(ssh_cmd(self.opt, i, unpack_command(self.opt)))

  # --- runs -----------------------------------------------------------------------------------

  def _take(self) -> RunSpec | None:
    with self.lock:
      return self.queue.popleft() if self.queue else None

  def _run(self, i: int, spec: RunSpec) -> int:
    folder = os.path.join(self.log_dir, spec.name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, LOG), "ab") as log:
      log_start(log, spec.name, where=f"{slice_name(self.opt, i)} (every worker)")
      code = subprocess.run(ssh_cmd(self.opt, i, train_command(self.opt, spec, self.config, self.extra)),
                            stdout=log, stderr=subprocess.STDOUT).returncode
      log_exit(log, spec.name, code)
    return code

  def _slice(self, i: int) -> None:
    name, ready = slice_name(self.opt, i), False
    spec = None
    try:
      while True:
        spec = self._take()
        if spec is None:
          return
        restarts = 0
        while True:
          if not ready:
            self.bring_up(i)
            ready = True
          self.say(f"{name}: running {spec.name}")
          code = self._run(i, spec)
          if code == 0:
            self.status[spec.name] = "done"
            break
          state = self.state(i)
          if state != ACTIVE:
            self.say(f"{name}: preempted ({state}) during {spec.name}; recreating the slice, the run resumes")
            ready = False
            continue
          restarts += 1
          if restarts > self.opt.max_restarts:
            self.status[spec.name] = f"failed (exit {code} {restarts} times, see its {LOG})"
            break
          self.say(f"{name}: {spec.name} exited with status {code}; rerunning it on every worker "
                   f"({restarts} of {self.opt.max_restarts})")
        self.say(f"{name}: {spec.name}: {self.status[spec.name]}")
        spec = None
    except GcloudError as e:
      self.errors[i] = str(e)
      self.say(f"{name}: {e}")
      if spec is not None:
        with self.lock:
          self.queue.appendleft(spec)

  def run(self) -> dict[str, str]:
    with tempfile.TemporaryDirectory(prefix="xnn_tpu_") as tmp:
      self.bundle = os.path.join(tmp, BUNDLE)
      files = make_bundle(self.bundle, self.source_config, self.root)
      self.say(f"copying {len(files)} files to each worker ({os.path.getsize(self.bundle):,} bytes)")
      threads = [threading.Thread(target=self._slice, args=(i,), daemon=True) for i in range(self.opt.slices)]
      for t in threads:
        t.start()
      for t in threads:
        t.join()
    if not self.opt.keep:
      for i in range(self.opt.slices):
        if self.state(i) is not None:
          self.say(f"{slice_name(self.opt, i)}: deleting the queued resource")
          self._gcloud(delete_cmd(self.opt, i), check=False)
    why = "; ".join(self.errors.values()) or "no slice left"
    for s in self.queue:
      self.status[s.name] = f"not run ({why})"
    return self.status
