"""The course recipe of ../shared/seeds/000_* (model_implementation/main.py).

Command:   xnn train --config configs/cifar10_course.py:mobilenet_v2_28 --workdir runs/course_mnv2
           xnn train --config configs/cifar10_course.py:resnet_v2b --workdir runs/course_rnv2b
Recipe:    (the course code xNNs_Code_031_CIFAR_ResNetV2b.py) random 28x28 crops of
           the 32x32 images with horizontal flips (centre crop at test), (x-0.5)/0.5
           normalisation, Adam (1e-3 peak, betas 0.9/0.999), batch 32; learning rate
           1e-5 -> 1e-3 linearly over 5 epochs, then a quarter-period cosine back to
           1e-5 at the last epoch, held constant within each epoch (the log in 000_*;
           tests/test_schedules.py checks every epoch against it). 30 epochs for
           MobileNet V2 (the 000_* log), 60 for ResNetV2b (5 + 55 in the course code).
Expected:  test accuracy 0.8933 for MobileNet V2 (the 000_* log); 91.4% for
           ResNetV2b (the course code's note, 60 epochs).
Runtime:   minutes per epoch on one GPU. The networks come from the CNN zoo.
"""

from xnn.configs.default import cifar10_native
from xnn.configs.default import get_config as _default


def get_config(arg: str | None = None):
  c = _default()
  c.model.name = arg or "mobilenet_v2_28"
  cifar10_native(c)
  c.data.augment = "random_crop"
  c.data.crop_size = 28
  c.data.flip = True
  c.data.normalize = "minus_one_one"
  c.train.batch_size = 32
  c.train.num_epochs = 60 if c.model.name == "resnet_v2b" else 30
  c.optimizer.name = "adam"
  c.optimizer.learning_rate = 1e-3
  c.schedule.name = "warmup_cosine"
  c.schedule.unit = "epoch"
  c.schedule.cosine = "quarter"
  c.schedule.warmup = 5.0
  c.schedule.init_value = 1e-5
  c.schedule.end_value = 1e-5
  return c
