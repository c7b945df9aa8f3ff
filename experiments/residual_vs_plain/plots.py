"""Figure 6 and Table 6 of He et al. 2015 from a residual-vs-plain sweep folder.

    python experiments/residual_vs_plain/plots.py SWEEP_DIR

Writes SWEEP_DIR/figure6.png (training error dashed, test error solid, against
iterations; plain networks left, residual right) and SWEEP_DIR/table6.md (final
test error, mean and range over seeds -- the last evaluation, never the best --
beside the paper's published errors).
"""

from __future__ import annotations

import io
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from xnn.report import collect  # noqa: E402
from xnn.train.metrics import atomic_write  # noqa: E402

# He et al. 2015, Table 6 (CIFAR-10 test error %, residual networks; 110: best of 5 runs,
# mean 6.61 +- 0.16). The plain networks appear only in Figure 6.
PAPER_ERROR = {"resnet20": 8.75, "resnet32": 7.51, "resnet44": 7.17, "resnet56": 6.97, "resnet110": 6.43}


def figure6(runs, path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for ax, kind in zip(axes, ("plain", "resnet")):
    names = sorted({r.config["model.name"] for r in runs if r.config["model.name"].startswith(kind)},
                   key=lambda n: int(n[len(kind):]))
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
  buf = io.BytesIO()
  fig.tight_layout()
  fig.savefig(buf, format="png", dpi=100)
  plt.close(fig)
  atomic_write(path, buf.getvalue())


def table6(runs) -> str:
  lines = ["| network | depth | params | runs | our test error % (mean, min–max) | paper test error % |",
           "|---|---|---|---|---|---|"]
  names = sorted({r.config["model.name"] for r in runs}, key=lambda n: (n.startswith("resnet"), int(n.lstrip("plainres"))))
  for name in names:
    rs = [r for r in runs if r.config["model.name"] == name and r.final]
    errs = [100 * (1 - r.final["test_accuracy"]) for r in rs]
    ours = "–" if not errs else (f"{errs[0]:.2f}" if len(errs) == 1 else
                                 f"{np.mean(errs):.2f} ({min(errs):.2f}–{max(errs):.2f})")
    paper = f"{PAPER_ERROR[name]:.2f}" if name in PAPER_ERROR else "Fig. 6 only"
    params = f"{int(rs[0].final['params']):,}" if rs else "–"
    lines.append(f"| {name} | {name.lstrip('plainres')} | {params} | {len(rs)} | {ours} | {paper} |")
  return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
  if len(argv) != 1:
    print(__doc__)
    return 2
  runs = collect(argv[0])
  figure6(runs, os.path.join(argv[0], "figure6.png"))
  text = table6(runs)
  atomic_write(os.path.join(argv[0], "table6.md"), text)
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
