"""The course recipe (the course's design homework, its model implementation section).

Command:   xnn train --config xnn/configs/cifar10_course.py:mobilenet_v2_28 --workdir runs/course_mnv2
           xnn train --config xnn/configs/cifar10_course.py:resnet_v2b --workdir runs/course_rnv2b
Recipe:    ``common.course_cifar10`` (the course code xNNs_Code_031_CIFAR_ResNetV2b.py):
           random 28x28 crops of the 32x32 images with horizontal flips (centre crop at
           test), (x-0.5)/0.5 normalisation, Adam (1e-3 peak, betas 0.9/0.999), batch 32;
           learning rate 1e-5 -> 1e-3 linearly over 5 epochs, then a quarter-period
           cosine back to 1e-5 at the last epoch, held constant within each epoch (the
           homework's training log; tests/test_schedules.py checks every epoch against
           it). 30 epochs for MobileNet V2 (the log), 60 for ResNetV2b (5 + 55 in the
           course code).
Expected:  test accuracy 0.8933 for MobileNet V2 (the homework's log); 91.4% for
           ResNetV2b (the course code's note, 60 epochs).
Runtime:   minutes per epoch on one GPU (not timed). The networks come from the CNN zoo.
"""

from xnn.configs import common
from xnn.configs.default import get_config as _default

EPOCHS = {"mobilenet_v2_28": 30, "resnet_v2b": 60}


def get_config(arg: str | None = None):
  arg = common.parse_arg(arg, model="mobilenet_v2_28")
  c = common.course_cifar10(_default())
  c.model.name = arg["model"]
  c.train.num_epochs = EPOCHS.get(c.model.name, 30)
  return c
