"""``xnn search CONFIG[:ARG] --workdir DIR [--trials N] [--parallel N] [--launcher local|slurm] [--dry-run]``.

Searches the config's ``get_search_space(arg)`` with Optuna: each trial's candidate
is costed on abstract shapes first (a candidate over the space's constraints is
never trained), then trained as a normal run in ``DIR/candidates/<name>`` by a sweep
launcher (``local``: ``--parallel`` processes here; ``slurm``: one submitit job per
candidate, ``--parallel`` in flight), its evaluations reported epoch by epoch to the
pruner. The study is kept in ``DIR/study.db`` (``--storage journal``:
``DIR/study.journal``, for several hosts sharing a filesystem). After every trial:
``DIR/candidates.md`` (and ``.json``), ``DIR/pareto.png`` and ``DIR/best.py``
(``xnn train --config DIR/best.py`` trains the best candidate).

Stopping it (Ctrl-C, SIGTERM) checkpoints the running candidates; the same command
continues the search, resuming them; no candidate is trained twice. Arguments after
``--`` are passed to every candidate's ``xnn train`` (e.g. ``-- --config.train.num_epochs=5``).

--dry-run samples --trials candidates at random and prints what each costs and which
limits it exceeds; it trains and writes nothing. --launcher tpu is not offered: a
TPU slice runs the search itself (``xnn search`` on the TPU VM, local launcher).
"""

from __future__ import annotations

import argparse

from xnn.commands import ArgumentParser, CommandError, positive_int
from xnn.commands.sweep import add_slurm_arguments, slurm_options
from xnn.configs import config_path


def parser() -> argparse.ArgumentParser:
  from xnn.search.space import PRUNERS, SAMPLERS
  p = ArgumentParser(prog="xnn search", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("config", help="config file defining get_config(arg) and get_search_space(arg), FILE[:ARG]")
  p.add_argument("--workdir", required=True, help="search folder: the study, the candidates' runs, the outputs")
  p.add_argument("--trials", type=positive_int, help="trials within the budget (default: the space's)")
  p.add_argument("--parallel", type=positive_int, help="candidates training at once (default: the space's)")
  p.add_argument("--sampler", choices=SAMPLERS, help="Optuna sampler (default: the space's)")
  p.add_argument("--pruner", choices=PRUNERS, help="Optuna pruner (default: the space's)")
  p.add_argument("--seed", type=int, help="the sampler's seed (default: the space's)")
  p.add_argument("--storage", default="sqlite",
                 help="sqlite (DIR/study.db), journal (DIR/study.journal: hosts sharing a filesystem) or a URL")
  p.add_argument("--launcher", choices=("local", "slurm"), default="local")
  p.add_argument("--dry-run", action="store_true", help="cost --trials random candidates; train and write nothing")
  add_slurm_arguments(p)
  return p


def main(argv: list[str]) -> int:
  extra: list[str] = []
  if "--" in argv:
    i = argv.index("--")
    argv, extra = argv[:i], argv[i + 1:]
  a = parser().parse_args(argv)
  if "://" in a.workdir:
    raise CommandError(f"--workdir {a.workdir}: xnn search keeps its study and candidates in a local (or shared) "
                       "folder, not a URL")
  opt = slurm_options(a) if a.launcher == "slurm" else None
  if opt is not None:
    from xnn.sweeps import slurm
    slurm.check_options(opt)
  a.config = config_path(a.config)
  from xnn.configs import load_config
  from xnn.search import load_search_space
  from xnn.search.study import storage
  load_config(a.config)                      # the file, its import and get_config(arg), each with its own error
  space = load_search_space(a.config)
  for field in ("trials", "parallel", "sampler", "pruner", "seed"):
    if getattr(a, field) is not None:
      setattr(space, field, getattr(a, field))
  try:
    space.check()
  except ValueError as e:
    raise CommandError(f"the options contradict the search space: {e}") from None
  if a.dry_run:
    return _dry_run(a, space, extra)
  if a.storage not in ("sqlite", "journal") and "://" not in a.storage:
    storage(a.storage, a.workdir)          # the one-line error naming the value
  from xnn.search.loop import Search
  from xnn.sweeps.launchers import LocalRuns
  runs = LocalRuns(a.config, extra, space.parallel) if opt is None else _slurm_runs(a, opt, extra, space.parallel)
  search = Search(a.config, a.workdir, space, runs, extra=extra, storage=a.storage)
  print(f"searching {a.config} in {a.workdir}: {space.trials} trials, {space.sampler} sampler, {space.pruner} "
        f"pruner, {space.parallel} at a time ({a.launcher}); study: {a.storage}")
  try:
    search.run()
  except KeyboardInterrupt as e:
    print(f"xnn search: {e}", flush=True)
    return 130
  print(f"outputs in {a.workdir}: candidates.md, pareto.png, best.py (xnn train --config {a.workdir}/best.py)")
  return 0


def _slurm_runs(a, opt, extra, parallel):
  import os
  from xnn.sweeps.slurm import SlurmRuns
  return SlurmRuns(a.workdir, a.config, opt, extra, parallel, name=os.path.basename(os.path.normpath(a.workdir)))


def _dry_run(a, space, extra) -> int:
  from rich.console import Console
  from rich.table import Table

  from xnn.cost.render import binary, magnitude
  from xnn.search.loop import dry_run
  rows = dry_run(a.config, space, space.trials, extra)
  table = Table(title=f"{len(rows)} candidates sampled at random: their cost before training "
                f"(limits: {', '.join(f'{k}={v:g}' for k, v in space.constraints.limits.items()) or 'none'})")
  for col in ("candidate", "MACs", "params", "peak train memory", "RF / input", "over the budget"):
    table.add_column(col, overflow="fold")
  for r in rows:
    c = r.get("cost")
    if c is None:
      table.add_row(r["candidate"], "", "", "", "", f"does not build: {r['invalid']}")
      continue
    table.add_row(r["candidate"], magnitude(c["macs"]), f"{c['params']:,}", binary(c["peak_train_bytes"]),
                  f"{c['rf_ratio']:.2f}", "; ".join(r["over_budget"]) or "no")
  Console(width=160).print(table)
  inside = sum(1 for r in rows if r.get("cost") and not r["over_budget"])
  print(f"{inside} of {len(rows)} within the budget")
  return 0
