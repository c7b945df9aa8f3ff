"""He et al. 2015 (sec. 4.2) CIFAR-10 recipe; the argument is the network.

Command:   xnn train --config xnn/configs/cifar10_resnet.py:resnet20 --workdir runs/resnet20
           (any of resnet20/32/44/56/110/1202, plain20/32/44/56/110)
Recipe:    ``common.he2015_cifar10``: batch 128, SGD momentum 0.9, weight decay 1e-4,
           lr 0.1 divided by 10 at 32k and 48k iterations, stop at 64k; 4-pixel zero
           padding, random 32x32 crop and horizontal flip; per-channel normalisation.
Runtime:   64k steps x 128 images; see benchmarks/RESULTS.md for the measured H100 step
           rate (a full run has not been timed). Do not run this on a CPU (use the
           digits configs there).
Expected:  ResNet-20 8.75% test error, ResNet-32 7.51%, ResNet-44 7.17%,
           ResNet-56 6.97%, ResNet-110 6.43% (paper, Table 6).
Needs:     CIFAR-10 downloaded by TFDS (network), or the original
           cifar-10-binary.tar.gz in --config.data.manual_dir.
"""

from xnn.configs import common
from xnn.configs.default import get_config as _default


def get_config(arg: str | None = None):
  arg = common.parse_arg(arg, model="resnet20")
  c = common.he2015_cifar10(_default())
  c.model.name = arg["model"]
  c.train.log_every_steps = 50
  return c
