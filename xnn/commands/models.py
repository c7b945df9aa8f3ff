"""``xnn models [--family F] [--macs] [--json]``: list the registered models.

For every model: family, default input (H, W, C), classes, parameter count (from
``jax.eval_shape`` of ``init`` at the registry's default ``num_classes``: no
memory, no compute) and, with ``--macs``, MACs (``xnn.cost.analyze_model``). The
parameters are those of the model as trained (``xnn.models.init_variables``, a
train-mode init): a model with auxiliary classifiers (Inception-v3) counts them, and
the table says how many of them only training uses (``train_only``: the train-mode
count minus the inference-mode one).

Counting all models takes a minute (MACs: several), so the numbers are looked up
by code version: ``source_key`` hashes the syntax trees (docstrings and comments
left out) of the files that determine them, plus the jax and flax versions. The
package ships them for its own code in ``xnn/models/catalog.json`` (rewritten by
``xnn models --write-catalog``); anything else is computed once, with progress on
stderr, and kept per user in ``$XNN_CACHE_DIR/models``, else
``$XDG_CACHE_HOME/xnn/models`` or ``~/.cache/xnn/models``.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp

from xnn.commands import ArgumentParser, CommandError

PACKAGE = Path(__file__).resolve().parents[1]
CATALOG = PACKAGE / "models" / "catalog.json"
# The xnn sub-packages whose code determines each number (the MACs also depend on the
# convolution backend of xnn/ops and on the counting rules of xnn/cost).
SOURCES = {"params": ("models",), "train_only": ("models",), "macs": ("models", "cost", "ops")}


def _code_tree(path: Path) -> str:
  """The syntax tree of a Python file without docstrings (comments are not in it)."""
  tree = ast.parse(path.read_text(), filename=str(path))
  for node in ast.walk(tree):
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
      body = node.body
      if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
          and isinstance(body[0].value.value, str):
        node.body = body[1:] or [ast.Pass()]
  return ast.dump(tree)


def source_key(kind: str) -> str:
  """Hash of the code that determines `kind` ('params' or 'macs') and the jax/flax versions."""
  h = hashlib.sha256()
  for lib in ("jax", "flax"):
    h.update(f"{lib}=={importlib.metadata.version(lib)}\n".encode())
  for sub in SOURCES[kind]:
    for path in sorted((PACKAGE / sub).glob("*.py")):
      h.update(f"{sub}/{path.name}\n".encode())
      h.update(_code_tree(path).encode())
  return h.hexdigest()[:16]


def cache_dir() -> Path:
  """Per-user cache folder of the model numbers (``xnn.train.compilation.user_cache_dir``)."""
  from xnn.train.compilation import user_cache_dir
  return Path(user_cache_dir("models"))


def _read_json(path: Path) -> dict[str, Any]:
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError):
    return {}


class Numbers:
  """One kind of number ('params' or 'macs') per model name, valid for the current code.

  Looked up in the shipped catalog (when its key is the current one), then in the
  user cache file ``<cache_dir>/<kind>-<key>.json``, which ``put`` rewrites
  atomically after every model. ``use_cache=False`` reads and writes neither.
  """

  def __init__(self, kind: str, use_cache: bool = True):
    self.kind, self.use_cache = kind, use_cache
    self.key = source_key(kind)
    self.path = cache_dir() / f"{kind}-{self.key}.json"
    self.values: dict[str, int] = {}
    self._warned = False
    if use_cache:
      catalog = _read_json(CATALOG)
      if catalog.get(f"{kind}_key") == self.key:
        for name, entry in catalog.get("models", {}).items():
          if isinstance(entry.get(kind), int):
            self.values[name] = entry[kind]
      for name, value in _read_json(self.path).items():
        if isinstance(value, int) and name not in self.values:
          self.values[name] = value

  def get(self, name: str) -> int | None:
    return self.values.get(name)

  def put(self, name: str, value: int) -> None:
    self.values[name] = value
    if not self.use_cache:
      return
    from xnn.train.metrics import atomic_write
    try:
      self.path.parent.mkdir(parents=True, exist_ok=True)
      merged = {**_read_json(self.path), name: value}     # keep what a concurrent run added
      atomic_write(str(self.path), json.dumps(merged, indent=0, sort_keys=True))
    except OSError as e:
      if not self._warned:
        print(f"xnn models: warning: cannot write the cache {self.path}: {e}", file=sys.stderr)
        self._warned = True


def count_params(name: str, train: bool = True) -> int:
  """Parameters of the registered model `name` at its default input and classes: as trained (a train-mode
  init, auxiliary classifiers included), or those of an inference-mode init (``train=False``)."""
  import xnn.models as M
  info = M.info(name)
  model = M.build(name)
  error: Exception | None = None
  # Images and feature sequences take floats; token models (embeddings) take integers.
  for dtype in (getattr(info, "input_dtype", None) or jnp.float32, jnp.int32):
    x = jax.ShapeDtypeStruct((1, *info.input_shape), dtype)
    if train:
      init = lambda x: M.init_variables(model, (x,), jax.random.key(0), info.rng_streams)  # noqa: E731
    else:
      init = lambda x: model.init(jax.random.key(0), x, train=False)  # noqa: E731
    try:
      variables = jax.eval_shape(init, x)
    except (TypeError, ValueError) as e:
      error = error or e
      continue
    return int(sum(leaf.size for leaf in jax.tree_util.tree_leaves(variables.get("params", {}))))
  raise error  # type: ignore[misc]


def count_train_only(name: str) -> int:
  """Parameters of `name` that only training uses (auxiliary classifiers): train-mode minus inference count."""
  return count_params(name) - count_params(name, train=False)


def _macs_fn() -> Callable[[str], Any]:
  from xnn.cost import analyze_model
  return analyze_model


def count_macs(name: str) -> int:
  """Forward MACs of the registered model `name` at its default input, batch 1."""
  return int(_macs_fn()(name).macs)


class _Progress:
  """Progress of the models being counted, on stderr: a bar on a terminal, else a line each."""

  def __init__(self, total: int, what: str, note: str):
    self.total, self.done = total, 0
    self.bar = None
    print(f"xnn models: counting {what} of {total} models ({note})", file=sys.stderr, flush=True)
    if sys.stderr.isatty():
      from rich.console import Console
      from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
      self.bar = Progress(TextColumn("xnn models: {task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), console=Console(stderr=True), transient=True)
      self.bar.start()
      self.task = self.bar.add_task(what, total=total)

  def start(self, name: str) -> None:
    if self.bar is not None:
      self.bar.update(self.task, description=name)

  def finish(self, name: str, text: str, seconds: float) -> None:
    self.done += 1
    if self.bar is not None:
      self.bar.advance(self.task)
    else:
      print(f"  [{self.done:>{len(str(self.total))}}/{self.total}] {name}: {text} ({seconds:.1f} s)",
            file=sys.stderr, flush=True)

  def close(self) -> None:
    if self.bar is not None:
      self.bar.stop()


def _fill(rows: list[dict[str, Any]], kinds: dict[str, Numbers]) -> None:
  """Sets each row's numbers of `kinds`, counting (and storing) the ones not known yet."""
  counters = {"params": count_params, "train_only": count_train_only, "macs": count_macs}
  for r in rows:
    for k, numbers in kinds.items():
      r[k] = numbers.get(r["name"])
  todo = [r for r in rows if any(r[k] is None for k in kinds)]
  if not todo:
    return
  missing = sorted({k for r in todo for k in kinds if r[k] is None})
  note = (f"not yet known for this code version; cached in {cache_dir()}"
          if all(numbers.use_cache for numbers in kinds.values()) else "--no-cache: nothing is read or kept")
  progress = _Progress(len(todo), " and ".join(missing), note)
  try:
    for r in todo:
      progress.start(r["name"])
      start, texts = time.perf_counter(), []
      for k in missing:
        if r[k] is not None:
          continue
        try:
          r[k] = counters[k](r["name"])
        except Exception as e:  # noqa: BLE001 -- one model that cannot be counted must not hide the others
          r["error" if k == "params" else "macs_error"] = f"{type(e).__name__}: {e}"[:300]
          texts.append(f"{k} failed ({type(e).__name__})")
          continue
        kinds[k].put(r["name"], r[k])
        texts.append(f"{r[k]:,} {k}")
      progress.finish(r["name"], ", ".join(texts), time.perf_counter() - start)
  finally:
    progress.close()


