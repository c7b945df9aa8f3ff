"""What a search writes, read from its study alone: the table, the Pareto picture and ``best.py``.

* ``candidates.md`` / ``candidates.json``: every trial -- its candidate (the config
  diff), what became of it (trained, stopped early by the pruner, over the budget and
  never trained, a repeat of an earlier trial, failed), MACs, parameters, peak
  training memory, receptive field over the input side, roofline latency, final (or
  last) accuracy, epochs and wall time.
* ``pareto.png``: accuracy against MACs of the trained candidates, with the Pareto
  front (``xnn.sweeps.report.pareto_front``: no other candidate is both cheaper and
  more accurate) as a staircase; candidates stopped early are drawn at their last
  evaluation, hollow.
* ``best.py``: a config file ``xnn train --config SEARCH/best.py`` accepts. Its
  ``get_config(arg)`` is the search's base config with a candidate's diff: by default
  the most accurate candidate, with the search's ``final`` fields (e.g. the whole
  training split and the test split); ``:candidate=trialN`` picks another member of
  the front or a ``start`` candidate, ``:search`` leaves out the ``final`` fields
  (the candidate exactly as the search trained it).

Every file is written atomically, after every trial.
"""

from __future__ import annotations

import ast
import json
import math
import os
import pprint
from typing import Any

from xnn.train.metrics import atomic_write

OUTPUTS = ("candidates.md", "candidates.json", "pareto.png", "best.py")


def _state(t) -> str:
  return t.state.name.lower()


def outcome(t) -> str:
  """What became of a trial, in a few words."""
  a = t.user_attrs
  if "repeat_of" in a:
    return f"repeat of trial {a['repeat_of']}"
  if "invalid" in a:
    return "does not build"
  if "over_budget" in a:
    return "over budget, not trained"
  if "failed" in a and _state(t) == "pruned":
    return "failed"
  if "stopped_at" in a and _state(t) == "pruned":
    return f"stopped by the pruner after epoch {a['stopped_at']}"
  return {"complete": "trained", "running": "training", "fail": "interrupted", "waiting": "waiting"}.get(
      _state(t), _state(t))


def counts(trials) -> dict[str, int]:
  """Trials within the budget (told complete or pruned, not over it), over it, running; trained, stopped, repeats."""
  c = {"within": 0, "over": 0, "running": 0, "trained": 0, "stopped": 0, "repeats": 0}
  for t in trials:
    state, a = _state(t), t.user_attrs
    if state == "running":
      c["running"] += 1
    elif state in ("complete", "pruned"):
      over = "over_budget" in a or "invalid" in a
      c["over" if over else "within"] += 1
      if not over:
        c["repeats"] += "repeat_of" in a
        c["trained"] += state == "complete" and "repeat_of" not in a
        c["stopped"] += "stopped_at" in a and "repeat_of" not in a
  return c


def over_budget_summary(study) -> str:
  """How many candidates each limit kept from training: ``3 x MACs, 1 x receptive field``."""
  by: dict[str, int] = {}
  for t in study.get_trials(deepcopy=False):
    if _state(t) == "pruned" and "repeat_of" not in t.user_attrs:
      for line in t.user_attrs.get("over_budget", []):
        what = line.split(" ")[0] if not line.startswith(("peak", "receptive")) else " ".join(line.split(" ")[:2])
        by[what] = by.get(what, 0) + 1
      if "invalid" in t.user_attrs:
        by["does not build"] = by.get("does not build", 0) + 1
  return ", ".join(f"{n} x {k}" for k, n in sorted(by.items(), key=lambda kv: -kv[1])) or "none"


def rows(study) -> list[dict[str, Any]]:
  """One record per trial, in trial order."""
  out = []
  for t in study.get_trials(deepcopy=False):
    a = t.user_attrs
    cost = a.get("cost") or {}
    acc = t.values[0] if _state(t) == "complete" and t.values else (
        t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None)
    wall = a.get("final_wall_s") if a.get("final_wall_s") is not None else a.get("wall_s")
    out.append({"trial": t.number, "candidate": a.get("candidate"), "overrides": a.get("overrides", {}),
                "state": _state(t), "outcome": outcome(t), "why": "; ".join(a.get("over_budget", [])) or
                a.get("invalid") or a.get("failed"), "macs": cost.get("macs"), "params": cost.get("params"),
                "peak_train_bytes": cost.get("peak_train_bytes"), "rf_ratio": cost.get("rf_ratio"),
                "latency_s": cost.get("latency_s"), "accuracy": acc,
                "epochs": a.get("epochs") if a.get("epochs") is not None else (
                    max(t.intermediate_values) if t.intermediate_values else None),
                "wall_s": wall, "start": bool(a.get("start"))})
  return out


def diff_text(overrides: dict[str, str]) -> str:
  return ", ".join(f"{k.removeprefix('model.')}={v}" for k, v in sorted(overrides.items())) or "(the base config)"


