"""The ready experiments end to end on the digits (their --tiny modes): runs, plots, tables; their quick
sweeps' seeds, and the tables' mean (min–max) over seeds on run folders with known numbers."""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

from xnn.sweeps.experiments import sibling
from xnn.sweeps.spec import load_sweep


def _run(script: str, workdir) -> str:
  proc = subprocess.run([sys.executable, os.path.join(REPO, "experiments", script, "run.py"), "--tiny",
                         "--workdir", str(workdir)], capture_output=True, text=True, timeout=900, cwd=REPO)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return proc.stdout


def _png(path) -> None:
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def _rows(markdown: str) -> dict[str, str]:
  """A markdown table's rows by their first cell (header and separator left out)."""
  rows = [r for r in markdown.splitlines() if r.startswith("| ") and not r.startswith("|---")][1:]
  return {r.split("|")[1].strip(): r for r in rows}


@pytest.mark.slow
def test_residual_vs_plain_tiny_writes_figure6_and_table6(tmp_path):
  _run("residual_vs_plain", tmp_path)
  _png(tmp_path / "figure6.png")
  _png(tmp_path / "curves.png")        # xnn report's own plots
  rows = _rows((tmp_path / "table6.md").read_text())
  assert set(rows) == {"plain20", "resnet20"}
  assert "8.75" in rows["resnet20"] and "Fig. 6 only" in rows["plain20"]   # He et al. 2015, Table 6
  assert "269,722" in rows["resnet20"]   # ResNet-20, option A: 0.27M in the paper's Table 6
  assert "| resnet20 | 1/1 |" in (tmp_path / "report.md").read_text()   # xnn report of the sweep, by model name


@pytest.mark.slow
def test_cifar_curves_tiny_writes_curves_with_references(tmp_path):
  _run("cifar_curves", tmp_path)
  _png(tmp_path / "curves.png")
  for recipe in ("resnets", "course"):
    assert (tmp_path / recipe / "report.md").exists()
  table = (tmp_path / "table.md").read_text()
  assert "| resnets | digits | resnet20 | 269,722 | 1 | 2 |" in table
  assert "91.25 (He et al. 2015, Table 6)" in table          # 100 - 8.75
  assert "| course | digits | mobilenet_v2_28 |" in table and "89.33 (the course's design homework)" in table


@pytest.mark.parametrize("spec, networks", [
    ("residual_vs_plain/config.py:quick", {"plain20", "resnet20", "plain56", "resnet56"}),
    ("cifar_curves/config.py:resnets,quick", {"resnet20", "resnet32"}),
    ("cifar_curves/config.py:course,quick", {"mobilenet_v2_28", "resnet_v2b"}),
])
def test_quick_sweeps_run_three_seeds_per_network(spec, networks):
  seeds: dict[str, set] = {}
  for _, run in load_sweep(os.path.join(REPO, "experiments", spec)):
    seeds.setdefault(run["model.name"], set()).add(run["seed"])
  assert set(seeds) == networks
  assert all(len(s) >= 3 for s in seeds.values()), seeds       # a conclusion needs >= 3 seeds


def _fake_run(folder, model: str, seed: int, train_acc: float, test_acc: float, params: int, epochs: int = 2):
  """A run folder as a finished run leaves it (config.json, metrics.jsonl, final.json), with known accuracies."""
  os.makedirs(folder)
  config = {"model": {"name": model}, "seed": seed, "data": {"name": "digits"}}
  with open(os.path.join(folder, "config.json"), "w") as f:
    json.dump(config, f)
  with open(os.path.join(folder, "metrics.jsonl"), "w") as f:
    for e in range(1, epochs + 1):
      last = e == epochs
      for rec in ({"type": "train", "step": 10 * e, "epoch": e, "accuracy": train_acc if last else 0.5},
                  {"type": "epoch", "step": 10 * e, "epoch": e, "train_accuracy": train_acc if last else 0.5},
                  {"type": "eval", "step": 10 * e, "epoch": e, "test_accuracy": test_acc if last else 0.5}):
        f.write(json.dumps(rec) + "\n")
  with open(os.path.join(folder, "final.json"), "w") as f:
    json.dump({"epoch": epochs, "test_accuracy": test_acc, "train_accuracy": train_acc, "wall_time_s": 1.0,
               "params": params}, f)


def test_table6_gives_mean_and_range_over_seeds_and_checks_each_claim_per_seed(tmp_path):
  # training / test error % per seed 0, 1, 2
  errors = {"plain20": ([1, 2, 3], [2, 2, 2]), "plain56": ([60, 50, 70], [61, 51, 71]),
            "resnet20": ([0.5, 0.25, 0.75], [1, 1, 1]), "resnet56": ([0.25, 0.5, 0.5], [1, 2, 3])}
  for name, (train, test) in errors.items():
    for seed, (tr, te) in enumerate(zip(train, test)):
      _fake_run(tmp_path / f"{name}_{seed}", name, seed, 1 - tr / 100, 1 - te / 100, 7)
  plots = sibling(os.path.join(REPO, "experiments", "residual_vs_plain", "run.py"), "plots")
  assert plots.main([str(tmp_path)]) == 0
  _png(tmp_path / "figure6.png")
  text = (tmp_path / "table6.md").read_text()
  rows = _rows(text)
  assert rows["plain56"] == "| plain56 | 56 | 7 | 3 | 60.00 (50.00–70.00) | 61.00 (51.00–71.00) | Fig. 6 only |"
  assert rows["resnet20"] == "| resnet20 | 20 | 7 | 3 | 0.50 (0.25–0.75) | 1.00 (1.00–1.00) | 8.75 |"
  assert ("- plain56 trains worse than plain20: in 3 of 3 seeds; ranges over seeds apart "
          "(plain56 50.00–70.00, plain20 1.00–3.00)") in text
  # 0.25 <= 0.5, 0.5 > 0.25, 0.5 <= 0.75: holds in seeds 0 and 2 only, and the ranges overlap
  assert "- resnet56 trains at least as well as resnet20: in 2 of 3 seeds (not in seed 1); ranges over seeds overlap" \
         in text
  assert "- resnet56 trains better than plain56: in 3 of 3 seeds; ranges over seeds apart" in text


def test_cifar_curves_table_gives_mean_and_range_over_seeds(tmp_path):
  for seed, (tr, te) in enumerate([(0.99, 0.97), (1.0, 0.98), (0.98, 0.99)]):
    _fake_run(tmp_path / "resnets" / f"r{seed}", "resnet20", seed, tr, te, 269_722)
  _fake_run(tmp_path / "course" / "m0", "mobilenet_v2_28", 0, 0.9, 0.8, 5)
  plots = sibling(os.path.join(REPO, "experiments", "cifar_curves", "run.py"), "plots")
  assert plots.main([str(tmp_path)]) == 0
  _png(tmp_path / "curves.png")
  text = (tmp_path / "table.md").read_text()
  assert ("| resnets | digits | resnet20 | 269,722 | 3 | 2 | 98.00 (97.00–99.00) | 99.00 (98.00–100.00) "
          "| 91.25 (He et al. 2015, Table 6) |") in text
  assert "| course | digits | mobilenet_v2_28 | 5 | 1 | 2 | 80.00 | 90.00 |" in text   # one seed: no range