def collect(family: str | None = None, with_macs: bool = False, use_cache: bool = True) -> list[dict[str, Any]]:
  """One dict per registered model (sorted by family, then name)."""
  import xnn.models as M
  rows = []
  for name in M.names(family):
    info = M.info(name)
    rows.append({"name": name, "family": info.family, "input_shape": list(info.input_shape),
                 "num_classes": info.num_classes, "params": None, "train_only": None,
                 "description": info.description})
  kinds = {"params": Numbers("params", use_cache), "train_only": Numbers("train_only", use_cache)}
  if with_macs:
    kinds["macs"] = Numbers("macs", use_cache)
  _fill(rows, kinds)
  return sorted(rows, key=lambda r: (r["family"], r["name"]))


def write_catalog(path: Path = CATALOG, use_cache: bool = True) -> dict[str, Any]:
  """Counts parameters and MACs of every model and writes them, with their keys, to `path`."""
  from xnn.train.metrics import atomic_write
  keys = {f"{k}_key": source_key(k) for k in SOURCES}
  rows = collect(with_macs=True, use_cache=use_cache)
  if keys != {f"{k}_key": source_key(k) for k in SOURCES}:
    raise CommandError("the code changed while the models were counted; catalog not written, run again", 1)
  failed = [f"{r['name']} ({r.get('error') or r.get('macs_error')})" for r in rows
            if any(r[k] is None for k in SOURCES)]
  if failed:
    raise CommandError(f"cannot count {len(failed)} models, catalog not written: {'; '.join(failed)}", 1)
  entries = {r["name"]: {k: r[k] for k in SOURCES} for r in sorted(rows, key=lambda r: r["name"])}
  head = {"about": "Parameters (as trained; train_only: those only training uses) and MACs of the registered "
                   "models, valid while params_key / train_only_key / macs_key equal "
                   "xnn.commands.models.source_key('params' / 'train_only' / 'macs'); rewritten by "
                   "`xnn models --write-catalog`.",
          **keys}
  lines = [f" {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
  lines += [' "models": {'] + [f"  {json.dumps(n)}: {json.dumps(e)}," for n, e in entries.items()]
  lines[-1] = lines[-1].rstrip(",")
  text = "{\n" + "\n".join(lines) + "\n }\n}\n"
  atomic_write(str(path), text)
  return json.loads(text)


def _human(n: int | None) -> str:
  if n is None:
    return "-"
  for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
    if n >= scale:
      v = n / scale
      return f"{v:.{2 if v < 10 else 1 if v < 100 else 0}f} {unit}"
  return str(n)


def _cells(rows: list[dict[str, Any]], with_macs: bool) -> tuple[list[str], list[list[str]]]:
  header = ["name", "family", "default input", "classes", "params"] + (["MACs"] if with_macs else [])
  body = []
  for r in rows:
    cells = [r["name"], r["family"], "x".join(map(str, r["input_shape"])), str(r["num_classes"]),
             "error" if r["params"] is None else f"{r['params']:,}" + ("*" if r.get("train_only") else "")]
    if with_macs:
      cells.append("error" if r.get("macs") is None else _human(r["macs"]))
    body.append(cells)
  return header, body


def print_table(rows: list[dict[str, Any]], with_macs: bool) -> None:
  """The table (``_print_cells``), then a note naming the parameters only training uses."""
  _print_cells(rows, with_macs)
  marked = [r for r in rows if r.get("train_only")]
  if marked:
    listing = ", ".join(f"{r['name']} {r['train_only']:,}" for r in marked)
    print(f"* includes parameters used only in training (auxiliary classifiers): {listing}")


def _print_cells(rows: list[dict[str, Any]], with_macs: bool) -> None:
  """A rich table on a terminal wide enough for it; aligned plain text otherwise (names never cut)."""
  header, body = _cells(rows, with_macs)
  right = {3, 4, 5}
  if sys.stdout.isatty():
    from rich import box
    from rich.console import Console
    from rich.measure import Measurement
    from rich.table import Table
    console = Console()
    table = Table(title=f"{len(rows)} models", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                  collapse_padding=True)
    for i, h in enumerate(header):
      table.add_column(h.replace(" ", "\n"), justify="right" if i in right else "left", no_wrap=True,
                       style="bold" if i == 0 else None)
    for cells in body:
      table.add_row(*cells)
    if Measurement.get(console, console.options.update(max_width=10**4), table).maximum <= console.width:
      console.print(table)
      return
  widths = [max(len(c) for c in col) for col in zip(header, *body)]
  for cells in [header, ["-" * w for w in widths], *body]:
    print("  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip())


def main(argv: list[str]) -> int:
  parser = ArgumentParser(prog="xnn models", description=__doc__.split("\n")[0])
  parser.add_argument("--family", help="only this family (serial, parallel, dense, residual, ...)")
  parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
  parser.add_argument("--macs", action="store_true", help="add the MACs column (forward pass, batch 1)")
  parser.add_argument("--no-macs", action="store_true", help="no MACs column (the default)")
  parser.add_argument("--no-cache", action="store_true",
                      help="count everything afresh: read and write neither the catalog nor the cache")
  parser.add_argument("--write-catalog", action="store_true",
                      help="count parameters and MACs of every model and write xnn/models/catalog.json")
  args = parser.parse_args(argv)

  import xnn.models as M
  if args.family and not M.names(args.family):
    families = sorted({M.info(n).family for n in M.names()})
    parser.error(f"no models in family {args.family!r}; families: {', '.join(families)}")
  if args.write_catalog:
    if args.family:
      parser.error("--write-catalog counts every model; it takes no --family")
    catalog = write_catalog(use_cache=not args.no_cache)
    print(f"wrote {CATALOG}: {len(catalog['models'])} models, params_key {catalog['params_key']}, "
          f"macs_key {catalog['macs_key']}")
    return 0

  with_macs = args.macs and not args.no_macs
  rows = collect(args.family, with_macs=with_macs, use_cache=not args.no_cache)
  if args.json:
    print(json.dumps(rows, indent=1))
  else:
    print_table(rows, with_macs)
  return 0
