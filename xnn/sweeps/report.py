"""``xnn report DIR``: a sweep's runs as a markdown table and PNG plots.

Reads every ``DIR/*/metrics.jsonl`` (the source of truth) with the run's
``config.json`` and ``final.json``. Runs that differ only in ``seed`` form a
group, labelled by the config fields that vary across the sweep (``resnet20`` for
``model.name``, ``field=value`` for any other field): the table gives the final
test accuracy as mean and range over seeds (never the best epoch, which is
reported separately), wall time, parameters and MACs. Plots: ``curves.png``, test
accuracy against epoch (each seed a thin line, the group's mean a thick one, one
colour per group), and ``pareto.png``, final accuracy against parameters and
against MACs with the Pareto front of the groups drawn as a staircase (lecture
002: "how small can a network be for a given accuracy?").
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any, Callable

import numpy as np

from xnn import plots
from xnn.train.metrics import atomic_write


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
  def final_train_accuracy(self) -> float | None:
    """The last epoch's training accuracy (mean over its augmented batches; ``final.json``), NaN if unknown."""
    return plots.as_float(self.final.get("train_accuracy", "nan")) if self.final else None

  @property
  def best_accuracy(self) -> float | None:
    return max((r["test_accuracy"] for r in self.evals), default=None)


class CorruptRun(ValueError):
  """A run file the report cannot read: ``path`` and what is wrong with it."""

  def __init__(self, path: str, problem: str):
    super().__init__(f"{path}: {problem}")
    self.path, self.problem = path, problem


def _number(v: Any) -> bool:
  """A number, or a non-finite one as ``metrics.jsonl`` writes it (``"nan"``, ``"inf"``)."""
  if isinstance(v, bool):
    return False
  if isinstance(v, (int, float)):
    return True
  try:
    return isinstance(v, str) and not np.isfinite(float(v))
  except ValueError:
    return False


def _read_json(path: str) -> Any:
  try:
    with open(path, "rb") as f:
      return json.loads(f.read().decode("utf-8"))
  except (UnicodeDecodeError, ValueError) as e:
    raise CorruptRun(path, f"not valid JSON ({str(e).splitlines()[0]})") from None


def read_records(path: str) -> list[dict[str, Any]]:
  """The records of a ``metrics.jsonl``, each checked for what the report reads.

  A torn last line (no newline: a kill while it was written) is dropped, as
  ``xnn.train.metrics.read_metrics`` does; any other bad line raises ``CorruptRun``
  naming the file and the line.
  """
  with open(path, "rb") as f:
    lines = f.read().split(b"\n")
  out = []
  for n, raw in enumerate(lines, 1):
    last = n == len(lines)            # after the final newline: empty, or torn
    if not raw.strip():
      continue
    try:
      rec = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
      if last:
        break
      raise CorruptRun(path, f"line {n} is not a JSON record ({str(e).splitlines()[0]})") from None
    if not isinstance(rec, dict) or not isinstance(rec.get("type"), str):
      raise CorruptRun(path, f"line {n} is not a record with a 'type' ({_clip(raw)})")
    if rec["type"] == "eval" and not (_number(rec.get("epoch")) and _number(rec.get("test_accuracy"))):
      raise CorruptRun(path, f"line {n}: an eval record without a numeric epoch and test_accuracy ({_clip(raw)})")
    out.append(rec)
  return out


def _clip(raw: bytes, width: int = 60) -> str:
  s = raw.decode("utf-8", "replace")
  return s if len(s) <= width else s[:width - 1] + "…"


FINAL_FIELDS = ("test_accuracy", "wall_time_s", "params")


