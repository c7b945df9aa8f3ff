"""``xnn sweep CONFIG[:ARG] --workdir DIR [--launcher local|slurm|tpu] [--dry-run]`` and ``xnn sweep status DIR``.

Expands the config's ``get_sweep(arg)`` into named runs (DIR/<name>) and launches
them; finished runs are skipped and interrupted ones resume. Arguments after
``--`` are passed to every run (e.g. ``-- --config.train.num_epochs=5``).

  local   N processes at a time on this machine (--parallel N)
  slurm   one job array through submitit (--array-parallelism tasks at once);
          preempted or timed-out runs are requeued and resume
  tpu     Cloud TPU queued resources, one or more slices (--slices N) working
          through the sweep; a supervisor recreates a preempted slice and reruns
          the interrupted run on every worker

--dry-run prints what would be launched (for slurm: the job array's sbatch file)
and what the sweep costs: each run's training MACs (xnn cost --train x steps) and
its device-hours on a roofline preset (--device, default h100), and the totals.

``xnn sweep status DIR [--json]``: one row per run -- pending, running (host, pid,
step, last test accuracy), finished (final test accuracy, wall time) or failed (the
last error line of its log), whatever launched it. (A config file named ``status``
is given as ``./status``.)
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from xnn.commands import ArgumentParser, CommandError, positive_int
from xnn.configs import config_path
from xnn.sweeps import launchers, load_sweep


def _non_negative_int(text: str) -> int:
  try:
    n = int(text)
  except ValueError:
    n = -1
  if n < 0:
    raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected an integer >= 0")
  return n


def add_slurm_arguments(p: argparse.ArgumentParser) -> None:
  """The ``--launcher slurm`` options (``xnn sweep`` and ``xnn search``)."""
  s = p.add_argument_group("slurm (through submitit)")
  s.add_argument("--partition", default="")
  s.add_argument("--account", default="")
  s.add_argument("--time", default="24:00:00", help="time limit of each run's job or array task (Slurm's formats)")
  s.add_argument("--nodes", type=positive_int, default=1, help="nodes per run (one jax.distributed process each)")
  s.add_argument("--gpus-per-node", type=_non_negative_int, default=8)
  s.add_argument("--cpus-per-task", type=positive_int, default=16)
  s.add_argument("--mem", default="", help="memory per node, e.g. 64G (default: the partition's)")
  s.add_argument("--signal-delay", type=positive_int, default=120,
                 help="seconds before the time limit at which Slurm sends USR2 (the run checkpoints and requeues)")
  s.add_argument("--array-parallelism", type=positive_int, default=16, help="array tasks running at once")
  s.add_argument("--max-requeues", type=_non_negative_int, default=10, help="time-outs requeued per run")
  s.add_argument("--setup", action="append", default=None,
                 help="shell line run before training (repeatable; default: source .venv/bin/activate)")
  s.add_argument("--slurm-executor", choices=("slurm", "local"), default="slurm",
                 help="local: submitit's local executor runs the array's tasks on this machine")


def slurm_options(a):
  """``SlurmOptions`` from the parsed ``add_slurm_arguments`` options."""
  from xnn.sweeps import slurm
  return slurm.SlurmOptions(partition=a.partition, account=a.account, time=a.time, nodes=a.nodes,
                            gpus_per_node=a.gpus_per_node, cpus_per_task=a.cpus_per_task, mem=a.mem,
                            signal_delay_s=a.signal_delay, array_parallelism=a.array_parallelism,
                            max_requeues=a.max_requeues, executor=a.slurm_executor,
                            setup=tuple(a.setup) if a.setup is not None else slurm.SlurmOptions.setup)


def parser() -> argparse.ArgumentParser:
  p = ArgumentParser(prog="xnn sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("config", help="config file defining get_config(arg) and get_sweep(arg), FILE[:ARG]")
  p.add_argument("--workdir", required=True, help="sweep folder; each run gets DIR/<run name>")
  p.add_argument("--launcher", choices=("local", "tpu", "slurm"), default="local")
  p.add_argument("--dry-run", action="store_true", help="print what would run and what it costs, run nothing")
  p.add_argument("--device", default="h100",
                 help="--dry-run: roofline preset for the device-hours (h100, h200, tpu-v4, tpu-v5e, measure)")
  p.add_argument("--parallel", type=positive_int, default=1, help="local: runs at a time (GPUs are split between them)")
  add_slurm_arguments(p)
  t = p.add_argument_group("tpu (queued resources)")
  t.add_argument("--tpu-name", help="queued resource / node name prefix: slices are NAME-0, NAME-1, ...")
  t.add_argument("--zone")
  t.add_argument("--project", default="")
  t.add_argument("--accelerator-type", default="v5litepod-16")
  t.add_argument("--runtime-version", default="v2-alpha-tpuv5-lite")
  t.add_argument("--slices", type=positive_int, default=1, help="slices working through the sweep in parallel")
  t.add_argument("--spot", action="store_true", help="spot capacity (cheaper, preemptible)")
  t.add_argument("--best-effort", action="store_true", help="best-effort capacity (preemptible)")
  t.add_argument("--install", default=None, help="shell line run in the code's copy on every worker")
  t.add_argument("--max-restarts", type=_non_negative_int, default=3,
                 help="reruns of a run after worker failures (preemptions do not count)")
  t.add_argument("--keep-slices", action="store_true", help="leave the slices running when the sweep is done")
  t.add_argument("--poll-seconds", type=float, default=30.0, help="how often a slice's state is asked for")
  return p


def status_parser() -> argparse.ArgumentParser:
  p = ArgumentParser(prog="xnn sweep status", description="Where every run of a sweep stands.")
  p.add_argument("workdir", help="the sweep folder (xnn sweep's --workdir)")
  p.add_argument("--json", action="store_true", help="print JSON instead of the table")
  return p


def main(argv: list[str]) -> int:
  if argv[:1] == ["status"]:
    return status(argv[1:])
  extra: list[str] = []
  if "--" in argv:        # overrides for every run follow a lone --
    i = argv.index("--")
    argv, extra = argv[:i], argv[i + 1:]
  a = parser().parse_args(argv)
  a.config = config_path(a.config)
  launch = {"local": _local, "slurm": _slurm, "tpu": _tpu}[a.launcher]
  launch(a, [], extra, check_only=True)      # option errors before the config is even loaded
  if a.dry_run:
    from xnn.cost import get_device
    device = get_device(a.device)            # ValueError naming the presets
  specs = launchers.run_specs(_load(a.config), a.workdir)
  print(f"{len(specs)} runs in {a.workdir} ({sum(s.finished for s in specs)} finished)")
  if a.dry_run:
    from xnn.sweeps import budget
    launch(a, specs, extra)
    budget.render(budget.sweep_costs(a.config, specs, device, extra), device)
    return 0
  launchers.record_sweep(a.workdir, a.config, specs, a.launcher, extra)
  return launch(a, specs, extra)


def status(argv: list[str]) -> int:
  from xnn.sweeps import status as st
  a = status_parser().parse_args(argv)
  rows = st.sweep_status(a.workdir)
  if a.json:
    print(st.to_json(rows))
  else:
    st.render(rows, a.workdir)
  return 0


def _local(a, specs, extra, check_only=False) -> int:
  if check_only:
    return 0
  try:
    status = launchers.launch_local(specs, a.config, parallel=a.parallel, extra=extra, dry_run=a.dry_run)
  except KeyboardInterrupt as e:
    print(f"xnn sweep: {e}", file=sys.stderr)
    return 130
  if a.dry_run:
    return 0
  _summary(specs, status)
  return 0 if all(v.startswith(("done", "dry-run")) for v in status.values()) else 1


def _slurm(a, specs, extra, check_only=False) -> int:
  from xnn.sweeps import slurm
  opt = slurm_options(a)
  slurm.check_options(opt)
  if check_only:
    return 0
  name = os.path.basename(os.path.normpath(a.workdir))
  if a.dry_run:
    slurm.dry_run(a.workdir, specs, a.config, opt, extra=extra, name=name)
    return 0
  submitted = slurm.submit(a.workdir, specs, a.config, opt, extra=extra, name=name)
  for run, job in submitted:
    print(f"{run.name}: submitted as job {job.job_id}")
  if not submitted:
    print("every run is finished: nothing to submit")
  print(f"follow it with: xnn sweep status {shlex.quote(a.workdir)}")
  return 0


def _tpu(a, specs, extra, check_only=False) -> int:
  from xnn.sweeps import tpu
  if not a.tpu_name or not a.zone:
    raise CommandError(f"--launcher tpu needs --tpu-name and --zone (got --tpu-name={a.tpu_name!r}, "
                       f"--zone={a.zone!r})")
  if a.spot and a.best_effort:
    raise CommandError("--spot and --best-effort exclude each other: choose one capacity")
  if not a.poll_seconds > 0:
    raise CommandError(f"--poll-seconds {a.poll_seconds}: expected a positive number of seconds")
  opt = tpu.TpuOptions(name=a.tpu_name, zone=a.zone, project=a.project, accelerator_type=a.accelerator_type,
                       runtime_version=a.runtime_version, slices=a.slices, spot=a.spot, best_effort=a.best_effort,
                       max_restarts=a.max_restarts, keep=a.keep_slices, poll_s=a.poll_seconds,
                       install=a.install if a.install is not None else tpu.TpuOptions.install)
  if check_only:
    return 0
  if a.dry_run:
    for cmd in tpu.plan(specs, a.config, opt, extra):
      print(cmd)
    return 0
  status = tpu.Supervisor(specs, a.config, opt, extra, log_dir=tpu.log_dir(a.workdir)).run()
  _summary(specs, status)
  return 0 if all(v.startswith("done") for v in status.values()) else 1


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
