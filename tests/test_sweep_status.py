"""``xnn sweep status`` in every state, and what ``--dry-run`` says a sweep costs."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO
from xnn import sweeps as s
from xnn.sweeps import budget, launchers
from xnn.sweeps.status import sweep_status

HOLD = """
import sys, time
from xnn.train.workdir_lock import hold_workdir
with hold_workdir(sys.argv[1], 0):
  print("holding", flush=True)
  time.sleep(60)
"""


def _records(workdir, *recs):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
    f.writelines(json.dumps(r) + "\n" for r in recs)


def _segment(workdir, name, lines, code):
  """One start of the run as the launchers log it (``launchers.log_start`` / ``log_exit``)."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, launchers.LOG), "ab") as log:
    launchers.log_start(log, name)
    log.write("".join(line + "\n" for line in lines).encode())
    if code is not None:
      launchers.log_exit(log, name, code)


def test_status_shows_every_state_as_a_table_and_as_json(tmp_path):
  sweep_dir = str(tmp_path / "sweep")
  specs = launchers.run_specs(s.named_runs(s.values("seed", [0, 1, 2, 3, 4])), sweep_dir)
  launchers.record_sweep(sweep_dir, "cfg.py", specs, "local")
  done, running, failed, interrupted, _never = (sp.workdir for sp in specs)
  _records(done, {"type": "eval", "step": 22, "test_accuracy": 0.95})
  with open(os.path.join(done, "final.json"), "w") as f:
    json.dump({"step": 44, "test_accuracy": 0.9722, "wall_time_s": 12.5}, f)
  _records(running, {"type": "train", "step": 11, "loss": 1.0}, {"type": "eval", "step": 22, "test_accuracy": 0.6},
           {"type": "train", "step": 33, "loss": 0.5})
  holder = subprocess.Popen([sys.executable, "-c", HOLD, running], stdout=subprocess.PIPE, text=True, cwd=REPO)
  try:
    assert holder.stdout.readline().strip() == "holding"
    _segment(failed, "seed-2", ["Traceback (most recent call last):", '  File "x.py", line 1',
                                "FloatingPointError: loss became nan (gradient norm nan) by step 30",
                                "xnn train: error: loss became nan by step 30; stopping"], 1)
    _segment(interrupted, "seed-3", ["xnn train: error: workdir is in use"], 2)      # an earlier failure ...
    _segment(interrupted, "seed-3", ["xnn train: stopped by SIGTERM at step 16"], 143)   # ... then interrupted
    os.makedirs(os.path.join(interrupted, "checkpoints", "16"))
    rows = {r.name: r for r in sweep_status(sweep_dir)}
    out = subprocess.run([sys.executable, "-m", "xnn.cli", "sweep", "status", sweep_dir, "--json"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    table = subprocess.run([sys.executable, "-m", "xnn.cli", "sweep", "status", sweep_dir],
                           capture_output=True, text=True, cwd=REPO, timeout=120)
  finally:
    holder.kill()
    holder.wait()
  assert [r.state for r in rows.values()] == ["finished", "running", "failed", "pending", "pending"]
  assert (rows["seed-0"].test_accuracy, rows["seed-0"].wall_time_s) == (0.9722, 12.5)
  assert rows["seed-1"].step == 33 and rows["seed-1"].test_accuracy == 0.6
  assert rows["seed-1"].where == f"{os.uname().nodename} pid {holder.pid}"
  assert rows["seed-2"].error == "xnn train: error: loss became nan by step 30; stopping"
  assert rows["seed-3"].checkpoint_step == 16 and rows["seed-3"].detail() == "resumes from step 16"
  assert rows["seed-4"].detail() == "not started"
  assert out.returncode == 0, out.stderr
  data = json.loads(out.stdout)
  assert data["counts"] == {"pending": 2, "running": 1, "finished": 1, "failed": 1}
  assert [r["state"] for r in data["runs"]] == [r.state for r in rows.values()]
  assert table.returncode == 0 and "1 pending" not in table.stdout and "2 pending" in table.stdout
  for text in ("finished", "running", "failed", "resumes from step 16", "wall time 12.5 s", f"pid {holder.pid}"):
    assert text in table.stdout, (text, table.stdout)
  assert "xnn train: error: loss became nan by step 30" in table.stdout.replace("\n", "")


def test_status_errors_are_one_line(tmp_path):
  for args, message in (([str(tmp_path / "nope")], f"sweep folder {tmp_path / 'nope'} does not exist"),
                        ([str(tmp_path)], f"no runs in {tmp_path}"),
                        (["gs://bucket/sweep"], "reads a local folder")):
    p = subprocess.run([sys.executable, "-m", "xnn.cli", "sweep", "status", *args], capture_output=True, text=True,
                       cwd=REPO, timeout=120)
    assert p.returncode == 2 and p.stderr.startswith("xnn sweep: error: ") and message in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_the_dataset_facts_are_the_loaded_datasets():
  """What --dry-run costs from (``DataFacts``) against the data itself (the bundled digits)."""
  from xnn.configs.default import get_config
  from xnn.data.datasets import DATASETS, load_dataset
  ds = load_dataset(get_config().data)
  facts = DATASETS.get("digits").facts
  assert facts.examples("train") == len(ds.train) == 1437 and facts.splits["test"] == len(ds.test) == 360
  assert facts.shape == ds.element_shape and facts.num_classes == ds.num_classes
  cifar = DATASETS.get("cifar10").facts
  assert cifar.examples("train[:45000]") == 45_000 and cifar.examples("train[45000:]") == 5_000   # He et al.'s split


def test_dry_run_costs_each_run_from_its_training_analysis(tmp_path):
  from xnn.cost import analyze_model, get_device
  from xnn.cost.render import apply_roofline
  device = get_device("h100")
  config = os.path.join(REPO, "experiments", "residual_vs_plain", "config.py")
  quick = launchers.run_specs(s.load_sweep(config + ":quick"), str(tmp_path))
  (c,) = budget.sweep_costs(config + ":quick", [sp for sp in quick if sp.name == "model.name-resnet20__seed-0"],
                            device)
  # The quick mode: the digits at 8x8x3, batch 64, 24 epochs of 1437 // 64 = 22 steps = 528 iterations.
  assert (c.model, c.input_shape, c.batch, c.steps) == ("resnet20", (8, 8, 3), 64, 528)
  rep = analyze_model("resnet20", input_shape=(8, 8, 3), batch=64, train=True, num_classes=10)
  assert c.macs_per_step == rep.macs + rep.backward_macs and c.macs == 528 * c.macs_per_step
  forward_s = apply_roofline(rep, rep.layers, device)
  assert c.step_s == pytest.approx(forward_s * (rep.flops + rep.backward_flops) / rep.flops)
  assert c.device_hours == pytest.approx(c.step_s * 528 / 3600)
  # The full sweep on CIFAR-10: He et al.'s 64k iterations of batch 128 on 32x32x3 images.
  full = launchers.run_specs(s.load_sweep(config + ":full"), str(tmp_path))
  (r20,) = budget.sweep_costs(config + ":full", [sp for sp in full if sp.name == "model.name-resnet20__seed-0"],
                              device)
  assert (r20.model, r20.input_shape, r20.batch, r20.steps) == ("resnet20", (32, 32, 3), 128, 64_000)
  # ResNet-20 at 32x32: 40.55M forward MACs per image (the CIFAR ResNet-20 figure of He et al.'s Table 6
  # implementations, e.g. akamaster/pytorch_resnet_cifar10: 0.27M params, 41M FLOPs); backward about twice that.
  forward = analyze_model("resnet20", input_shape=(32, 32, 3), batch=1, num_classes=10).macs
  assert 40.5e6 < forward < 40.6e6
  assert 2.9 < r20.macs_per_step / (128 * forward) < 3.1


def test_dry_run_prints_the_job_array_and_the_cost(tmp_path):
  w = str(tmp_path / "W")
  p = subprocess.run([sys.executable, "-m", "xnn.cli", "sweep", "experiments/residual_vs_plain/config.py:tiny",
                      "--workdir", w, "--launcher", "slurm", "--dry-run", "--device", "tpu-v4"],
                     capture_output=True, text=True, cwd=REPO, timeout=300)
  assert p.returncode == 0, p.stderr[-3000:]
  assert "#SBATCH --array=0-1%2" in p.stdout and "#SBATCH --signal=USR2@120" in p.stdout
  # plain20 at 8x8, batch 64: 4.850e8 training MACs per step x 44 steps (2 epochs of 22)
  assert "TPU v4-hours" in p.stdout and "4.850e+08" in p.stdout and "2.134e+10" in p.stdout and "total" in p.stdout
  assert not os.path.exists(w)
  bad = subprocess.run([sys.executable, "-m", "xnn.cli", "sweep", "experiments/residual_vs_plain/config.py:quick",
                        "--workdir", w, "--dry-run", "--device", "a100"], capture_output=True, text=True, cwd=REPO,
                       timeout=120)
  assert bad.returncode == 2 and bad.stderr.startswith("xnn sweep: error: unknown device 'a100'"), bad.stderr
