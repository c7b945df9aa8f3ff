"""Config pieces shared by the recipes and experiments (big_vision's ``configs/common.py``).

Each function takes a config, changes the fields of one idea and returns it, so a
recipe reads as the default plus a few named changes::

    c = common.he2015_cifar10(default.get_config())
    c.model.name = "resnet56"
"""

from __future__ import annotations

import ml_collections

from xnn.configs.args import parse_arg, parse_value

__all__ = ["parse_arg", "parse_value", "cifar10_native", "cifar10_pad_crop_flip", "he2015_cifar10",
           "course_cifar10", "digits_small", "he2015_digits"]

ConfigDict = ml_collections.ConfigDict

DIGITS_TRAIN_EXAMPLES = 1437   # the bundled digits' training split (xnn/data/builders/digits.py)


def cifar10_native(c: ConfigDict) -> ConfigDict:
  """CIFAR-10 at its native 32x32x3 (no resize, no channel change)."""
  c.data.name = "cifar10"
  c.data.image_size = 0
  c.data.channels = 0
  return c


def cifar10_pad_crop_flip(c: ConfigDict) -> ConfigDict:
  """CIFAR-10 with He et al. 2015's augmentation (sec. 4.2): pad 4, random 32x32 crop, flip.

  Per-channel normalisation (the default).
  """
  cifar10_native(c)
  c.data.augment = "pad_crop_flip"
  c.data.pad = 4
  c.data.flip = True
  return c


def he2015_cifar10(c: ConfigDict) -> ConfigDict:
  """He et al. 2015, sec. 4.2: the CIFAR-10 recipe of the residual and plain networks.

  Batch 128, SGD momentum 0.9, weight decay 1e-4, learning rate 0.1 divided by 10 at
  32k and 48k iterations, stop at 64k; pad-4 crop + flip. (The paper subtracts the
  per-pixel mean; per-channel normalisation differs by a constant shift per pixel,
  which the first BatchNorm absorbs.)
  """
  cifar10_pad_crop_flip(c)
  c.train.batch_size = 128
  c.train.num_steps = 64_000
  c.train.eval_every_epochs = 1.0
  c.optimizer.name = "sgd"
  c.optimizer.learning_rate = 0.1
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 1e-4
  c.schedule.name = "piecewise"
  c.schedule.boundaries = (32_000, 48_000)
  c.schedule.scale = 0.1
  return c


def course_cifar10(c: ConfigDict) -> ConfigDict:
  """The course recipe (the course's design homework, ``xNNs_Code_031_CIFAR_ResNetV2b.py``).

  Random 28x28 crops of the 32x32 images with horizontal flips (centre crop at test),
  (x - 0.5) / 0.5 normalisation, Adam (1e-3 peak, betas 0.9/0.999), batch 32;
  learning rate 1e-5 -> 1e-3 linearly over 5 epochs, then a quarter-period cosine
  back to 1e-5 at the last epoch, held constant within each epoch.
  """
  cifar10_native(c)
  c.data.augment = "random_crop"
  c.data.crop_size = 28
  c.data.flip = True
  c.data.normalize = "minus_one_one"
  c.train.batch_size = 32
  c.optimizer.name = "adam"
  c.optimizer.learning_rate = 1e-3
  c.schedule.name = "warmup_cosine"
  c.schedule.unit = "epoch"
  c.schedule.cosine = "quarter"
  c.schedule.warmup = 5.0
  c.schedule.init_value = 1e-5
  c.schedule.end_value = 1e-5
  return c


def digits_small(c: ConfigDict, size: int, epochs: int) -> ConfigDict:
  """A CIFAR recipe moved onto the bundled digits (CPU-sized): ``size`` x ``size`` x 3, ``epochs``.

  Iteration counts become epochs; digits are not mirror-symmetric, so no flips.
  """
  c.data.name = "digits"
  c.data.image_size = size
  c.data.channels = 3
  c.data.flip = False
  c.train.num_steps = 0
  c.train.num_epochs = epochs
  return c


def mobilenet_v2_expands(values: dict) -> tuple[int, ...]:
  """A search space's derived MobileNet V2 widths: each stage's inverted residuals widen to ``expansion`` x the
  stage's width (``model.kwargs.outputs``)."""
  return tuple(values["expansion"] * w for w in values["model.kwargs.outputs"])


def mobilenet_v2_last_features(values: dict) -> int:
  """The 1x1 convolution before the head: 4 x the last stage's width (MobileNet V2's 1280 = 4 x 320)."""
  return 4 * values["model.kwargs.outputs"][-1]


def he2015_digits(c: ConfigDict, epochs: int, warmup_epochs: int = 2) -> ConfigDict:
  """He et al. 2015's CIFAR recipe (``he2015_cifar10``) shrunk onto the bundled digits for a 2-core CPU.

  The digits at their native 8x8 (3 channels; pad-1 random crop, no flip), batch 64 (22 steps an
  epoch), ``epochs`` epochs; SGD momentum 0.9 and weight decay 1e-4 as in the paper. Learning
  rate 0.005 for ``warmup_epochs`` (the paper's ResNet-110 warm-up, here for every depth), then
  0.025 (the paper's 0.1 scaled to the halved batch, and halved again), divided by 10 at 2/3 and
  5/6 of the steps. At the paper's 0.1 (batch 128) ResNet-56 does not train on the digits: without
  warm-up its training loss is 11 in the first epoch (at 16x16; 77% training error after 132
  iterations); after a warm-up at 0.01 (at 8x8) its training error climbs from 52% back to 80%.
  """
  digits_small(c, size=8, epochs=epochs)
  c.data.pad = 1
  c.train.batch_size = 64
  steps_per_epoch = DIGITS_TRAIN_EXAMPLES // c.train.batch_size
  total = epochs * steps_per_epoch
  c.train.log_every_steps = steps_per_epoch
  c.optimizer.learning_rate = 0.005
  c.schedule.boundaries = (warmup_epochs * steps_per_epoch, round(total * 2 / 3), round(total * 5 / 6))
  c.schedule.scales = (5.0, 0.1, 0.1)
  return c
