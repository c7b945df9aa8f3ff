"""``xnn report DIR``: writes DIR/report.md, DIR/curves.png and DIR/pareto.png and prints the table."""

from __future__ import annotations

from xnn.commands import CommandError


def main(argv: list[str]) -> int:
  if argv[:1] in (["-h"], ["--help"]):
    print(__doc__)
    return 0
  if len(argv) != 1:
    raise CommandError(f"expected one sweep folder, got {len(argv)} arguments {argv}; usage: xnn report DIR")
  from xnn.sweeps.report import write_report
  try:
    print(write_report(argv[0]))
  except FileNotFoundError as e:
    raise CommandError(str(e), exit_code=1) from None
  return 0