def read_run(d: str) -> RunRecord:
  """One run folder: ``metrics.jsonl`` with ``config.json`` and ``final.json`` when present.

  A file that is not what the report needs (bad JSON, bad encoding, a missing or
  non-numeric field) raises ``CorruptRun`` naming it.
  """
  cfg: dict[str, Any] = {}
  path = os.path.join(d, "config.json")
  if os.path.exists(path):
    raw = _read_json(path)
    if not isinstance(raw, dict):
      raise CorruptRun(path, f"expected a JSON object (the run's config), got {type(raw).__name__}")
    cfg = _flatten(raw)
  final = None
  path = os.path.join(d, "final.json")
  if os.path.exists(path):
    final = _read_json(path)
    if not isinstance(final, dict):
      raise CorruptRun(path, f"expected a JSON object, got {type(final).__name__}")
    bad = [k for k in FINAL_FIELDS if not _number(final.get(k))]
    if bad or ("macs" in final and final["macs"] is not None and not _number(final["macs"])):
      raise CorruptRun(path, f"expected numbers for {', '.join(bad or ['macs'])}")
  return RunRecord(os.path.basename(d), cfg, read_records(os.path.join(d, "metrics.jsonl")), final)


def collect(sweep_dir: str, warn: Callable[[str], None] | None = None) -> list[RunRecord]:
  """The runs (sub-folders with a ``metrics.jsonl``) of a sweep folder.

  A run with a file that cannot be read (``CorruptRun``, or an ``OSError`` such as
  a permission error) is skipped: ``warn`` gets one line naming the file
  (default: printed to stderr). No readable run at all is a ``FileNotFoundError``.
  """
  warn = warn or (lambda text: print(f"warning: {text}", file=sys.stderr))
  if not os.path.isdir(sweep_dir):
    what = "is not a folder" if os.path.exists(sweep_dir) else "does not exist"
    raise FileNotFoundError(f"sweep folder {sweep_dir!r} {what}")
  runs, skipped = [], 0
  for name in sorted(os.listdir(sweep_dir)):
    d = os.path.join(sweep_dir, name)
    if not os.path.isfile(os.path.join(d, "metrics.jsonl")):
      continue
    try:
      runs.append(read_run(d))
    except CorruptRun as e:
      warn(f"skipping run {name}: {e}")
      skipped += 1
    except OSError as e:
      warn(f"skipping run {name}: {e.filename or d}: {e.strerror or e}")
      skipped += 1
  if not runs:
    also = f" ({skipped} skipped as unreadable)" if skipped else ""
    raise FileNotFoundError(f"no runs (folders with a readable metrics.jsonl) in {sweep_dir!r}{also}")
  return runs


def varying_fields(runs: list[RunRecord], exclude: tuple[str, ...] = ("seed",)) -> list[str]:
  """Config fields whose value differs between runs, ``model.name`` first, then alphabetical."""
  keys = sorted({k for r in runs for k in r.config}, key=lambda k: (k != "model.name", k))
  return [k for k in keys if k not in exclude and len({json.dumps(r.config.get(k)) for r in runs}) > 1]


def _short(v: Any, width: int = 24) -> str:
  if isinstance(v, bool):
    return str(v).lower()
  if isinstance(v, float):
    return f"{v:g}"
  s = str(v)
  return s if len(s) <= width else s[:width - 1] + "…"


def group_label(config: dict[str, Any], fields: list[str], short: bool = True) -> str:
  """A group's name from its values of the varying ``fields``: ``model.name``'s value alone
  (``resnet20``), ``field=value`` for the others (``resnet20, optimizer.learning_rate=0.1``);
  when nothing varies, the model's name (or ``all``). ``short`` writes floats with ``%g`` and cuts
  long values."""
  fmt = _short if short else str
  parts = [fmt(config.get(k)) if k == "model.name" else f"{k}={fmt(config.get(k))}" for k in fields]
  return ", ".join(parts) or fmt(config.get("model.name", "all"))


def group_runs(runs: list[RunRecord]) -> dict[str, list[RunRecord]]:
  """Runs by group label, in the order their groups first appear (runs differing only in seed share one)."""
  fields = varying_fields(runs)
  groups: dict[tuple, list[RunRecord]] = {}
  for r in runs:
    groups.setdefault(tuple(json.dumps(r.config.get(k), sort_keys=True) for k in fields), []).append(r)
  labels = [group_label(rs[0].config, fields) for rs in groups.values()]
  if len(set(labels)) < len(labels):        # shortened values collide: spell them out
    labels = [group_label(rs[0].config, fields, short=False) for rs in groups.values()]
  return dict(zip(labels, groups.values()))


