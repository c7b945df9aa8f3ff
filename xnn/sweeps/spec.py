"""Sweep declaration: named runs, each a set of ``--config.*`` overrides.

A config file may define ``get_sweep(arg)`` beside ``get_config(arg)`` and build
it from these pieces (big_vision's product/zip style; ``xnn.sweeps`` re-exports them)::

    from xnn import sweeps as s

    def get_sweep(arg=None):
      return s.product(
          s.values("model.name", ["plain20", "resnet20", "plain56", "resnet56"]),
          s.zip(s.values("optimizer.learning_rate", [0.1, 0.05]),
                s.values("train.batch_size", [128, 64])),
          s.seeds(3))

A sweep is a list of runs; a run is a dict ``{"field.path": value}``. Every run
has a stable name built from its overrides (``model.name=resnet20,seed=1`` ->
``model.name-resnet20__seed-1``), so re-launching finds the same workdirs.
"""

from __future__ import annotations

import builtins
import itertools
import re
from typing import Any, Iterable, Sequence

Run = dict[str, Any]


def values(field: str, vals: Iterable[Any]) -> list[Run]:
  """One run per value of ``field``."""
  vals = list(vals)
  if not vals:
    raise ValueError(f"sweep over {field!r} has no values")
  return [{field: v} for v in vals]


def seeds(n: int, field: str = "seed", start: int = 0) -> list[Run]:
  """``n`` repetitions with seeds start, start+1, ..."""
  if n < 1:
    raise ValueError(f"seeds(n) needs n >= 1, got {n}")
  return values(field, range(start, start + n))


def product(*sweeps: Sequence[Run]) -> list[Run]:
  """Every combination (the first sweep varies slowest)."""
  out = []
  for combo in itertools.product(*sweeps):
    run: Run = {}
    for part in combo:
      clash = set(run) & set(part)
      if clash:
        raise ValueError(f"product of sweeps sets {sorted(clash)} twice")
      run.update(part)
    out.append(run)
  return out


def zip(*sweeps: Sequence[Run]) -> list[Run]:  # noqa: A001 -- the name users expect
  """Element-wise combination of sweeps of equal length."""
  lengths = {len(s) for s in sweeps}
  if len(lengths) != 1:
    raise ValueError(f"zip needs sweeps of equal length, got lengths {[len(s) for s in sweeps]}")
  return [product(*[[p] for p in parts])[0] for parts in builtins.zip(*sweeps)]


def _fmt(v: Any) -> str:
  """A value as a ``--config`` flag writes it: booleans lower-case, tuples comma-separated."""
  if isinstance(v, bool):
    return str(v).lower()
  if isinstance(v, (tuple, list)):
    return ",".join(_fmt(x) for x in v)
  return str(v)


def run_name(run: Run) -> str:
  """Stable, filesystem-safe name of a run, from its overrides in sorted order."""
  parts = [f"{k}-{_fmt(v)}" for k, v in sorted(run.items())]
  name = "__".join(parts) or "default"
  return re.sub(r"[^A-Za-z0-9._=-]+", "_", name)


def overrides(run: Run) -> list[str]:
  """The run as ``--config.field=value`` flags."""
  return [f"--config.{k}={_fmt(v)}" for k, v in sorted(run.items())]


def named_runs(sweep: Sequence[Run]) -> list[tuple[str, Run]]:
  """(name, run) pairs; duplicate runs are an error."""
  out = [(run_name(r), r) for r in sweep]
  names = [n for n, _ in out]
  dupes = sorted({n for n in names if names.count(n) > 1})
  if dupes:
    raise ValueError(f"sweep has duplicate runs: {dupes}")
  return out


def load_sweep(config_spec: str) -> list[tuple[str, Run]]:
  """The named runs of ``FILE[:ARG]``'s ``get_sweep(arg)``.

  Checked before anything runs: ``get_config(arg)`` must give a valid config, and
  every field a run sets must exist in it (``model.kwargs`` is open).
  """
  import importlib.util
  import os
  path, _, arg = config_spec.partition(":")
  if not os.path.exists(path):
    raise FileNotFoundError(f"config file {path!r} does not exist")
  spec = importlib.util.spec_from_file_location("_xnn_sweep_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_sweep"):
    raise ValueError(f"{path} defines no get_sweep(arg); a sweep config needs one beside get_config")
  runs = named_runs(module.get_sweep(arg or None))
  from xnn.configs.schema import resolve
  config = resolve(module.get_config(arg or None))
  for name, run in runs:
    for field in run:
      section, known = config, True
      for part in field.split("."):
        if section is config.model.kwargs:
          break
        known = hasattr(section, "keys") and part in section
        if not known:
          break
        section = section[part]
      if not known:
        raise ValueError(f"sweep run {name!r} sets {field!r}, which is not a config field")
  return runs
