"""The ready experiments end to end on the digits (their --tiny modes): runs, plots, tables."""

import os
import subprocess
import sys

from conftest import REPO


def _run(script: str, workdir) -> str:
  proc = subprocess.run([sys.executable, os.path.join(REPO, "experiments", script, "run.py"), "--tiny",
                         "--workdir", str(workdir)], capture_output=True, text=True, timeout=900, cwd=REPO)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return proc.stdout


def _png(path) -> None:
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_residual_vs_plain_tiny_writes_figure6_and_table6(tmp_path):
  _run("residual_vs_plain", tmp_path)
  _png(tmp_path / "figure6.png")
  _png(tmp_path / "curves.png")        # xnn report's own plots
  table = (tmp_path / "table6.md").read_text().splitlines()
  rows = {r.split("|")[1].strip(): r for r in table[2:]}
  assert set(rows) == {"plain20", "resnet20"}
  assert "8.75" in rows["resnet20"] and "Fig. 6 only" in rows["plain20"]   # He et al. 2015, Table 6
  assert "269,722" in rows["resnet20"]   # ResNet-20, option A: 0.27M in the paper's Table 6
  assert "| resnet20 | 1/1 |" in (tmp_path / "report.md").read_text()   # xnn report of the sweep, by model name


def test_cifar_curves_tiny_writes_curves_with_references(tmp_path):
  _run("cifar_curves", tmp_path)
  _png(tmp_path / "curves.png")
  for recipe in ("resnets", "course"):
    assert (tmp_path / recipe / "report.md").exists()
  table = (tmp_path / "table.md").read_text()
  assert "| resnets | digits | resnet20 | 269,722 | 1 | 2 |" in table
  assert "91.25 (He et al. 2015, Table 6)" in table          # 100 - 8.75
  assert "| course | digits | mobilenet_v2_28 |" in table and "89.33 (the course's design homework)" in table
