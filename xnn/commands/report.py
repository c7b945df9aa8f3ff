"""``xnn report DIR``: writes DIR/report.md, DIR/curves.png and DIR/pareto.png and prints the table."""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
  if len(argv) != 1 or argv[0] in ("-h", "--help"):
    print(__doc__)
    return 0 if argv[:1] in (["-h"], ["--help"]) else 2
  from xnn.report import write_report
  try:
    print(write_report(argv[0]))
  except FileNotFoundError as e:
    print(f"xnn report: {e}", file=sys.stderr)
    return 1
  return 0