def mean_range(vals: list[float], digits: int = 4) -> str:
  """``mean (min–max)`` of ``vals``; the value alone for one, ``–`` for none."""
  if not vals:
    return "–"
  if len(vals) == 1:
    return f"{vals[0]:.{digits}f}"
  return f"{np.mean(vals):.{digits}f} ({min(vals):.{digits}f}–{max(vals):.{digits}f})"


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
  """Indices of the runs no other run beats on both cost (lower) and accuracy (higher), by cost."""
  order = sorted(range(len(costs)), key=lambda i: (costs[i], -accs[i]))
  front, best = [], -np.inf
  for i in order:
    if accs[i] > best:
      front.append(i)
      best = accs[i]
  return front


def save_figure(fig, path: str) -> None:
  """Writes a matplotlib figure as PNG atomically (no half-written file) and closes it."""
  atomic_write(path, plots.png_bytes(fig))


def by_field(runs: list[RunRecord], field: str = "model.name") -> dict[str, list[RunRecord]]:
  """Runs by their value of one config ``field`` (the seeds of each network, for an experiment's table)."""
  out: dict[str, list[RunRecord]] = {}
  for r in runs:
    out.setdefault(str(r.config.get(field, "?")), []).append(r)
  return out


def seed_curve(rs: list[RunRecord], kind: str = "eval", key: str = "test_accuracy",
               x: str = "epoch") -> tuple[list[float], np.ndarray, np.ndarray, np.ndarray]:
  """One metric over a group's seeds: the ``x`` values of the ``kind`` records every run has reached, and
  the mean, min and max of ``key`` over the runs there (NaNs left out)."""
  per_run = [{round(float(e[x]), 6): plots.as_float(e[key]) for e in r.records if e["type"] == kind and key in e}
             for r in rs]
  xs = sorted(set.intersection(*(set(p) for p in per_run))) if per_run else []
  vals = np.array([[p[v] for v in xs] for p in per_run], dtype=float).reshape(len(per_run), len(xs))
  if not xs:
    return xs, *(np.zeros(0),) * 3
  return xs, np.nanmean(vals, 0), np.nanmin(vals, 0), np.nanmax(vals, 0)


def plot_curves(runs: list[RunRecord], path: str, title: str = "") -> None:
  """Test accuracy against epoch: a colour per group, each seed thin, the group mean thick."""
  plt = plots.pyplot()
  groups = group_runs(runs)
  colors = plots.group_colors(len(groups))
  fig, ax = plt.subplots(figsize=(9, 5))
  for color, (label, rs) in zip(colors, groups.items()):
    for r in rs:
      ev = r.evals
      ax.plot([e["epoch"] for e in ev], [plots.as_float(e["test_accuracy"]) for e in ev], color=color,
              lw=1.0 if len(rs) > 1 else 1.8, alpha=0.5 if len(rs) > 1 else 0.9,
              marker="o" if len(ev) <= 3 else None, ms=3, label=None if len(rs) > 1 else label)
    if len(rs) > 1:
      xs, ys, _, _ = seed_curve(rs)
      ax.plot(xs, ys, color=color, lw=2.2, marker="o" if len(xs) <= 3 else None, ms=4,
              label=f"{label} (mean of {len(rs)})")
  plots.epoch_axis(ax)
  ax.set_ylabel("test accuracy")
  ax.set_title(f"{title}: test accuracy per epoch" if title else "test accuracy per epoch")
  plots.grid(ax)
  ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
            ncol=1 if len(groups) <= 16 else 2, title="thin: one seed" if any(len(rs) > 1 for rs in groups.values())
            else None, title_fontsize=8)
  save_figure(fig, path)


