"""The ``xnn`` command: ``xnn <command> [args]``.

Commands:
  train    train a registered model from an ml-collections config (default: LeNet-5 on the digits)
  models   list registered models with family, input, parameters (and MACs)
  cost     per-layer MACs, parameters, memory and receptive field of a model
  sweep    run a config's sweep (local processes, Cloud TPU slice, Slurm)
  report   markdown table and plots (curves, accuracy vs parameters/MACs) of a sweep
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "train": ("xnn.commands.train", "train a model from a config (default: LeNet-5 on the digits)"),
    "models": ("xnn.commands.models", "list the registered models"),
    "cost": ("xnn.commands.cost", "MACs, parameters, memory and receptive field of a model"),
    "sweep": ("xnn.commands.sweep", "run a config's sweep locally, on a TPU slice or on Slurm"),
    "report": ("xnn.commands.report", "tables and plots of a sweep's runs"),
}


def usage() -> str:
  lines = ["usage: xnn <command> [options]", "", "commands:"]
  lines += [f"  {name:<8} {help_}" for name, (_, help_) in COMMANDS.items()]
  lines += ["", "Run 'xnn <command> --help' for a command's options."]
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] in ("-h", "--help", "help"):
    print(usage())
    return 0
  name, rest = argv[0], argv[1:]
  if name not in COMMANDS:
    print(f"xnn: unknown command {name!r}; expected one of {', '.join(COMMANDS)}\n\n{usage()}", file=sys.stderr)
    return 2
  module = importlib.import_module(COMMANDS[name][0])
  return int(module.main(rest) or 0)


if __name__ == "__main__":
  sys.exit(main())
