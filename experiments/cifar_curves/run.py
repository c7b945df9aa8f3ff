"""Run both recipes' sweeps locally, then draw the curves with their reference lines.

    python experiments/cifar_curves/run.py --quick --workdir runs/curves_quick [--parallel 2]
    python experiments/cifar_curves/run.py --workdir runs/curves            # CIFAR-10, GPU

Each recipe's runs go to WORKDIR/<recipe>/ (``xnn report`` works on either folder);
re-running continues an interrupted sweep (finished runs are skipped).
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from xnn import launchers  # noqa: E402


def main(argv=None) -> int:
  p = launchers.experiment_argparser(__doc__, "digits on a CPU, minutes")
  p.add_argument("--recipes", default="resnets,course", help="comma-separated subset of resnets,course")
  a = p.parse_args(argv)
  mode = ",quick" if a.quick else ",tiny" if a.tiny else ""
  specs = {r: os.path.join(HERE, "config.py") + f":{r}{mode}" for r in a.recipes.split(",")}
  if launchers.run_experiment(specs, a.workdir, parallel=a.parallel):
    return 1
  from plots import main as plots_main  # noqa: E402 (this folder)
  return plots_main([a.workdir])


if __name__ == "__main__":
  sys.path.insert(0, HERE)
  sys.exit(main())
