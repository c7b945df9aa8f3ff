"""The ``xnn`` command: ``xnn <command> [args]``.

Commands:
  train    train a registered model from an ml-collections config (default: LeNet-5 on the digits)
  eval     evaluate a run's newest verified checkpoint (or --step N): top-1/top-5, per class, confusion
  inspect  look inside a trained run: feature maps, filters, saliency, feature visualisation, effective
           receptive field over training, linear probes, attention
  models   list registered models with family, input, parameters (and MACs)
  cost     per-layer MACs, parameters, memory and receptive field of a model
  sweep    run a config's sweep (local processes, Slurm, Cloud TPU); `xnn sweep status DIR`: where it stands
  search   search a config's space of networks under a cost budget (Optuna; local processes, Slurm)
  report   markdown table and plots (curves, accuracy vs parameters/MACs) of a sweep

Bad input (an unknown model, a malformed value, a missing file or folder, a config
that does not load) is reported as one line, ``xnn <command>: error: <message>``
(at most one hint line follows), with exit status 2; a run that failed while
running (a NaN loss) exits with status 1. ``--debug`` anywhere before a lone
``--`` (or ``XNN_TRACEBACK=1`` in the environment) shows the traceback instead.
"""

from __future__ import annotations

import importlib
import os
import sys

from xnn.commands import CommandError

COMMANDS = {
    "train": ("xnn.commands.train", "train a model from a config (default: LeNet-5 on the digits)"),
    "eval": ("xnn.commands.eval", "evaluate a run's checkpoint: top-1/top-5, per class, confusion matrix"),
    "inspect": ("xnn.commands.inspect", "look inside a trained run: feature maps, saliency, ERF, probes, ..."),
    "models": ("xnn.commands.models", "list the registered models"),
    "cost": ("xnn.commands.cost", "MACs, parameters, memory and receptive field of a model"),
    "sweep": ("xnn.commands.sweep", "run a config's sweep (local, Slurm, TPU); 'xnn sweep status DIR'"),
    "search": ("xnn.commands.search", "search a config's space of networks under a cost budget"),
    "report": ("xnn.commands.report", "tables and plots of a sweep's runs"),
}


DEBUG_FLAG = "--debug"
# Bad input: exit status 2. A FloatingPointError is a run that failed while running (a NaN loss): 1.
USER_ERRORS = (CommandError, ValueError, KeyError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
               PermissionError, FloatingPointError)


def usage() -> str:
  lines = ["usage: xnn <command> [options] [--debug]", "", "commands:"]
  lines += [f"  {name:<8} {help_}" for name, (_, help_) in COMMANDS.items()]
  lines += ["", "Run 'xnn <command> --help' for a command's options.",
            "Errors are one line; --debug (or XNN_TRACEBACK=1) shows the traceback instead."]
  return "\n".join(lines)


def split_debug(argv: list[str]) -> tuple[bool, list[str]]:
  """(whether ``--debug`` was given, argv without it); arguments after a lone ``--`` are left alone."""
  end = argv.index("--") if "--" in argv else len(argv)
  head = [a for a in argv[:end] if a != DEBUG_FLAG]
  return len(head) < end, head + argv[end:]


def is_user_error(e: BaseException) -> bool:
  """Whether `e` reports bad input or a failed run (one line), rather than a bug (a traceback)."""
  return isinstance(e, USER_ERRORS) or isinstance(getattr(e, "exit_code", None), int)


def error_message(e: BaseException) -> tuple[str, int]:
  """(one-line message, exit status) for an exception that reports bad input or a failed run."""
  if isinstance(e, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)):
    text = f"{e.strerror}: {e.filename}" if e.filename and e.strerror else str(e)
  elif isinstance(e, KeyError):   # KeyError's str() quotes its message (see xnn.registry.UnknownNameError)
    text = str(e.args[0]) if len(e.args) == 1 else str(e)
  else:
    text = str(e) or type(e).__name__
  code = getattr(e, "exit_code", None)
  if not isinstance(code, int):
    code = 1 if isinstance(e, FloatingPointError) else 2
  return " ".join(line.strip() for line in text.splitlines() if line.strip()), code


def _hint(e: BaseException) -> str | None:
  hint = getattr(e, "hint", None)
  return " ".join(hint.split()) if isinstance(hint, str) and hint.strip() else None


def run(name: str, argv: list[str]) -> int:
  """Runs command `name`; bad input becomes one line on stderr and a non-zero status.

  ``--debug`` in `argv` (or ``XNN_TRACEBACK=1``) re-raises instead, so the traceback shows.
  """
  debug, argv = split_debug(list(argv))
  debug = debug or bool(os.environ.get("XNN_TRACEBACK"))
  module = importlib.import_module(COMMANDS[name][0])
  try:
    return int(module.main(argv) or 0)
  except SystemExit as e:        # argparse: --help (0) or a usage error already printed as one line (2)
    if e.code is None or isinstance(e.code, int):
      return int(e.code or 0)
    print(f"xnn {name}: error: {e.code}", file=sys.stderr)
    return 2
  except BrokenPipeError:        # the reader went away (`xnn models | head`): stop quietly
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 141
  except KeyboardInterrupt:
    if debug:
      raise
    print(f"xnn {name}: interrupted", file=sys.stderr)
    return 130
  except Exception as e:  # anything else is a bug and keeps its traceback
    if debug or not is_user_error(e):
      raise
    text, code = error_message(e)
    print(f"xnn {name}: error: {text}", file=sys.stderr)
    hint = _hint(e)
    if hint:
      print(f"xnn {name}: hint: {hint}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  debug = bool(argv) and argv[0] == DEBUG_FLAG          # `xnn --debug CMD ...`
  if debug:
    argv = argv[1:]
  if not argv or argv[0] in ("-h", "--help", "help"):
    print(usage())
    return 0
  name, rest = argv[0], argv[1:]
  if name not in COMMANDS:
    print(f"xnn: error: unknown command {name!r}; expected one of {', '.join(COMMANDS)} (see 'xnn --help')",
          file=sys.stderr)
    return 2
  return run(name, [DEBUG_FLAG, *rest] if debug else rest)


if __name__ == "__main__":
  sys.exit(main())
