"""Test-accuracy curves of a cifar_curves folder, with the published accuracies as lines.

    python experiments/cifar_curves/plots.py WORKDIR

Reads WORKDIR/resnets and WORKDIR/course (either may be missing) and writes
WORKDIR/curves.png -- one panel per recipe, test accuracy against epochs, each
network's mean over seeds with the min–max range shaded and its published CIFAR-10
accuracy (xnn.references) a dashed line of its colour --
and WORKDIR/table.md: final test accuracy (the last evaluation, never the best) and the last
epoch's training accuracy, each as mean (min–max) over seeds, beside the reference.
"""

from __future__ import annotations

import os
import sys

from xnn import plots
from xnn.references import reference_accuracy
from xnn.sweeps.experiments import plots_main
from xnn.sweeps.report import by_field, collect, mean_range, save_figure, seed_curve

TITLES = {"resnets": "He et al. 2015 recipe", "course": "course recipe (design homework)"}


def _recipes(workdir: str) -> dict[str, list]:
  found = {r: collect(os.path.join(workdir, r)) for r in TITLES if os.path.isdir(os.path.join(workdir, r))}
  if not found:
    raise FileNotFoundError(f"no recipe folders ({', '.join(TITLES)}) with runs in {workdir!r}")
  return found


def curves(recipes: dict[str, list], path: str) -> None:
  """One panel per recipe: each network's test accuracy per epoch (the mean over its seeds, the min–max
  range over seeds shaded) and its published CIFAR-10 accuracy as a dashed line of the same colour."""
  plt = plots.pyplot()
  fig, axes = plt.subplots(1, len(recipes), figsize=(6.5 * len(recipes), 4.8), squeeze=False)
  for ax, (recipe, runs) in zip(axes[0], recipes.items()):
    data = {str(r.config.get("data.name", "?")) for r in runs}
    by_model = sorted(by_field(runs).items())
    for (name, rs), c in zip(by_model, plots.group_colors(len(by_model))):
      epochs, mean, lo, hi = seed_curve(rs)
      ax.plot(epochs, 100 * mean, "-", color=c, lw=1.5, label=f"{name} ({len(rs)} seed{'s' if len(rs) > 1 else ''})")
      if len(rs) > 1:
        ax.fill_between(epochs, 100 * lo, 100 * hi, color=c, alpha=0.2, lw=0)
      ref = reference_accuracy(name)
      if ref is not None:
        ax.axhline(100 * ref[0], color=c, ls="--", lw=1, label=f"{name} published: {100 * ref[0]:.2f}% ({ref[1]})")
    ax.set_title(f"{TITLES[recipe]} on {', '.join(sorted(data))}")
    plots.epoch_axis(ax)
    ax.set_ylabel("test accuracy (%)")
    plots.grid(ax)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1, frameon=False)
  fig.suptitle("test accuracy per epoch: mean over seeds, min–max shaded; dashed: the published CIFAR-10 "
               "accuracy, for orientation")
  save_figure(fig, path)


def table(recipes: dict[str, list]) -> str:
  """Per network: final test and last-epoch training accuracy, mean (min–max) over seeds, beside the reference."""
  lines = ["| recipe | data | network | params | seeds | epochs | final test accuracy % | last-epoch training "
           "accuracy % | reference % (CIFAR-10) |", "|---|---|---|---|---|---|---|---|---|"]
  for recipe, runs in recipes.items():
    for name, rs in sorted(by_field(runs).items()):
      done = [r for r in rs if r.final]        # unfinished runs: left out; a network with none: dashes
      test = mean_range([100 * r.final_accuracy for r in done], 2)
      train = mean_range([100 * r.final_train_accuracy for r in done], 2)
      params, epochs = (f"{int(done[0].final['params']):,}", f"{done[0].final['epoch']:.0f}") if done else ("–", "–")
      ref = reference_accuracy(name)
      lines.append(f"| {recipe} | {rs[0].config.get('data.name', '?')} | {name} | {params} | {len(done)} | {epochs} "
                   f"| {test} | {train} | {f'{100 * ref[0]:.2f} ({ref[1]})' if ref else '–'} |")
  lines += ["", "Mean (min–max) over seeds; the test accuracy is the last evaluation's, never the best; the "
            "training accuracy is the last epoch's augmented batches."]
  return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
  def build(folder):
    recipes = _recipes(folder)
    return {"curves.png": lambda path: curves(recipes, path)}, "table.md", table(recipes)
  return plots_main(argv, __doc__, build)

if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
