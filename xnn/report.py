"""``xnn report DIR``: a sweep's runs as a markdown table and PNG plots.

Reads every ``DIR/*/metrics.jsonl`` (the source of truth) with the run's
``config.json`` and ``final.json``. Runs that differ only in ``seed`` form a
group: the table gives the final test accuracy as mean and range over seeds
(never the best epoch, which is reported separately), wall time, parameters and
MACs. Plots: test-accuracy curves of every run, and final accuracy against
parameters and against MACs with the Pareto front marked (lecture 002: "how
small can a network be for a given accuracy?").
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from typing import Any, Callable

import numpy as np

from xnn.train.metrics import atomic_write, read_metrics


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


@dataclasses.dataclass
class RunRecord:
  name: str
  config: dict[str, Any]
  records: list[dict[str, Any]]
  final: dict[str, Any] | None

  @property
  def evals(self) -> list[dict[str, Any]]:
    return [r for r in self.records if r["type"] == "eval"]

  @property
  def final_accuracy(self) -> float | None:
    return self.final["test_accuracy"] if self.final else None

  @property
  def best_accuracy(self) -> float | None:
    return max((r["test_accuracy"] for r in self.evals), default=None)


def collect(sweep_dir: str) -> list[RunRecord]:
  runs = []
  for name in sorted(os.listdir(sweep_dir)):
    d = os.path.join(sweep_dir, name)
    if not os.path.isfile(os.path.join(d, "metrics.jsonl")):
      continue
    cfg = {}
    if os.path.exists(os.path.join(d, "config.json")):
      with open(os.path.join(d, "config.json")) as f:
        cfg = _flatten(json.load(f))
    final = None
    if os.path.exists(os.path.join(d, "final.json")):
      with open(os.path.join(d, "final.json")) as f:
        final = json.load(f)
    runs.append(RunRecord(name, cfg, read_metrics(os.path.join(d, "metrics.jsonl")), final))
  if not runs:
    raise FileNotFoundError(f"no runs (folders with metrics.jsonl) in {sweep_dir!r}")
  return runs


def varying_fields(runs: list[RunRecord], exclude: tuple[str, ...] = ("seed",)) -> list[str]:
  keys = sorted({k for r in runs for k in r.config})
  return [k for k in keys if k not in exclude and len({json.dumps(r.config.get(k)) for r in runs}) > 1]


def group_runs(runs: list[RunRecord]) -> dict[str, list[RunRecord]]:
  fields = varying_fields(runs)
  groups: dict[str, list[RunRecord]] = {}
  for r in runs:
    label = ", ".join(f"{k.split('.')[-1] if k.endswith('name') else k}={r.config.get(k)}" for k in fields) or "all"
    groups.setdefault(label, []).append(r)
  return groups


def mean_range(vals: list[float], digits: int = 4) -> str:
  """``mean (min–max)`` of ``vals``; the value alone for one, ``–`` for none."""
  if not vals:
    return "–"
  if len(vals) == 1:
    return f"{vals[0]:.{digits}f}"
  return f"{np.mean(vals):.{digits}f} ({min(vals):.{digits}f}–{max(vals):.{digits}f})"


def experiment_main(argv: list[str], doc: str, build: Callable[[str], tuple[dict, str, str]]) -> int:
  """Command line of an experiment's ``plots.py FOLDER``: ``build(folder)`` returns
  ``({png_name: draw(path)}, table_name, markdown)``; the PNGs and the table are written
  into the folder (atomically) and the table is printed."""
  if len(argv) != 1:
    print(doc)
    return 2
  figures, table_name, text = build(argv[0])
  for name, draw in figures.items():
    draw(os.path.join(argv[0], name))
  atomic_write(os.path.join(argv[0], table_name), text)
  print(text)
  return 0


def markdown_table(runs: list[RunRecord]) -> str:
  lines = ["| group | runs done | final test accuracy, mean (min–max) | best-epoch test accuracy, mean "
           "| wall time (s), mean | parameters | MACs |", "|---|---|---|---|---|---|---|"]
  for label, rs in group_runs(runs).items():
    done = [r for r in rs if r.final]
    finals = [r.final_accuracy for r in done]
    bests = [r.best_accuracy for r in rs if r.best_accuracy is not None]
    wall = f"{np.mean([r.final['wall_time_s'] for r in done]):.1f}" if done else "–"
    params = ", ".join(f"{p:,}" for p in sorted({int(r.final["params"]) for r in done})) or "–"
    macs = ", ".join(f"{m:,}" for m in sorted({int(r.final["macs"]) for r in done if r.final.get("macs")})) or "–"
    best = f"{np.mean(bests):.4f}" if bests else "–"
    lines.append(f"| {label} | {len(done)}/{len(rs)} | {mean_range(finals)} | {best} | {wall} | {params} | {macs} |")
  return "\n".join(lines) + "\n"


def pareto_front(costs: list[float], accs: list[float]) -> list[int]:
  """Indices of the runs no other run beats on both cost (lower) and accuracy (higher)."""
  order = sorted(range(len(costs)), key=lambda i: (costs[i], -accs[i]))
  front, best = [], -np.inf
  for i in order:
    if accs[i] > best:
      front.append(i)
      best = accs[i]
  return front


def save_figure(fig, path: str) -> None:
  """Writes a matplotlib figure as PNG atomically (no half-written file) and closes it."""
  import matplotlib.pyplot as plt
  buf = io.BytesIO()
  fig.tight_layout()
  fig.savefig(buf, format="png", dpi=100)
  plt.close(fig)
  atomic_write(path, buf.getvalue())


def plot_curves(runs: list[RunRecord], path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(8, 5))
  groups = group_runs(runs)
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for i, (label, rs) in enumerate(groups.items()):
    for j, r in enumerate(rs):
      ev = r.evals
      ax.plot([e["epoch"] for e in ev], [e["test_accuracy"] for e in ev], color=colors[i % len(colors)],
              alpha=0.8, label=label if j == 0 else None)
  ax.set_xlabel("epoch")
  ax.set_ylabel("test accuracy")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  save_figure(fig, path)


def plot_pareto(runs: list[RunRecord], path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  done = [r for r in runs if r.final]
  keys = [("params", "parameters")] + ([("macs", "MACs")] if all(r.final.get("macs") for r in done) else [])
  fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 4.5), squeeze=False)
  for ax, (key, label) in zip(axes[0], keys):
    costs = [float(r.final[key]) for r in done]
    accs = [float(r.final["test_accuracy"]) for r in done]
    ax.scatter(costs, accs, s=18)
    for r, c, a in zip(done, costs, accs):
      ax.annotate(r.config.get("model.name", r.name), (c, a), fontsize=6, alpha=0.7)
    front = pareto_front(costs, accs)
    ax.plot([costs[i] for i in front], [accs[i] for i in front], "r--", label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel(label)
    ax.set_ylabel("final test accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
  save_figure(fig, path)


def write_report(sweep_dir: str) -> str:
  """Writes report.md, curves.png and pareto.png into ``sweep_dir``; returns the markdown."""
  runs = collect(sweep_dir)
  md = ["# Sweep report", "", f"{len(runs)} runs in `{sweep_dir}`; final = last-epoch test accuracy.", "",
        markdown_table(runs), "![curves](curves.png)", "", "![accuracy vs cost](pareto.png)", ""]
  text = "\n".join(md)
  plot_curves(runs, os.path.join(sweep_dir, "curves.png"))
  if any(r.final for r in runs):
    plot_pareto(runs, os.path.join(sweep_dir, "pareto.png"))
  atomic_write(os.path.join(sweep_dir, "report.md"), text)
  return text
