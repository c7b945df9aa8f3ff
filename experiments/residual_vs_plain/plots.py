"""Figure 6 and Table 6 of He et al. 2015 from a residual-vs-plain sweep folder.

    python experiments/residual_vs_plain/plots.py SWEEP_DIR

Writes SWEEP_DIR/figure6.png (training error dashed, test error solid, against
iterations; plain networks left, residual right) and SWEEP_DIR/table6.md (final
test error, mean and range over seeds -- the last evaluation, never the best --
beside the paper's published errors).
"""

from __future__ import annotations

import re
import sys

from xnn.references import HE2015_CIFAR10_TEST_ERROR as PAPER_ERROR
from xnn.sweeps.experiments import plots_main
from xnn.sweeps.report import collect, mean_range, save_figure


def _depth(name: str) -> int:
  """plain56 / resnet56 -> 56."""
  return int(re.search(r"\d+$", name).group())


def figure6(runs, path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for ax, kind in zip(axes, ("plain", "resnet")):
    names = sorted({r.config["model.name"] for r in runs if r.config["model.name"].startswith(kind)},
                   key=_depth)
    for i, name in enumerate(names):
      rs = [r for r in runs if r.config["model.name"] == name]
      r = rs[0]
      train = [x for x in r.records if x["type"] == "train"]
      ev = r.evals
      c = colors[i % len(colors)]
      ax.plot([x["step"] for x in train], [100 * (1 - x["accuracy"]) for x in train], "--", color=c, lw=1)
      ax.plot([x["step"] for x in ev], [100 * (1 - x["test_accuracy"]) for x in ev], "-", color=c, lw=2,
              label=f"{kind}-{name[len(kind):]}")
    ax.set_title("plain networks" if kind == "plain" else "residual networks")
    ax.set_xlabel("iterations")
    ax.grid(alpha=0.3)
    ax.legend()
  axes[0].set_ylabel("error (%)  (dashed: training, solid: test)")
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
