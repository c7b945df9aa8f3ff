"""TPU sweeps on queued resources: a supervisor per slice survives a preemption; the run ends bit-identical.

``gcloud`` is a stand-in on PATH (``GCLOUD``, written into a temp folder): queued
resources are state files; ``tpu-vm scp --worker=all`` copies into one home folder
per worker; ``tpu-vm ssh --worker=all`` runs the command in every worker's home as a
local process, the processes joined by ``jax.distributed`` (two workers of two
simulated CPU devices: a two-host pod, as ``launch/local_multihost.py`` does). When
a queued resource stops being ACTIVE (the test marks it SUSPENDED, as spot
preemption does), its workers are killed at once and ``ssh`` exits 255.
"""

import json
import os
import stat
import subprocess
import sys
import tarfile
import time

import psutil
import pytest

from conftest import REPO, TWIN_RUNS_SWEEP
from test_train import assert_trees_equal, final_params
from xnn.sweeps import tpu
from xnn.sweeps.status import sweep_status
from xnn.train.checkpoint import MANIFEST, checkpoint_steps

GCLOUD = r'''
import json, os, shutil, signal, socket, subprocess, sys, time

STATE = os.environ["GCLOUD_STANDIN_DIR"]
WORKERS, DEVICES = 2, 2


def opts(args):
  return {a.split("=", 1)[0]: a.split("=", 1)[1] if "=" in a else True for a in args if a.startswith("--")}


def qr_file(name):
  return os.path.join(STATE, "qr", name + ".json")


def read(name):
  try:
    with open(qr_file(name)) as f:
      return json.load(f)
  except FileNotFoundError:
    return None


def write(name, rec):
  os.makedirs(os.path.dirname(qr_file(name)), exist_ok=True)
  with open(qr_file(name) + ".tmp", "w") as f:
    json.dump(rec, f)
  os.replace(qr_file(name) + ".tmp", qr_file(name))


def home(node, k):
  path = os.path.join(STATE, "nodes", node, f"worker{k}")
  os.makedirs(path, exist_ok=True)
  return path


def log_call(argv):
  with open(os.path.join(STATE, "calls.jsonl"), "a") as f:
    f.write(json.dumps(argv) + "\n")


def active(node):
  rec = read(node)
  return rec is not None and rec["state"] == "ACTIVE"


def free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def main(argv):
  log_call(argv)
  pos = [a for a in argv if not a.startswith("--")]
  o = opts(argv)
  if pos[:3] == ["compute", "tpus", "queued-resources"]:
    verb, name = pos[3], pos[4]
    if verb == "create":
      if read(name) is not None:
        print(f"ERROR: ALREADY_EXISTS: {name}", file=sys.stderr)
        return 1
      write(name, {"state": "PROVISIONING", "node": o["--node-id"]})
      return 0
    rec = read(name)
    if rec is None:
      print(f"ERROR: NOT_FOUND: queued resource {name}", file=sys.stderr)
      return 1
    if verb == "describe":
      print(rec["state"])
      if rec["state"] == "PROVISIONING":
        write(name, {**rec, "state": "ACTIVE"})
      return 0
    if verb == "delete":
      os.remove(qr_file(name))
      shutil.rmtree(os.path.join(STATE, "nodes", rec["node"]), ignore_errors=True)   # the VMs go with it
      return 0
  if pos[:3] == ["compute", "tpus", "tpu-vm"]:
    verb, node = pos[3], (pos[4] if pos[3] == "ssh" else pos[5].split(":")[0])
    if not active(node):
      print(f"ERROR: node {node} is not ACTIVE", file=sys.stderr)
      return 255
    if verb == "scp":
      for k in range(WORKERS):
        shutil.copy(pos[4], os.path.join(home(node, k), pos[5].split(":", 1)[1]))
      return 0
    if verb == "ssh":
      port = free_port()
      procs = []
      for k in range(WORKERS):
        env = {**os.environ, "XNN_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "XNN_NUM_PROCESSES": str(WORKERS),
               "XNN_PROCESS_ID": str(k), "JAX_PLATFORMS": "cpu",
               "XLA_FLAGS": f"--xla_force_host_platform_device_count={DEVICES}"}
        procs.append(subprocess.Popen(["bash", "-c", o["--command"]], cwd=home(node, k), env=env,
                                      start_new_session=True))
      with open(os.path.join(STATE, "nodes", node, "running.json"), "w") as f:
        json.dump({"command": o["--command"], "pids": [p.pid for p in procs]}, f)
      while any(p.poll() is None for p in procs):
        if not active(node):                       # preempted: the VMs are gone, and so is the connection
          for p in procs:
            try:
              os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
              pass
          for p in procs:
            p.wait()
          print(f"ERROR: connection to {node} lost", file=sys.stderr)
          return 255
        time.sleep(0.05)
      return next((p.returncode for p in procs if p.returncode), 0)
  print(f"stand-in gcloud: unsupported {argv}", file=sys.stderr)
  return 2


sys.exit(main(sys.argv[1:]))
'''


def _standin(tmp_path):
  bin_dir, state = tmp_path / "bin", tmp_path / "cloud"
  bin_dir.mkdir()
  state.mkdir()
  gcloud = bin_dir / "gcloud"
  gcloud.write_text(f"#!{sys.executable}\n{GCLOUD}")
  gcloud.chmod(gcloud.stat().st_mode | stat.S_IEXEC)
  env = {**os.environ, "GCLOUD_STANDIN_DIR": str(state),
         "PATH": os.pathsep.join([str(bin_dir), os.path.dirname(sys.executable), os.environ["PATH"]])}
  return state, env


