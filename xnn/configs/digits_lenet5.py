"""LeNet-5 on the bundled UCI digits (the embedded default, as a file to copy).

Command:   xnn train --config xnn/configs/digits_lenet5.py --workdir runs/digits_lenet5
Runtime:   20 epochs of 22 steps on a 2-core CPU; see the README results table.
Expected:  test accuracy about 0.98 (>= 0.97); the README results table has the measured figure.
"""

from xnn.configs.default import get_config as _default


def get_config(arg=None):
  del arg
  return _default()
