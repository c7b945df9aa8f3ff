"""Figure 6 and Table 6 of He et al. 2015 from a residual-vs-plain sweep folder.

    python experiments/residual_vs_plain/plots.py SWEEP_DIR

Writes SWEEP_DIR/figure6.png (training error dashed, test error solid, against
iterations; plain networks left, residual right; the mean over seeds with the test
error's range shaded) and SWEEP_DIR/table6.md (final
test error, mean and range over seeds -- the last evaluation, never the best --
beside the paper's published errors).
"""

from __future__ import annotations

import re
import sys

import numpy as np

from xnn import plots
from xnn.references import HE2015_CIFAR10_TEST_ERROR as PAPER_ERROR
from xnn.sweeps.experiments import plots_main
from xnn.sweeps.report import collect, mean_range, save_figure


def _depth(name: str) -> int:
  """plain56 / resnet56 -> 56."""
  return int(re.search(r"\d+$", name).group())


def _mean_curve(rs, kind: str, key: str):
  """(steps, mean %, min %, max %) of an error curve over the seeds ``rs`` (steps every seed reached)."""
  curves = [{x["step"]: 100 * (1 - plots.as_float(x[key])) for x in r.records if x["type"] == kind} for r in rs]
  steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
  vals = np.array([[c[s] for s in steps] for c in curves]) if steps else np.zeros((0, 0))
  return steps, vals.mean(0) if steps else [], vals.min(0) if steps else [], vals.max(0) if steps else []


def figure6(runs, path: str) -> None:
  """Training error (dashed) and test error (solid) against iterations, plain left, residual right;
  several seeds: their mean, with the min-max range shaded for the test error."""
  plt = plots.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
  seeds = max(len([r for r in runs if r.config["model.name"] == n]) for n in {r.config["model.name"] for r in runs})
  data = ", ".join(sorted({str(r.config.get("data.name", "?")) for r in runs}))
  for ax, kind in zip(axes, ("plain", "resnet")):
    names = sorted({r.config["model.name"] for r in runs if r.config["model.name"].startswith(kind)}, key=_depth)
    colors = plots.group_colors(len(names))
    for name, c in zip(names, colors):
      rs = [r for r in runs if r.config["model.name"] == name]
      steps, mean, _, _ = _mean_curve(rs, "train", "accuracy")
      ax.plot(steps, mean, "--", color=c, lw=1)
      steps, mean, lo, hi = _mean_curve(rs, "eval", "test_accuracy")
      ax.plot(steps, mean, "-", color=c, lw=2, label=f"{kind}-{name[len(kind):]}")
      if len(rs) > 1:
        ax.fill_between(steps, lo, hi, color=c, alpha=0.15, lw=0)
    ax.set_title("plain networks" if kind == "plain" else "residual networks")
    plots.epoch_axis(ax, "iterations")
    plots.grid(ax)
    ax.legend(loc="upper right")
  axes[0].set_ylabel("error (%)  (dashed: training, solid: test)")
  fig.suptitle(f"He et al. 2015, Figure 6, on {data}: " + (f"mean of {seeds} seeds, test range shaded"
                                                            if seeds > 1 else "one seed"))
  save_figure(fig, path)


def table6(runs) -> str:
  lines = ["| network | depth | params | runs | our test error % (mean, min–max) | paper test error % |",
           "|---|---|---|---|---|---|"]
  names = sorted({r.config["model.name"] for r in runs}, key=lambda n: (n.startswith("resnet"), _depth(n)))
  for name in names:
    rs = [r for r in runs if r.config["model.name"] == name and r.final]
    errs = [100 * (1 - r.final["test_accuracy"]) for r in rs]
    ours = mean_range(errs, 2)
    paper = f"{PAPER_ERROR[name]:.2f}" if name in PAPER_ERROR else "Fig. 6 only"
    params = f"{int(rs[0].final['params']):,}" if rs else "–"
    lines.append(f"| {name} | {_depth(name)} | {params} | {len(rs)} | {ours} | {paper} |")
  return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
  def build(folder):
    runs = collect(folder)
    return {"figure6.png": lambda path: figure6(runs, path)}, "table6.md", table6(runs)
  return plots_main(argv, __doc__, build)

if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
