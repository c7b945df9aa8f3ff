"""The ``xnn`` subcommands: each module has ``main(argv) -> int`` (see xnn/cli.py).

A command reports bad input by raising ``CommandError`` (or ``ValueError``,
``KeyError``, ``FileNotFoundError``); ``xnn.cli.main`` prints it as one line,
``xnn <command>: error: <message>``, and exits non-zero, without a traceback.
"""

from __future__ import annotations


class CommandError(Exception):
  """Bad input to a command: `message` names the value and what was expected.

  `exit_code` is 2 for a usage error (a wrong argument), 1 for anything else
  (e.g. a folder without the expected files).
  """

  def __init__(self, message: str, exit_code: int = 2):
    super().__init__(message)
    self.exit_code = exit_code
