"""The ``xnn`` subcommands: each module has ``main(argv) -> int`` (see xnn/cli.py).

A command reports bad input by raising ``CommandError`` (or ``ValueError``,
``KeyError``, ``FileNotFoundError``, ...); ``xnn.cli.run`` prints it as one line,
``xnn <command>: error: <message>``, and returns its exit status, without a
traceback. Any exception with an integer ``exit_code`` attribute is reported the
same way with that status (e.g. 1 for a run that failed while running), and an
optional ``hint`` attribute adds one line after it.
"""

from __future__ import annotations

import argparse


class CommandError(Exception):
  """Bad input to a command: `message` names the value and what was expected.

  `exit_code` is 2 for bad input (a wrong argument, a missing or unreadable file or
  folder), 1 for a run that failed while running. `hint`, when given, is printed on
  a second line.
  """

  def __init__(self, message: str, exit_code: int = 2, hint: str | None = None):
    super().__init__(message)
    self.exit_code = exit_code
    self.hint = hint


class ArgumentParser(argparse.ArgumentParser):
  """argparse whose usage errors are the one line ``PROG: error: MESSAGE (see 'PROG --help')``, status 2."""

  def error(self, message: str):
    self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see '{self.prog} --help')\n")


def positive_int(text: str) -> int:
  """An argparse ``type``: an integer >= 1."""
  try:
    n = int(text)
  except ValueError:
    n = 0
  if n <= 0:
    raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected a positive integer")
  return n
