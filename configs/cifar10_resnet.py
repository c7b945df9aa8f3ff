"""He et al. 2015 (sec. 4.2) CIFAR-10 recipe; the argument is the network.

Command:   xnn train --config configs/cifar10_resnet.py:resnet20 --workdir runs/resnet20
           (any of resnet20/32/44/56/110/1202, plain20/32/44/56/110)
Recipe:    batch 128, SGD momentum 0.9, weight decay 1e-4, lr 0.1 divided by 10 at
           32k and 48k iterations, stop at 64k; 4-pixel zero padding, random 32x32
           crop and horizontal flip; per-channel normalisation (the paper subtracts
           the per-pixel mean; see experiments/ for the exact variant).
Runtime:   64k steps x 128 images: ~12 min for ResNet-20 at the 11.7k images/s measured on an
           H100 (benchmarks/RESULTS.md; a full run was not timed); do not run this
           on a CPU (use the digits configs there).
Expected:  ResNet-20 8.75% test error, ResNet-32 7.51%, ResNet-44 7.17%,
           ResNet-56 6.97%, ResNet-110 6.43% (paper, Table 6).
Needs:     CIFAR-10 downloaded by TFDS (network), or the original
           cifar-10-binary.tar.gz in --config.data.manual_dir.
"""

from xnn.configs.default import cifar10_pad_crop_flip
from xnn.configs.default import get_config as _default


def get_config(arg: str | None = None):
  c = _default()
  c.model.name = arg or "resnet20"
  cifar10_pad_crop_flip(c)
  c.train.batch_size = 128
  c.train.num_steps = 64_000
  c.train.eval_every_epochs = 1
  c.train.log_every_steps = 50
  c.optimizer.name = "sgd"
  c.optimizer.learning_rate = 0.1
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 1e-4
  c.schedule.name = "piecewise"
  c.schedule.boundaries = "32000,48000"
  c.schedule.scale = 0.1
  return c
