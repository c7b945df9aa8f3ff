"""Sweeps: expansion, the local launcher (kill and re-launch), reports (Slurm, TPU, status: test_sweep_*.py)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO
from xnn import sweeps as s
from xnn.sweeps.report import collect, pareto_front, write_report
from xnn.train.metrics import read_metrics

SWEEP_CONFIG = '''
from xnn import sweeps as s
from xnn.configs.default import get_config as _default

def get_config(arg=None):
  c = _default()
  c.train.num_epochs = 2
  c.train.progress_bar = False
  return c

def get_sweep(arg=None):
  return s.product(s.values("train.batch_size", [64, 128]), s.seeds(2))
'''


def test_product_zip_seeds_expand_to_named_runs():
  sweep = s.product(s.values("model.name", ["plain20", "resnet20"]),
                    s.zip(s.values("optimizer.learning_rate", [0.1, 0.05]), s.values("train.batch_size", [128, 64])),
                    s.seeds(3))
  runs = s.named_runs(sweep)
  assert len(runs) == 2 * 2 * 3
  name, run = runs[0]
  assert run == {"model.name": "plain20", "optimizer.learning_rate": 0.1, "train.batch_size": 128, "seed": 0}
  assert name == "model.name-plain20__optimizer.learning_rate-0.1__seed-0__train.batch_size-128"
  assert s.overrides(run) == ["--config.model.name=plain20", "--config.optimizer.learning_rate=0.1",
                              "--config.seed=0", "--config.train.batch_size=128"]
  assert len({n for n, _ in runs}) == 12
  with pytest.raises(ValueError, match="equal length"):
    s.zip(s.values("a", [1, 2]), s.values("b", [1]))
  with pytest.raises(ValueError, match="sets \\['a'\\] twice"):
    s.product(s.values("a", [1]), s.values("a", [2]))
  with pytest.raises(ValueError, match="duplicate runs"):
    s.named_runs([{"a": 1}, {"a": 1}])


def test_local_launcher_killed_and_relaunched_completes_every_run_once(tmp_path):
  cfg = tmp_path / "sweep_cfg.py"
  cfg.write_text(SWEEP_CONFIG)
  sweep_dir = tmp_path / "sweep"
  cmd = [sys.executable, "-m", "xnn.cli", "sweep", str(cfg), f"--workdir={sweep_dir}", "--parallel=2"]
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:   # kill once some run has trained a few steps
    logs = [read_metrics(os.path.join(sweep_dir, d, "metrics.jsonl")) for d in
            (os.listdir(sweep_dir) if sweep_dir.exists() else [])]
    if any(any(r["type"] == "train" for r in recs) for recs in logs):
      break
    time.sleep(0.1)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 130, err.decode()[-2000:]
  finished_before = [d for d in os.listdir(sweep_dir) if (sweep_dir / d / "final.json").exists()]
  assert len(finished_before) < 4
  again = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  runs = sorted(d for d in os.listdir(sweep_dir) if (sweep_dir / d).is_dir())
  assert len(runs) == 4
  for d in runs:
    recs = read_metrics(str(sweep_dir / d / "metrics.jsonl"))
    assert sum(r["type"] == "final" for r in recs) == 1, d
    steps = [r["step"] for r in recs if r["type"] == "train"]
    assert steps == sorted(set(steps)), d
  for d in finished_before:
    assert f"{d}: done" not in again.stdout          # skipped, not re-run
  # A third launch has nothing left to do.
  third = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
  assert third.returncode == 0 and third.stdout.count("done (skipped)") == 4
  # Every start of a run is logged between markers; status reads them all as finished.
  from xnn.sweeps.status import sweep_status
  assert [r.state for r in sweep_status(str(sweep_dir))] == ["finished"] * 4
  assert json.load(open(sweep_dir / "sweep.json"))["launcher"] == "local"
  # The report reads them all.
  md = write_report(str(sweep_dir))
  assert "| train.batch_size=64 | 2/2 |" in md and "| train.batch_size=128 | 2/2 |" in md
  assert (sweep_dir / "curves.png").exists() and (sweep_dir / "pareto.png").exists()


def test_pareto_front():
  costs = [1, 2, 3, 4, 5]
  accs = [0.5, 0.7, 0.6, 0.9, 0.85]
  assert pareto_front(costs, accs) == [0, 1, 3]


def test_report_errors_on_an_empty_folder(tmp_path):
  with pytest.raises(FileNotFoundError, match="no runs"):
    collect(str(tmp_path))


def test_group_labels_name_the_model_and_shorten_other_fields():
  from xnn.sweeps.report import RunRecord, group_label, group_runs
  assert group_label({"model.name": "plain20", "seed": 1}, ["model.name"]) == "plain20"
  assert group_label({"model.name": "resnet20", "optimizer.learning_rate": 0.1, "data.flip": False},
                     ["model.name", "data.flip", "optimizer.learning_rate"]) == \
      "resnet20, data.flip=false, optimizer.learning_rate=0.1"
  assert group_label({"model.name": "resnet110"}, []) == "resnet110"      # only seeds vary
  assert group_label({}, []) == "all"
  run = lambda name, **cfg: RunRecord(name, cfg, [], None)
  groups = group_runs([run("a", **{"model.name": "resnet20", "optimizer.learning_rate": 0.1, "seed": 0}),
                       run("b", **{"model.name": "resnet20", "optimizer.learning_rate": 0.1, "seed": 1}),
                       run("c", **{"model.name": "plain20", "optimizer.learning_rate": 0.05, "seed": 0})])
  assert {k: [r.name for r in v] for k, v in groups.items()} == {
      "resnet20, optimizer.learning_rate=0.1": ["a", "b"], "plain20, optimizer.learning_rate=0.05": ["c"]}
  long = "x" * 40
  groups = group_runs([run("a", **{"model.kwargs": long + "1"}), run("b", **{"model.kwargs": long + "2"})])
  assert list(groups) == [f"model.kwargs={long}1", f"model.kwargs={long}2"]   # cut values would collide


def test_point_labels_stay_inside_the_axes_and_apart():
  from xnn import plots
  plt = plots.pyplot()
  fig, ax = plt.subplots(figsize=(5, 4))
  xs = [1, 1, 1.05, 2, 2, 10, 10]
  ys = [0.90, 0.901, 0.902, 0.5, 0.5, 0.99, 0.2]
  ax.scatter(xs, ys)
  ax.set_xscale("log")
  ax.margins(0.2)
  texts = plots.label_points(ax, xs, ys, [f"model_{i}" for i in range(len(xs))])
  renderer = fig.canvas.get_renderer()
  boxes = [t.get_window_extent(renderer) for t in texts]
  inside = ax.get_window_extent(renderer)
  assert all(inside.x0 <= b.x0 and b.x1 <= inside.x1 and inside.y0 <= b.y0 and b.y1 <= inside.y1 for b in boxes)
  assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
  plt.close(fig)


def _fake_run(d, model, seed, accs, losses, params):
  os.makedirs(d)
  recs = []
  for epoch, (acc, loss) in enumerate(zip(accs, losses), 1):
    recs.append({"type": "epoch", "step": 10 * epoch, "epoch": float(epoch), "train_loss": loss, "train_accuracy": acc})
    recs.append({"type": "eval", "step": 10 * epoch, "epoch": float(epoch), "test_loss": loss, "test_accuracy": acc})
  with open(os.path.join(d, "metrics.jsonl"), "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in recs)
  with open(os.path.join(d, "config.json"), "w") as f:
    json.dump({"seed": seed, "model": {"name": model}}, f)
  with open(os.path.join(d, "final.json"), "w") as f:
    json.dump({"test_accuracy": accs[-1], "wall_time_s": 1.0, "params": params, "macs": 10 * params}, f)
  return recs


def test_report_and_run_curves_of_fake_runs(tmp_path):
  from xnn.train.metrics import plot_curves
  recs = _fake_run(tmp_path / "model.name-resnet56__seed-0", "resnet56", 0, [0.4, 0.1, 0.8], [1.5, 7600.0, 0.6], 853)
  _fake_run(tmp_path / "model.name-resnet56__seed-1", "resnet56", 1, [0.4, 0.7, 0.82], [1.5, 0.9, 0.5], 853)
  _fake_run(tmp_path / "model.name-plain20__seed-0", "plain20", 0, [0.3, 0.5, 0.6], [2.0, "nan", 1.0], 270)
  md = write_report(str(tmp_path))
  assert "| plain20 | 1/1 | 0.6000 |" in md and "| resnet56 | 2/2 | 0.8100 (0.8000–0.8200) |" in md
  for png in ("curves.png", "pareto.png"):
    with open(tmp_path / png, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  plot_curves(recs, str(tmp_path / "run.png"), title="resnet56 on cifar10")
  with open(tmp_path / "run.png", "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]     # written atomically, nothing left over


def test_tuple_values_as_flags_and_names():
  """Tuples are written as ml-collections parses them back (comma-separated), names as before."""
  run = {"schedule.boundaries": (400, 32000, 48000), "schedule.scales": (10, 0.1, 0.1), "train.cpu_conv": "xnn"}
  assert s.overrides(run) == ["--config.schedule.boundaries=400,32000,48000", "--config.schedule.scales=10,0.1,0.1",
                              "--config.train.cpu_conv=xnn"]
  assert s.run_name(run) == "schedule.boundaries-400_32000_48000__schedule.scales-10_0.1_0.1__train.cpu_conv-xnn"
  from xnn.commands.train import parse
  config, _ = parse(s.overrides(run))
  assert config.schedule.boundaries == (400, 32000, 48000) and config.schedule.scales == (10, 0.1, 0.1)


def test_load_sweep_checks_its_config_and_fields_before_anything_runs(tmp_path):
  cfg = tmp_path / "bad.py"
  cfg.write_text(SWEEP_CONFIG.replace('s.values("train.batch_size", [64, 128])', 's.values("train.batchsize", [64])'))
  with pytest.raises(ValueError, match="sets 'train.batchsize', which is not a config field"):
    s.load_sweep(str(cfg))
  ok = tmp_path / "ok.py"
  ok.write_text(SWEEP_CONFIG.replace('s.values("train.batch_size", [64, 128])',
                                     's.values("model.kwargs.head", ["pixel", "gap_linear"])'))
  names = [n for n, _ in s.load_sweep(str(ok))]
  assert names[:2] == ["model.kwargs.head-pixel__seed-0", "model.kwargs.head-pixel__seed-1"]
  with pytest.raises(ValueError, match="arg must be one of quick, tiny"):
    s.load_sweep(os.path.join(REPO, "experiments", "residual_vs_plain", "config.py") + ":bogus")
