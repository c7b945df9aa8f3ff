"""``xnn models [--family F] [--json]``: list the registered models.

For every model: family, default input (H, W, C), parameter count (from
``jax.eval_shape`` of ``init`` at the registry's default ``num_classes``: no
memory, no compute) and, when ``xnn.cost.analyze_model`` is available, MACs.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import jax
import jax.numpy as jnp


def count_params(name: str) -> int:
  """Parameters of the registered model `name` at its default input and classes."""
  import xnn.models as M
  info = M.info(name)
  model = M.build(name)
  error: Exception | None = None
  # Images and feature sequences take floats; token models (embeddings) take integers.
  for dtype in (getattr(info, "input_dtype", None) or jnp.float32, jnp.int32):
    x = jax.ShapeDtypeStruct((1, *info.input_shape), dtype)
    try:
      variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
    except (TypeError, ValueError) as e:
      error = error or e
      continue
    return int(sum(leaf.size for leaf in jax.tree_util.tree_leaves(variables.get("params", {}))))
  raise error  # type: ignore[misc]


def _macs_fn() -> Any:
  try:
    from xnn.cost import analyze_model  # written by the costing work; optional here
  except ImportError:
    return None
  return analyze_model


def collect(family: str | None = None, with_macs: bool = True) -> list[dict[str, Any]]:
  """One dict per registered model (sorted by family, then name)."""
  import xnn.models as M
  analyze = _macs_fn() if with_macs else None
  rows = []
  for name in M.names(family):
    info = M.info(name)
    row: dict[str, Any] = {"name": name, "family": info.family, "input_shape": list(info.input_shape),
                           "num_classes": info.num_classes, "params": None,
                           "description": info.description}
    try:
      row["params"] = count_params(name)
    except Exception as e:  # one broken model must not hide the others
      row["error"] = f"{type(e).__name__}: {e}"[:300]
    if analyze is not None:
      try:
        row["macs"] = int(analyze(name).macs)
      except Exception as e:  # a model the cost tool cannot analyse still gets listed
        row["macs"] = None
        row["macs_error"] = f"{type(e).__name__}: {e}"
    rows.append(row)
  return sorted(rows, key=lambda r: (r["family"], r["name"]))


def _human(n: int | None) -> str:
  if n is None:
    return "-"
  for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
    if n >= scale:
      return f"{n / scale:.2f}{unit}"
  return str(n)


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(prog="xnn models", description=__doc__.split("\n")[0])
  parser.add_argument("--family", help="only this family (serial, parallel, dense, residual, ...)")
  parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
  parser.add_argument("--no-macs", action="store_true", help="skip the MACs column")
  args = parser.parse_args(argv)

  import xnn.models as M
  if args.family and not M.names(args.family):
    families = sorted({M.info(n).family for n in M.names()})
    parser.error(f"no models in family {args.family!r}; families: {', '.join(families)}")

  start = time.perf_counter()
  rows = collect(args.family, with_macs=not args.no_macs)
  elapsed = time.perf_counter() - start
  if args.json:
    print(json.dumps(rows, indent=1))
    return 0

  from rich.console import Console
  from rich.table import Table
  has_macs = any("macs" in r for r in rows)
  table = Table(title=f"xnn models ({len(rows)}, {elapsed:.1f}s)")
  table.add_column("name", style="bold")
  table.add_column("family")
  table.add_column("input (H,W,C)")
  table.add_column("classes", justify="right")
  table.add_column("params", justify="right")
  if has_macs:
    table.add_column("MACs", justify="right")
  for r in rows:
    cells = [r["name"], r["family"], "x".join(map(str, r["input_shape"])), str(r["num_classes"]),
             "error" if r["params"] is None else f"{r['params']:,}"]
    if has_macs:
      cells.append(_human(r.get("macs")))
    table.add_row(*cells)
  Console().print(table)
  return 0
