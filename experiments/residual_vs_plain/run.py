"""Run the residual-vs-plain sweep locally, then draw Figure 6 and Table 6.

    python experiments/residual_vs_plain/run.py --quick --workdir runs/rvp_quick [--parallel 2]
    python experiments/residual_vs_plain/run.py --workdir runs/rvp          # CIFAR-10, GPU

Re-running continues an interrupted sweep (finished runs are skipped).
"""

from __future__ import annotations

import os
import sys

from xnn.sweeps import experiments

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None) -> int:
  a = experiments.argparser(__doc__, "digits on a CPU, minutes").parse_args(argv)
  arg = "quick" if a.quick else "tiny" if a.tiny else "full"
  if experiments.run_sweeps({"": os.path.join(HERE, "config.py") + f":{arg}"}, a.workdir, parallel=a.parallel):
    return 1
  return experiments.sibling(__file__, "plots").main([a.workdir])


if __name__ == "__main__":
  sys.exit(main())