def _saved(workdir):
  """Whether a checkpoint has been written to the end (its manifest comes last)."""
  return any(os.path.exists(os.path.join(workdir, "checkpoints", str(step), MANIFEST))
             for step in checkpoint_steps(workdir))


def _wait(pred, what, proc, timeout=240):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if pred():
      return
    if proc.poll() is not None:
      raise AssertionError(f"the sweep ended while waiting for {what}: {proc.stdout.read()[-3000:]}")
    time.sleep(0.05)
  raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_two_slices_work_through_a_sweep_and_a_preempted_run_resumes_bit_identical(tmp_path):
  state, env = _standin(tmp_path)
  cfg = tmp_path / "sweep_cfg.py"
  cfg.write_text(TWIN_RUNS_SWEEP)
  sweep_dir = tmp_path / "sweep"
  cmd = [sys.executable, "-m", "xnn.cli", "sweep", str(cfg), f"--workdir={sweep_dir}", "--launcher=tpu",
         "--tpu-name=pod", "--zone=us-central2-b", "--slices=2", "--spot", "--poll-seconds=0.1",
         "--install=python3 -c 'import xnn.cli'"]
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=env)
  a, b = sweep_dir / "train.progress_every_s-30.0", sweep_dir / "train.progress_every_s-31.0"
  try:
    _wait(lambda: _saved(str(a)), "run a to checkpoint", proc)
    node = next(n for n in ("pod-0", "pod-1")
                if str(a) in json.load(open(state / "nodes" / n / "running.json"))["command"])
    workers = [psutil.Process(pid) for pid in json.load(open(state / "nodes" / node / "running.json"))["pids"]]
    for w in workers:            # held mid-run, so that the preemption surely lands before its end
      for p in [w, *w.children(recursive=True)]:
        p.suspend()
    assert not (a / "final.json").exists()
    qr = json.load(open(state / "qr" / f"{node}.json"))
    with open(state / "qr" / f"{node}.json", "w") as f:      # spot capacity reclaimed
      json.dump({**qr, "state": "SUSPENDED"}, f)
    out, _ = proc.communicate(timeout=300)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == 0, out[-4000:]
  assert f"{node}: preempted (SUSPENDED)" in out and f"{node}: SUSPENDED; deleting it to create it again" in out
  calls = [json.loads(line) for line in open(state / "calls.jsonl")]
  creates = [c for c in calls if c[2:4] == ["queued-resources", "create"]]
  assert sorted(c[4] for c in creates) == sorted(["pod-0", "pod-1", node])
  assert all("--spot" in c and "--node-id=" + c[4] in c for c in creates)
  assert not os.listdir(state / "qr")                          # every slice deleted at the end
  log = (a / "launcher.log").read_text()
  assert "Resuming from the checkpoint at step" in log and log.count("== xnn sweep: start") == 2
  (step_a, params_a), (step_b, params_b) = final_params(str(a)), final_params(str(b))
  assert step_a == step_b == 32
  assert_trees_equal(params_a, params_b)
  fa, fb = (json.load(open(d / "final.json")) for d in (a, b))
  assert fa["test_accuracy"] == fb["test_accuracy"] and fa["test_loss"] == fb["test_loss"]
  assert [r.state for r in sweep_status(str(sweep_dir))] == ["finished", "finished"]


def test_the_bundle_holds_the_code_and_never_venv_runs_or_git(tmp_path):
  for d in (".venv", "runs", ".git"):       # whether or not this checkout has them
    assert not any(f.split("/")[0] == d for f in tpu.bundle_files(REPO))
  cfg = tmp_path / "outside.py"
  cfg.write_text(TWIN_RUNS_SWEEP)
  bundle = str(tmp_path / "b.tgz")
  files = tpu.make_bundle(bundle, f"{cfg}:x", REPO)
  with tarfile.open(bundle) as tar:
    names = tar.getnames()
  assert names == files and "xnn/cli.py" in names and "pyproject.toml" in names
  assert f"{tpu.CONFIG_DIR}/outside.py" in names
  assert tpu.worker_config(f"{cfg}:x", REPO) == (f"{tpu.CONFIG_DIR}/outside.py:x", str(cfg))
  assert tpu.worker_config(os.path.join(REPO, "xnn", "configs", "default.py"), REPO) == ("xnn/configs/default.py",
                                                                                         None)


def test_queued_resource_commands():
  opt = tpu.TpuOptions("pod", "us-central2-b", project="proj", accelerator_type="v4-32",
                       runtime_version="tpu-ubuntu2204-base", best_effort=True)
  where = ["--zone=us-central2-b", "--project=proj"]
  assert tpu.create_cmd(opt, 1) == ["gcloud", "compute", "tpus", "queued-resources", "create", "pod-1",
                                    "--node-id=pod-1", *where, "--accelerator-type=v4-32",
                                    "--runtime-version=tpu-ubuntu2204-base", "--best-effort"]
  assert tpu.describe_cmd(opt, 0)[-1] == "--format=value(state.state)"
  assert tpu.delete_cmd(opt, 0)[-2:] == ["--force", "--quiet"]
  assert tpu.scp_cmd(opt, 0, "/tmp/b.tgz")[4:7] == ["scp", "/tmp/b.tgz", "pod-0:xnn_bundle.tgz"]
