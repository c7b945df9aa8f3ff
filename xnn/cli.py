"""The ``xnn`` command: ``xnn <command> [args]``.

Commands:
  train    train a registered model from an ml-collections config (default: LeNet-5 on the digits)
  models   list registered models with family, input, parameters (and MACs)
  cost     per-layer MACs, parameters, memory and receptive field of a model
  sweep    run a config's sweep (local processes, Cloud TPU slice, Slurm)
  report   markdown table and plots (curves, accuracy vs parameters/MACs) of a sweep

Bad input (an unknown model, a malformed value, a missing folder) is reported as one
line, ``xnn <command>: error: <message>``, with exit status 2 for a usage error and
1 otherwise; ``XNN_TRACEBACK=1`` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import os
import sys

from xnn.commands import CommandError

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
  lines += ["", "Run 'xnn <command> --help' for a command's options.",
            "Errors are one line; XNN_TRACEBACK=1 shows the traceback instead."]
  return "\n".join(lines)


def error_message(e: BaseException) -> tuple[str, int]:
  """(one-line message, exit status) for an exception that reports bad input."""
  if isinstance(e, CommandError):
    text, code = str(e), e.exit_code
  elif isinstance(e, FileNotFoundError):
    text = f"{e.strerror}: {e.filename}" if e.filename and e.strerror else str(e)
    code = 1
  elif isinstance(e, KeyError):   # KeyError's str() quotes its message (see xnn.registry.UnknownNameError)
    text = str(e.args[0]) if len(e.args) == 1 else str(e)
    code = 2
  else:
    text, code = str(e) or type(e).__name__, 2
  return " ".join(line.strip() for line in text.splitlines() if line.strip()), code


def run(name: str, argv: list[str]) -> int:
  """Runs command `name`; expected errors become one line on stderr and a non-zero status."""
  module = importlib.import_module(COMMANDS[name][0])
  try:
    return int(module.main(argv) or 0)
  except (CommandError, FileNotFoundError, KeyError, ValueError) as e:
    if os.environ.get("XNN_TRACEBACK"):
      raise
    text, code = error_message(e)
    print(f"xnn {name}: error: {text}", file=sys.stderr)
    return code
  except BrokenPipeError:        # the reader went away (`xnn models | head`): stop quietly
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 141
  except KeyboardInterrupt:
    if os.environ.get("XNN_TRACEBACK"):
      raise
    print(f"xnn {name}: interrupted", file=sys.stderr)
    return 130


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] in ("-h", "--help", "help"):
    print(usage())
    return 0
  name, rest = argv[0], argv[1:]
  if name not in COMMANDS:
    print(f"xnn: error: unknown command {name!r}; expected one of {', '.join(COMMANDS)}\n\n{usage()}",
          file=sys.stderr)
    return 2
  return run(name, rest)


if __name__ == "__main__":
  sys.exit(main())
