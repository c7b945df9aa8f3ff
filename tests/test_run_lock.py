"""One writer per workdir: the lock, a killed holder, the sweep launcher's children, two `xnn train` on one workdir."""

import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

from conftest import REPO
from xnn.sweeps import launchers, named_runs, seeds
from xnn.train.workdir_lock import WorkdirBusy, hold_workdir, lock_path, probe_workdir

ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"

HOLD = """
import sys, time
from xnn.train.workdir_lock import hold_workdir
with hold_workdir(sys.argv[1], int(sys.argv[2])) as h:
  print(h.since, flush=True)
  time.sleep(float(sys.argv[3]))
"""

TAKE = """
import sys
from xnn.train.workdir_lock import hold_workdir, WorkdirBusy
try:
  with hold_workdir(sys.argv[1], int(sys.argv[2])):
    print("took it")
except WorkdirBusy as e:
  print(e)
  sys.exit(3)
"""


def _python(code, *args):
  return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, cwd=REPO,
                        timeout=60)


def _holder(workdir, index=0, seconds=60):
  """A process holding ``workdir``'s lock ``index``, and the start time it recorded."""
  proc = subprocess.Popen([sys.executable, "-c", HOLD, workdir, str(index), str(seconds)], stdout=subprocess.PIPE,
                          text=True, cwd=REPO)
  return proc, proc.stdout.readline().strip()


def test_second_taker_in_another_process_is_refused_naming_the_holder(tmp_path):
  wd = str(tmp_path / "run")
  with hold_workdir(wd, process_index=0) as me:
    assert re.fullmatch(ISO, me.since) and me.pid == os.getpid()
    t0 = time.time()
    other = _python(TAKE, wd, 0)
    assert other.returncode == 3 and time.time() - t0 < 20, other.stderr
    assert other.stdout.strip() == (
        f"workdir {wd} is in use by pid {os.getpid()} on host {socket.gethostname()} since {me.since} "
        "(another xnn train); wait for it or use another --workdir")
    assert str(probe_workdir(wd)) == other.stdout.strip()
    assert _python(TAKE, wd, 1).stdout.strip() == "took it"      # another process index of the same run
    with pytest.raises(WorkdirBusy, match=f"in use by pid {os.getpid()}"):   # a second open file, same process
      with hold_workdir(wd, process_index=0):
        pass
  assert not os.path.exists(lock_path(wd, 0))                      # a clean release leaves no file
  assert probe_workdir(wd) is None
  assert _python(TAKE, wd, 0).stdout.strip() == "took it"


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
  wd = str(tmp_path / "run")
  proc, since = _holder(wd, 2)
  busy = probe_workdir(wd)
  assert busy is not None and busy.holder.pid == proc.pid and busy.holder.since == since
  assert f"pid {proc.pid} (process 2 of its run) on host {socket.gethostname()} since {since}" in str(busy)
  proc.kill()
  proc.wait()
  assert os.path.exists(lock_path(wd, 2))                          # the dead holder's record stays ...
  assert probe_workdir(wd) is None                                 # ... but the kernel dropped its lock
  with hold_workdir(wd, process_index=2) as me:
    assert json.load(open(lock_path(wd, 2)))["pid"] == me.pid == os.getpid()


def test_takers_racing_on_one_workdir_never_overlap(tmp_path):
  """Three processes take and release the lock 150 times each; the released file is removed every time."""
  wd, inside = str(tmp_path / "run"), str(tmp_path / "inside")
  code = f"""
import os, time
from xnn.train.workdir_lock import hold_workdir, WorkdirBusy
n = 0
while n < 150:
  try:
    with hold_workdir({wd!r}, 0):
      fd = os.open({inside!r}, os.O_CREAT | os.O_EXCL | os.O_WRONLY)   # fails if another holder is inside
      os.close(fd)
      os.unlink({inside!r})
      n += 1
  except WorkdirBusy:
    time.sleep(0.001)
"""
  procs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True, cwd=REPO)
           for _ in range(3)]
  for p in procs:
    assert p.wait(timeout=120) == 0, p.stderr.read()[-2000:]


def test_a_lock_on_a_released_file_is_not_taken_for_the_workdir_lock(tmp_path):
  """A taker that opened the file before its holder removed it locks a dead file: ``_same_file`` tells."""
  from xnn.train.workdir_lock import _same_file
  wd = str(tmp_path / "run")
  with hold_workdir(wd, process_index=0):
    fd = os.open(lock_path(wd), os.O_RDWR)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)       # succeeds: nobody holds the removed file
    assert not _same_file(fd, lock_path(wd))
    with hold_workdir(wd, process_index=0):              # so the real lock is still free
      assert not _same_file(fd, lock_path(wd))
  finally:
    os.close(fd)


def test_an_unwritable_workdir_is_one_line(tmp_path):
  (tmp_path / "file").write_text("")
  with pytest.raises(ValueError, match=r"workdir '.*/file/run' is not writable: Not a directory"):
    with hold_workdir(str(tmp_path / "file" / "run"), process_index=0):
      pass