def markdown(table: list[dict[str, Any]], latency: bool) -> str:
  from xnn.cost.render import binary, magnitude
  cols = ["trial", "candidate (config diff)", "outcome", "MACs", "params", "peak train memory", "RF / input"]
  cols += (["latency (ms)"] if latency else []) + ["accuracy", "epochs", "wall time (s)"]
  lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
  for r in table:
    cells = [str(r["trial"]) + (" (start)" if r["start"] else ""), diff_text(r["overrides"]),
             r["outcome"] + (f": {r['why']}" if r["why"] else ""),
             magnitude(r["macs"]) if r["macs"] is not None else "–",
             f"{r['params']:,}" if r["params"] is not None else "–",
             binary(r["peak_train_bytes"]) if r["peak_train_bytes"] is not None else "–",
             f"{r['rf_ratio']:.2f}" if r["rf_ratio"] is not None else "–"]
    if latency:
      cells.append(f"{r['latency_s'] * 1e3:.3g}" if r["latency_s"] is not None else "–")
    cells += [f"{r['accuracy']:.4f}" if r["accuracy"] is not None else "–",
              f"{r['epochs']:g}" if r["epochs"] is not None else "–",
              f"{r['wall_s']:.1f}" if r["wall_s"] is not None else "–"]
    lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
  return "\n".join(lines) + "\n"


