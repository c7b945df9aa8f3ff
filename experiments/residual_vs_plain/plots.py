"""Figure 6 and Table 6 of He et al. 2015 from a residual-vs-plain sweep folder.

    python experiments/residual_vs_plain/plots.py SWEEP_DIR

Writes SWEEP_DIR/figure6.png (training error dashed, test error solid, against
iterations; plain networks left, residual right; each network's mean over its seeds,
with the min–max range over seeds shaded) and SWEEP_DIR/table6.md: per network, the
last epoch's training error and the final test error (the last evaluation, never the
best), each as mean (min–max) over seeds, beside the paper's published test errors;
then Figure 6's three claims checked seed by seed in training error (``figure6_claims``).
"""

from __future__ import annotations

import re
import sys

from xnn import plots
from xnn.references import HE2015_CIFAR10_TEST_ERROR as PAPER_ERROR
from xnn.sweeps.experiments import plots_main
from xnn.sweeps.report import by_field, collect, mean_range, save_figure, seed_curve


def _depth(name: str) -> int:
  """plain56 / resnet56 -> 56."""
  return int(re.search(r"\d+$", name).group())


def _seeds(runs) -> int:
  """The most seeds any network has (the figure's title)."""
  return max(len(rs) for rs in by_field(runs).values())


def train_error(r) -> float:
  """The last epoch's training error in %: the mean over its augmented batches (Figure 6's dashed curves)."""
  return 100 * (1 - r.final_train_accuracy)


def test_error(r) -> float:
  """The final evaluation's test error in %."""
  return 100 * (1 - r.final_accuracy)


def figure6(runs, path: str) -> None:
  """Training error (dashed) and test error (solid) against iterations, plain left, residual right:
  each network's mean over seeds, its min–max range over seeds shaded."""
  plt = plots.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
  groups = by_field(runs)
  data = ", ".join(sorted({str(r.config.get("data.name", "?")) for r in runs}))
  for ax, kind in zip(axes, ("plain", "resnet")):
    names = sorted((n for n in groups if n.startswith(kind)), key=_depth)
    for name, c in zip(names, plots.group_colors(len(names))):
      rs = groups[name]
      label = f"{kind}-{_depth(name)} ({len(rs)} seed{'s' if len(rs) > 1 else ''})"
      for record, key, style, shade in (("train", "accuracy", "--", 0.12), ("eval", "test_accuracy", "-", 0.22)):
        steps, mean, lo, hi = seed_curve(rs, record, key, x="step")
        ax.plot(steps, 100 * (1 - mean), style, color=c, lw=1 if record == "train" else 2,
                label=label if record == "eval" else None)
        if len(rs) > 1:
          ax.fill_between(steps, 100 * (1 - hi), 100 * (1 - lo), color=c, alpha=shade, lw=0)
    ax.set_title("plain networks" if kind == "plain" else "residual networks")
    plots.epoch_axis(ax, "iterations")
    plots.grid(ax)
    ax.legend(loc="upper right")
  axes[0].set_ylabel("error (%)  (dashed: training, solid: test)")
  seeds = _seeds(runs)
  fig.suptitle(f"He et al. 2015, Figure 6, on {data}: " + (f"mean of {seeds} seeds, min–max over seeds shaded"
                                                            if seeds > 1 else "one seed"))
  save_figure(fig, path)


def figure6_claims(runs) -> list[str]:
  """Figure 6's claims in training error, checked seed by seed (deepest depth D, shallowest d):
  plain-D trains worse than plain-d (the degradation problem), ResNet-D at least as well as
  ResNet-d, and ResNet-D better than plain-D. Each line says in how many of the seeds both
  networks ran the claim holds, and whether the two networks' ranges over seeds are apart."""
  groups = by_field([r for r in runs if r.final])
  depths = sorted({_depth(n) for n in groups})
  if not depths:
    return []
  lo, hi = depths[0], depths[-1]
  claims = [(f"plain{hi}", "worse than", f"plain{lo}", lambda a, b: a > b),
            (f"resnet{hi}", "at least as well as", f"resnet{lo}", lambda a, b: a <= b),
            (f"resnet{hi}", "better than", f"plain{hi}", lambda a, b: a < b)]
  lines = []
  for a, verb, b, holds in claims:
    if a == b or a not in groups or b not in groups:
      continue
    ea = {r.config.get("seed"): train_error(r) for r in groups[a]}
    eb = {r.config.get("seed"): train_error(r) for r in groups[b]}
    seeds = sorted(set(ea) & set(eb))
    failed = [s for s in seeds if not holds(ea[s], eb[s])]
    apart = all(holds(x, y) for x in ea.values() for y in eb.values())
    spans = ", ".join(f"{n} {min(e.values()):.2f}–{max(e.values()):.2f}" for n, e in ((a, ea), (b, eb)))
    lines.append(f"- {a} trains {verb} {b}: in {len(seeds) - len(failed)} of {len(seeds)} seeds"
                 + (f" (not in seed {', '.join(map(str, failed))})" if failed else "")
                 + f"; ranges over seeds {'apart' if apart else 'overlap'} ({spans})")
  return lines


def table6(runs) -> str:
  """Table 6 beside the paper, then ``figure6_claims``."""
  lines = ["| network | depth | params | seeds | training error % (last epoch) | test error % (final) "
           "| paper test error % |", "|---|---|---|---|---|---|---|"]
  groups = by_field(runs)
  for name in sorted(groups, key=lambda n: (n.startswith("resnet"), _depth(n))):
    done = [r for r in groups[name] if r.final]   # unfinished runs: left out; a network with none: dashes
    paper = f"{PAPER_ERROR[name]:.2f}" if name in PAPER_ERROR else "Fig. 6 only"
    params = f"{int(done[0].final['params']):,}" if done else "–"
    lines.append(f"| {name} | {_depth(name)} | {params} | {len(done)} "
                 f"| {mean_range([train_error(r) for r in done], 2)} | {mean_range([test_error(r) for r in done], 2)} "
                 f"| {paper} |")
  lines += ["", "Mean (min–max) over seeds. Training error: the last epoch's augmented batches (Figure 6's dashed "
            "curves); test error: the last evaluation, never the best.", ""]
  claims = figure6_claims(runs)
  if claims:
    lines += ["Figure 6's claims in training error, seed by seed:", "", *claims]
  return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
  def build(folder):
    runs = collect(folder)
    return {"figure6.png": lambda path: figure6(runs, path)}, "table6.md", table6(runs)
  return plots_main(argv, __doc__, build)

if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