def test_the_launcher_reports_a_busy_run_and_starts_no_second_writer(tmp_path):
  specs = launchers.run_specs(named_runs(seeds(2)), str(tmp_path))
  os.makedirs(specs[1].workdir)
  open(os.path.join(specs[1].workdir, "final.json"), "w").write("{}")
  with hold_workdir(specs[0].workdir, process_index=0):
    status = launchers.launch_local(specs, "unused.py", log=lambda _: None)
    assert launchers._exit_status(specs[0], 1).startswith("busy")   # a child refused by the lock
  assert status == {"seed-0": f"busy, not started: its workdir is in use by pid {os.getpid()} on host "
                              f"{socket.gethostname()} since {status['seed-0'].split(' since ')[1]}",
                    "seed-1": "done (skipped)"}
  assert not os.path.exists(os.path.join(specs[0].workdir, "launcher.log"))     # nothing was started
  assert launchers._exit_status(specs[0], 1) == f"failed (exit 1, see {specs[0].workdir}/launcher.log)"


SWEEP_CONFIG = '''
from xnn import sweeps as s
from xnn.configs.default import get_config as _default

def get_config(arg=None):
  c = _default()
  c.train.num_steps = 5000
  c.train.progress_bar = False
  return c

def get_sweep(arg=None):
  return s.seeds(1)
'''


def _read(path):
  try:
    return path.read_text()
  except FileNotFoundError:
    return ""


def _gone(pid):
  try:
    return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
  except psutil.NoSuchProcess:
    return True


def test_a_sigkilled_sweep_launcher_leaves_no_process_behind(tmp_path):
  """The launcher is SIGKILLed while its run trains: the kernel sends the run SIGTERM, it saves and stops."""
  cfg = tmp_path / "sweep_cfg.py"
  cfg.write_text(SWEEP_CONFIG)
  run = tmp_path / "sweep" / "seed-0"
  proc = subprocess.Popen([sys.executable, "-m", "xnn.cli", "sweep", str(cfg), f"--workdir={tmp_path / 'sweep'}"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
  training = lambda: "compiling the train step" in _read(run / "launcher.log")
  deadline = time.time() + 120
  while time.time() < deadline and proc.poll() is None and not training():
    time.sleep(0.05)
  assert training(), "the run never started training"
  family = psutil.Process(proc.pid).children(recursive=True)
  proc.kill()
  proc.wait()
  deadline = time.time() + 180     # the run finishes compiling its step, trains it, saves: slow on a busy machine
  while time.time() < deadline and not all(_gone(p.pid) for p in family):
    time.sleep(0.1)
  left = [(p.pid, p.cmdline()) for p in family if not _gone(p.pid)]
  for p in family:
    if not _gone(p.pid):
      p.kill()                    # no orphan outlives a failed test
  assert not left, left
  log = _read(run / "launcher.log")
  assert "stopped by SIGTERM" in log, log[-2000:]                 # it saved a checkpoint and stopped
  assert os.listdir(run / "checkpoints")


def _snapshot(folder):
  """Every file under ``folder``: relative path -> bytes."""
  out = {}
  for root, _, files in os.walk(folder):
    for f in files:
      path = os.path.join(root, f)
      out[os.path.relpath(path, folder)] = open(path, "rb").read()
  return out


def test_two_trains_on_one_workdir_the_second_is_refused_and_the_first_matches_a_lone_run(tmp_path):
  """The first run is paused (SIGSTOP) once it holds the lock, so the second (another seed) meets it for sure;
  the second exits at once and changes nothing; the first ends on a lone run's parameters."""
  from test_train import assert_trees_equal, final_params
  from xnn.configs.default import get_config
  from xnn.train import train_and_evaluate
  train = [sys.executable, "-m", "xnn.cli", "train", "--config.train.num_steps=12", "--config.train.progress_bar=False"]
  wd, lone_wd = str(tmp_path / "run"), str(tmp_path / "lone")
  first = subprocess.Popen(train + [f"--workdir={wd}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)
  deadline = time.time() + 120
  while time.time() < deadline and first.poll() is None and probe_workdir(wd) is None:
    time.sleep(0.02)
  busy = probe_workdir(wd)
  first.send_signal(signal.SIGSTOP)
  try:
    assert busy is not None and busy.holder.pid == first.pid, "no lock: is hold_workdir wired into train.py?"
    before, t0 = _snapshot(wd), time.time()
    second = subprocess.run(train + [f"--workdir={wd}", "--config.seed=1"], capture_output=True, text=True,
                            cwd=REPO, timeout=120)
    took = time.time() - t0
    assert _snapshot(wd) == before                                        # the refused run wrote nothing
  finally:
    first.send_signal(signal.SIGCONT)
  assert second.returncode != 0 and second.stdout == "", (second.stdout, second.stderr[-2000:])
  assert second.stderr == (f"xnn train: error: workdir {wd} is in use by pid {first.pid} on host "
                           f"{socket.gethostname()} since {busy.holder.since} (another xnn train); "
                           "wait for it or use another --workdir\n")
  assert took < 60
  config = get_config()                                                   # what the command line runs
  config.train.num_steps, config.train.progress_bar = 12, False
  lone = train_and_evaluate(config, lone_wd)                               # meanwhile the first one finishes
  assert first.wait(timeout=300) == 0, first.stderr.read()[-2000:]
  assert json.load(open(os.path.join(wd, "config.json")))["seed"] == 0
  (step_a, params_a), (step_b, params_b) = final_params(wd), final_params(lone_wd)
  assert step_a == step_b == lone.step == 12
  assert_trees_equal(params_a, params_b)
  fa, fb = (json.load(open(os.path.join(d, "final.json"))) for d in (wd, lone_wd))
  timing = ("wall_time_s", "segments")
  assert {k: v for k, v in fa.items() if k not in timing} == {k: v for k, v in fb.items() if k not in timing}
  assert not os.path.exists(lock_path(wd))