def trained(table: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """The trained candidates (complete, each once), with their MACs and accuracy."""
  return [r for r in table if r["state"] == "complete" and not r["outcome"].startswith("repeat")
          and r["macs"] is not None and r["accuracy"] is not None]


def front(table: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """The Pareto front of accuracy (higher) against MACs (lower) of the trained candidates, cheapest first."""
  from xnn.sweeps.report import pareto_front
  done = trained(table)
  return [done[i] for i in pareto_front([float(r["macs"]) for r in done], [float(r["accuracy"]) for r in done])]


def plot(table: list[dict[str, Any]], path: str, title: str, max_macs: float | None) -> None:
  """``pareto.png``: accuracy against MACs, the front as a staircase, early stops hollow."""
  from matplotlib.lines import Line2D

  from xnn import plots
  from xnn.sweeps.report import save_figure
  plt = plots.pyplot()
  done, best = trained(table), front(table)
  stopped = [r for r in table if r["outcome"].startswith("stopped") and r["macs"] and r["accuracy"] is not None]
  fig, ax = plt.subplots(figsize=(7.5, 5))
  ax.scatter([r["macs"] for r in done], [r["accuracy"] for r in done], s=28, color="tab:blue", zorder=2)
  ax.scatter([r["macs"] for r in stopped], [r["accuracy"] for r in stopped], s=28, facecolors="none",
             edgecolors="tab:gray", zorder=2)
  starts = [r for r in done if r["start"]]
  ax.scatter([r["macs"] for r in starts], [r["accuracy"] for r in starts], s=90, marker="s", facecolors="none",
             edgecolors="tab:green", lw=1.5, zorder=3)
  ax.set_xscale("log")
  ax.margins(x=0.2, y=0.12)
  ax.autoscale_view()
  right = ax.get_xlim()[1]
  if best:
    fx, fy = [r["macs"] for r in best], [r["accuracy"] for r in best]
    ax.step(fx + [right], fy + [fy[-1]], where="post", color="crimson", lw=1.6, ls="--", zorder=1)
    ax.scatter(fx, fy, s=110, facecolors="none", edgecolors="crimson", lw=1.6, zorder=3)
  if max_macs is not None and max_macs < right:
    ax.axvline(max_macs, color="black", lw=1, ls=":")
  ax.set_xlim(right=right)
  ax.set_xlabel("forward MACs per example (log scale)")
  ax.set_ylabel("accuracy (final evaluation)")
  ax.set_title(title, fontsize=10)
  plots.grid(ax)
  handles = [Line2D([], [], ls="", marker="o", color="tab:blue", label="trained"),
             Line2D([], [], ls="", marker="o", mfc="none", color="tab:gray", label="stopped early (last evaluation)"),
             Line2D([], [], ls="", marker="s", mfc="none", color="tab:green", label="start (hand-designed)"),
             Line2D([], [], ls="--", marker="o", mfc="none", ms=9, color="crimson", label="Pareto front")]
  if max_macs is not None and max_macs < right:
    handles.append(Line2D([], [], ls=":", color="black", label="MACs budget"))
  ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
  labelled = {r["trial"]: r for r in best + starts}
  plots.label_points(ax, [r["macs"] for r in labelled.values()], [r["accuracy"] for r in labelled.values()],
                     [f"#{n}" for n in labelled], fontsize=8)
  save_figure(fig, path)


# --- best.py ------------------------------------------------------------------------------------


def _literal(v: Any) -> Any:
  """A JSON value as the Python literal a config sets (lists become tuples)."""
  if isinstance(v, list):
    return tuple(_literal(x) for x in v)
  if isinstance(v, dict):
    return {k: _literal(x) for k, x in v.items()}
  return v


def base_lines(base_plain: dict[str, Any]) -> list[str]:
  """``c.section.field = value`` for every field where the base config differs from the embedded default."""
  from xnn.configs.default import get_config
  from xnn.train.resume import as_plain, flatten
  default = flatten(as_plain(get_config()))
  lines = []
  for key, value in flatten(base_plain).items():
    if default.get(key, object()) != value or key.startswith("model.kwargs."):
      lines.append(f"  c.{key} = {_literal(value)!r}")
  return lines


def best_py(table: list[dict[str, Any]], base_plain: dict[str, Any], final: dict[str, Any], config: str,
            search_dir: str) -> str | None:
  """The text of ``best.py`` (None while no candidate is trained)."""
  ranked = sorted(front(table), key=lambda r: (-r["accuracy"], r["macs"]))
  if not ranked:
    return None
  extra = [r for r in trained(table) if r["start"] and r not in ranked]
  cands = {f"trial{r['trial']}": {k: ast.literal_eval(v) for k, v in sorted(r["overrides"].items())}
           for r in ranked + extra}
  notes = [f"#   trial{r['trial']}: accuracy {r['accuracy']:.4f}, {r['macs']:,} MACs, {r['params']:,} parameters"
           + (" (start)" if r["start"] else "") for r in ranked + extra]
  best = f"trial{ranked[0]['trial']}"
  where = os.path.normpath(search_dir)
  text = f'''"""The best candidates of the search in {where} (written by xnn search; rewritten after every trial).

Command:   xnn train --config {where}/best.py --workdir {where}/best
           (the most accurate candidate, {best}, with the search's final fields:
           {", ".join(f"{k}={v!r}" for k, v in final.items()) or "none"})
           xnn train --config {where}/best.py:candidate=trialN,search --workdir ...
           (another candidate of the front or a start candidate; search: exactly as the search trained it)
Search:    xnn search {config} --workdir {where}
"""

from xnn.configs import common
from xnn.configs.default import get_config as _default

BEST = {best!r}
# The Pareto front of accuracy against MACs (most accurate first), then the start candidates:
{chr(10).join(notes)}
CANDIDATES = {pprint.pformat(cands, indent=1, width=116, sort_dicts=False)}
FINAL = {pprint.pformat(dict(sorted(final.items())), width=116)}


def get_config(arg=None):
  arg = common.parse_arg(arg, candidate=BEST, search=False)
  if arg["candidate"] not in CANDIDATES:
    raise ValueError(f"candidate={{arg['candidate']!r}}: expected one of {{', '.join(CANDIDATES)}}")
  c = _default()
{chr(10).join(base_lines(base_plain))}
  for field, value in {{**CANDIDATES[arg["candidate"]], **({{}} if arg["search"] else FINAL)}}.items():
    *sections, key = field.split(".")
    node = c
    for s in sections:
      node = node[s]
    node[key] = value
  return c
'''
  return text


def write(study, search_dir: str, space, base_plain: dict[str, Any], config: str) -> None:
  """Writes the table, ``pareto.png`` (once a candidate is trained) and ``best.py``."""
  table = rows(study)
  latency = space.constraints.max_latency_ms is not None
  c = counts(study.get_trials(deepcopy=False))
  head = (f"# Search {os.path.basename(os.path.normpath(os.path.abspath(search_dir)))}\n\n"
          f"{c['within']} trials within the budget ({c['trained']} trained, {c['stopped']} stopped early by the "
          f"pruner, {c['repeats']} repeats); {c['over']} over the budget, never trained "
          f"({over_budget_summary(study)}). Accuracy: each run's last evaluation, on data.test_split "
          f"({base_plain.get('data', {}).get('test_split', '?')!r}).\n\n")
  atomic_write(os.path.join(search_dir, "candidates.md"), head + markdown(table, latency))
  atomic_write(os.path.join(search_dir, "candidates.json"),
               json.dumps({"counts": c, "trials": table, "front": [r["trial"] for r in front(table)]}, indent=1,
                          default=lambda v: None if isinstance(v, float) and not math.isfinite(v) else str(v)))
  if trained(table):
    title = (f"{os.path.basename(os.path.normpath(os.path.abspath(search_dir)))}: {c['trained']} trained, "
             f"{c['stopped']} stopped early, {c['over']} over budget (never trained)")
    plot(table, os.path.join(search_dir, "pareto.png"), title, space.constraints.max_macs)
  text = best_py(table, base_plain, space.final, config, search_dir)
  if text is not None:
    atomic_write(os.path.join(search_dir, "best.py"), text)
