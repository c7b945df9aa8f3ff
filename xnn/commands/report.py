"""``xnn report DIR``: writes DIR/report.md, DIR/curves.png and DIR/pareto.png and prints the table.

A run whose ``metrics.jsonl``, ``final.json`` or ``config.json`` cannot be read is
left out with one warning naming the file; the rest of the report is written.
"""

from __future__ import annotations

import sys

from xnn.commands import CommandError


def main(argv: list[str]) -> int:
  if argv[:1] in (["-h"], ["--help"]):
    print(__doc__)
    return 0
  if len(argv) != 1:
    raise CommandError(f"expected one sweep folder, got {len(argv)} arguments {argv}; usage: xnn report DIR")
  from xnn.sweeps.report import write_report

  def warn(text: str) -> None:
    print(f"xnn report: warning: {text}", file=sys.stderr)

  try:
    text = write_report(argv[0], warn=warn)
  except FileNotFoundError as e:            # no such folder, or no readable run in it
    raise CommandError(str(e)) from None
  except OSError as e:                      # e.g. a folder that cannot be written
    raise CommandError(f"cannot write the report into {argv[0]!r}: {e.strerror or e}") from None
  print(text)
  return 0
