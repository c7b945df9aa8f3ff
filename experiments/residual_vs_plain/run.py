"""Run the residual-vs-plain sweep locally, then draw Figure 6 and Table 6.

    python experiments/residual_vs_plain/run.py --quick --workdir runs/rvp_quick [--parallel 2]
    python experiments/residual_vs_plain/run.py --workdir runs/rvp          # CIFAR-10, GPU

Re-running continues an interrupted sweep (finished runs are skipped).
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from xnn import launchers  # noqa: E402


def main(argv=None) -> int:
  a = launchers.experiment_argparser(__doc__, "digits on a CPU, minutes").parse_args(argv)
  arg = "quick" if a.quick else "tiny" if a.tiny else "full"
  if launchers.run_experiment({"": os.path.join(HERE, "config.py") + f":{arg}"}, a.workdir, parallel=a.parallel):
    return 1
  from plots import main as plots_main  # noqa: E402 (this folder)
  return plots_main([a.workdir])


if __name__ == "__main__":
  sys.path.insert(0, HERE)
  sys.exit(main())