def _pareto_panel(ax, groups: dict[str, list[RunRecord]], colors: list, key: str, label: str) -> tuple[list, ...]:
  """One cost axis: every run as a dot, each group's mean with a min–max bar, the front as a staircase;
  returns the groups' (mean costs, mean accuracies, labels)."""
  names, costs, accs = [], [], []
  for color, (name, rs) in zip(colors, groups.items()):
    done = [r for r in rs if r.final]
    if not done:
      continue
    c = [float(r.final[key]) for r in done]
    a = [float(r.final["test_accuracy"]) for r in done]
    ax.scatter(c, a, s=12, color=color, alpha=0.5, lw=0)
    ax.errorbar([np.mean(c)], [np.mean(a)], yerr=[[np.mean(a) - min(a)], [max(a) - np.mean(a)]], fmt="o",
                ms=6, color=color, capsize=3, lw=1)
    names.append(name)
    costs.append(float(np.mean(c)))
    accs.append(float(np.mean(a)))
  ax.set_xscale("log")
  ax.margins(x=0.25, y=0.15)
  front = pareto_front(costs, accs)
  fx, fy = [costs[i] for i in front], [accs[i] for i in front]
  ax.autoscale_view()
  right = ax.get_xlim()[1]
  ax.step(fx + [right], fy + [fy[-1]], where="post", color="crimson", lw=1.6, ls="--", zorder=1,
          label="Pareto front (group means)")
  ax.scatter(fx, fy, s=110, facecolors="none", edgecolors="crimson", lw=1.6, zorder=3)
  ax.set_xlim(right=right)
  ax.set_xlabel(label + " (log scale)")
  ax.set_ylabel("final test accuracy")
  ax.set_title(f"final test accuracy vs {label}")
  plots.grid(ax)
  return costs, accs, names


def plot_pareto(runs: list[RunRecord], path: str, title: str = "") -> None:
  """Final test accuracy against parameters (and MACs, when every run has them) with the Pareto front."""
  plt = plots.pyplot()
  from matplotlib.lines import Line2D
  groups = group_runs(runs)
  colors = plots.group_colors(len(groups))
  done = [r for r in runs if r.final]
  keys = [("params", "parameters")] + ([("macs", "MACs")] if all(r.final.get("macs") for r in done) else [])
  fig, axes = plt.subplots(1, len(keys), figsize=(6.5 * len(keys), 5), squeeze=False)
  points = [_pareto_panel(ax, groups, colors, key, label) for ax, (key, label) in zip(axes[0], keys)]
  handles = [Line2D([], [], ls="", marker="o", ms=4, color="black", alpha=0.5, label="one run"),
             Line2D([], [], ls="", marker="o", ms=6, color="black", label="group mean (bar: min–max over seeds)"),
             Line2D([], [], ls="--", marker="o", ms=9, mfc="none", color="crimson", label="Pareto front")]
  fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, bbox_to_anchor=(0.5, -0.01), frameon=False)
  if title:
    fig.suptitle(title)
  fig.tight_layout(rect=(0, 0.05, 1, 1))
  for ax, (costs, accs, names) in zip(axes[0], points):    # after the layout: placement needs final axes sizes
    plots.label_points(ax, costs, accs, names, fontsize=7)
  save_figure(fig, path)


def write_report(sweep_dir: str, warn: Callable[[str], None] | None = None) -> str:
  """Writes report.md, curves.png and pareto.png into ``sweep_dir``; returns the markdown.

  Runs with an unreadable file are left out, each with one ``warn`` line (``collect``).
  """
  skipped: list[str] = []
  warn = warn or (lambda text: print(f"warning: {text}", file=sys.stderr))

  def note(text: str) -> None:
    skipped.append(text)
    warn(text)

  runs = collect(sweep_dir, note)
  title = os.path.basename(os.path.normpath(os.path.abspath(sweep_dir)))
  md = ["# Sweep report", "", f"{len(runs)} runs in `{sweep_dir}`; final = last-epoch test accuracy.", "",
        markdown_table(runs), "![curves](curves.png)", "", "![accuracy vs cost](pareto.png)", ""]
  if skipped:
    md += [f"Left out, {len(skipped)} unreadable runs:", "", *(f"- {t}" for t in skipped), ""]
  text = "\n".join(md)
  plot_curves(runs, os.path.join(sweep_dir, "curves.png"), title)
  if any(r.final for r in runs):
    plot_pareto(runs, os.path.join(sweep_dir, "pareto.png"), title)
  atomic_write(os.path.join(sweep_dir, "report.md"), text)
  return text
