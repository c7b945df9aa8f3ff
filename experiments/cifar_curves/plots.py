"""Test-accuracy curves of a cifar_curves folder, with the published accuracies as lines.

    python experiments/cifar_curves/plots.py WORKDIR

Reads WORKDIR/resnets and WORKDIR/course (either may be missing) and writes
WORKDIR/curves.png -- one panel per recipe, test accuracy against epochs, each
network's published CIFAR-10 accuracy (xnn.references) a dashed line of its colour --
and WORKDIR/table.md: final-epoch test accuracy (mean, min–max over seeds; never the
best epoch) beside the reference.
"""

from __future__ import annotations

import os
import sys

from xnn import plots
from xnn.references import reference_accuracy
from xnn.sweeps.experiments import plots_main
from xnn.sweeps.report import collect, mean_range, save_figure

TITLES = {"resnets": "He et al. 2015 recipe", "course": "course recipe (design homework)"}


def _recipes(workdir: str) -> dict[str, list]:
  found = {r: collect(os.path.join(workdir, r)) for r in TITLES if os.path.isdir(os.path.join(workdir, r))}
  if not found:
    raise FileNotFoundError(f"no recipe folders ({', '.join(TITLES)}) with runs in {workdir!r}")
  return found


def _by_model(runs) -> dict[str, list]:
  out: dict[str, list] = {}
  for r in runs:
    out.setdefault(r.config["model.name"], []).append(r)
  return out


def curves(recipes: dict[str, list], path: str) -> None:
  """One panel per recipe: each network's test accuracy per epoch (one line per seed) and its
  published CIFAR-10 accuracy as a dashed line of the same colour."""
  plt = plots.pyplot()
  fig, axes = plt.subplots(1, len(recipes), figsize=(6.5 * len(recipes), 4.8), squeeze=False)
  for ax, (recipe, runs) in zip(axes[0], recipes.items()):
    data = {str(r.config.get("data.name", "?")) for r in runs}
    by_model = sorted(_by_model(runs).items())
    for (name, rs), c in zip(by_model, plots.group_colors(len(by_model))):
      for j, r in enumerate(rs):
        ev = r.evals
        ax.plot([x["epoch"] for x in ev], [100 * plots.as_float(x["test_accuracy"]) for x in ev], "-", color=c,
                lw=1.5, label=f"{name} ({len(rs)} seed{'s' if len(rs) > 1 else ''})" if j == 0 else None)
      ref = reference_accuracy(name)
      if ref is not None:
        ax.axhline(100 * ref[0], color=c, ls="--", lw=1, label=f"{name} published: {100 * ref[0]:.2f}% ({ref[1]})")
    ax.set_title(f"{TITLES[recipe]} on {', '.join(sorted(data))}")
    plots.epoch_axis(ax)
    ax.set_ylabel("test accuracy (%)")
    plots.grid(ax)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1, frameon=False)
  fig.suptitle("test accuracy per epoch; dashed: the published CIFAR-10 accuracy, for orientation")
  save_figure(fig, path)


def table(recipes: dict[str, list]) -> str:
  lines = ["| recipe | data | network | params | runs | epochs | final test accuracy % (mean, min–max) "
           "| reference % (CIFAR-10) |", "|---|---|---|---|---|---|---|---|"]
  for recipe, runs in recipes.items():
    for name, rs in sorted(_by_model(runs).items()):
      done = [r for r in rs if r.final]
      acc = [100 * r.final["test_accuracy"] for r in done]
      ours = mean_range(acc, 2)
      ref = reference_accuracy(name)
      epochs = f"{done[0].final['epoch']:.0f}" if done else "–"
      params = f"{int(done[0].final['params']):,}" if done else "–"
      lines.append(f"| {recipe} | {rs[0].config.get('data.name', '?')} | {name} | {params} | {len(done)} | {epochs} "
                   f"| {ours} | {f'{100 * ref[0]:.2f} ({ref[1]})' if ref else '–'} |")
  return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
  def build(folder):
    recipes = _recipes(folder)
    return {"curves.png": lambda path: curves(recipes, path)}, "table.md", table(recipes)
  return plots_main(argv, __doc__, build)

if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
