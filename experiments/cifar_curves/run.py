"""Run both recipes' sweeps locally, then draw the curves with their reference lines.

    python experiments/cifar_curves/run.py --quick --workdir runs/curves_quick [--parallel 2]
    python experiments/cifar_curves/run.py --workdir runs/curves            # CIFAR-10, GPU

Each recipe's runs go to WORKDIR/<recipe>/ (``xnn report`` works on either folder);
re-running continues an interrupted sweep (finished runs are skipped).
"""

from __future__ import annotations

import os
import sys

from xnn.sweeps import experiments

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None) -> int:
  p = experiments.argparser(__doc__, "digits on a CPU, minutes")
  p.add_argument("--recipes", default="resnets,course", help="comma-separated subset of resnets,course")
  a = p.parse_args(argv)
  mode = ",quick" if a.quick else ",tiny" if a.tiny else ""
  specs = {r: os.path.join(HERE, "config.py") + f":{r}{mode}" for r in a.recipes.split(",")}
  if experiments.run_sweeps(specs, a.workdir, parallel=a.parallel):
    return 1
  return experiments.sibling(__file__, "plots").main([a.workdir])


if __name__ == "__main__":
  sys.exit(main())
