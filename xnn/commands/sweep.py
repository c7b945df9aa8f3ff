"""``xnn sweep CONFIG[:ARG] --workdir DIR --launcher local|tpu|slurm [--dry-run] [--parallel N]``.

Expands the config's ``get_sweep(arg)`` into named runs (DIR/<name>) and launches
them; finished runs are skipped and interrupted ones resume. Arguments after
``--`` are passed to every run (e.g. ``-- --config.train.num_epochs=5``).
"""

from __future__ import annotations

import argparse
import shlex
import sys

from xnn.commands import ArgumentParser, CommandError, positive_int
from xnn.configs import config_path
from xnn.sweeps import launchers, load_sweep


def parser() -> argparse.ArgumentParser:
  p = ArgumentParser(prog="xnn sweep", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("config", help="config file defining get_config(arg) and get_sweep(arg), FILE[:ARG]")
  p.add_argument("--workdir", required=True, help="sweep folder; each run gets DIR/<run name>")
  p.add_argument("--launcher", choices=("local", "tpu", "slurm"), default="local")
  p.add_argument("--dry-run", action="store_true", help="print what would run, run nothing")
  p.add_argument("--parallel", type=positive_int, default=1, help="local: runs at a time (GPUs are split between them)")
  t = p.add_argument_group("tpu")
  t.add_argument("--tpu-name")
  t.add_argument("--zone")
  t.add_argument("--project", default="")
  t.add_argument("--accelerator-type", default="v5litepod-16")
  t.add_argument("--runtime-version", default="v2-alpha-tpuv5-lite")
  t.add_argument("--create", action="store_true", help="create the TPU slice first")
  s = p.add_argument_group("slurm")
  s.add_argument("--nodes", type=positive_int, default=1)
  s.add_argument("--gpus-per-node", type=positive_int, default=8)
  s.add_argument("--partition", default="")
  s.add_argument("--time", default="24:00:00")
  s.add_argument("--setup", default="source .venv/bin/activate", help="shell line run before training")
  return p


def main(argv: list[str]) -> int:
  extra: list[str] = []
  if "--" in argv:        # overrides for every run follow a lone --
    i = argv.index("--")
    argv, extra = argv[:i], argv[i + 1:]
  a = parser().parse_args(argv)
  a.config = config_path(a.config)
  specs = launchers.run_specs(_load(a.config), a.workdir)
  print(f"{len(specs)} runs in {a.workdir} ({sum(s.finished for s in specs)} finished)")
  if a.launcher == "local":
    try:
      status = launchers.launch_local(specs, a.config, parallel=a.parallel, extra=extra, dry_run=a.dry_run)
    except KeyboardInterrupt as e:
      print(f"xnn sweep: {e}", file=sys.stderr)
      return 130
    _summary(specs, status)
    return 0 if all(v.startswith(("done", "dry-run")) for v in status.values()) else 1
  if a.launcher == "tpu":
    if not a.tpu_name or not a.zone:
      raise CommandError(f"--launcher tpu needs --tpu-name and --zone (got --tpu-name={a.tpu_name!r}, "
                         f"--zone={a.zone!r})")
    opt = launchers.TpuOptions(a.tpu_name, a.zone, a.accelerator_type, a.runtime_version, a.project, a.create)
    for cmd in launchers.tpu_commands(specs, a.config, opt, extra):
      print(shlex.join(cmd), flush=True)
      if not a.dry_run:
        import subprocess
        subprocess.run(cmd, check=True)
    return 0
  opt = launchers.SlurmOptions(a.nodes, a.gpus_per_node, a.partition, a.time, setup=a.setup)
  launchers.launch_slurm(specs, a.config, opt, extra=extra, dry_run=a.dry_run)
  return 0


def _load(spec: str):
  """The sweep's named runs; a config that does not load is one ``ConfigError`` naming the file."""
  from xnn.configs import ConfigError, describe_error, load_config
  load_config(spec)          # the file, its import and get_config(arg), each with its own error
  path = spec.partition(":")[0]
  try:
    return load_sweep(spec)
  except (ConfigError, OSError):
    raise
  except ValueError as e:  # a bad sweep, named by load_sweep or the user's get_sweep
    raise ConfigError(f"config {path!r}: {e}") from e
  except Exception as e:  # an error in the user's get_sweep
    raise ConfigError(f"config {path!r}: get_sweep failed: {describe_error(e)}",
                      hint="--debug shows the traceback") from e


def _summary(specs, status) -> None:
  from rich.console import Console
  from rich.table import Table
  table = Table(title="sweep")
  for col in ("run", "status", "test accuracy", "wall time (s)"):
    table.add_column(col)
  for s in specs:
    f = s.final() or {}
    acc = f.get("test_accuracy")
    table.add_row(s.name, status.get(s.name, "?"), "" if acc is None else f"{acc:.4f}",
                  "" if "wall_time_s" not in f else f"{f['wall_time_s']:.1f}")
  Console().print(table)
