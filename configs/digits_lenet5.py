"""LeNet-5 on the bundled UCI digits (the embedded default, as a file to copy).

Command:   xnn train --config configs/digits_lenet5.py --workdir runs/digits_lenet5
Runtime:   about 15-20 s on a 2-core CPU (20 epochs of 22 steps, compilation included).
Expected:  test accuracy about 0.98 (>= 0.97); see the README results table.
"""

from xnn.configs.default import get_config as _default


def get_config(arg=None):
  del arg
  return _default()
