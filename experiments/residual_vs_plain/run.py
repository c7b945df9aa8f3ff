"""Run the residual-vs-plain sweep locally, then draw Figure 6 and Table 6.

    python experiments/residual_vs_plain/run.py --quick --workdir runs/rvp_quick [--parallel 2]
    python experiments/residual_vs_plain/run.py --workdir runs/rvp          # CIFAR-10, GPU

Re-running continues an interrupted sweep (finished runs are skipped).
"""

from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from xnn import launchers  # noqa: E402
from xnn.report import write_report  # noqa: E402
from xnn.sweep import load_sweep  # noqa: E402


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--quick", action="store_true", help="digits on a CPU, minutes")
  p.add_argument("--workdir", required=True)
  p.add_argument("--parallel", type=int, default=1)
  a = p.parse_args(argv)
  config = os.path.join(HERE, "config.py") + (":quick" if a.quick else ":full")
  specs = launchers.run_specs(load_sweep(config), a.workdir)
  status = launchers.launch_local(specs, config, parallel=a.parallel)
  failed = {k: v for k, v in status.items() if not v.startswith("done")}
  if failed:
    print(f"runs not finished: {failed}", file=sys.stderr)
    return 1
  write_report(a.workdir)
  from plots import main as plots_main  # noqa: E402 (this folder)
  return plots_main([a.workdir])


if __name__ == "__main__":
  sys.path.insert(0, HERE)
  sys.exit(main())
