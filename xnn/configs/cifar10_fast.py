"""Time-to-94% on CIFAR-10: Page's ResNet-9 and its 24-epoch recipe; the argument is the epochs.

Command:   xnn train --config xnn/configs/cifar10_fast.py --workdir runs/cifar10_fast
           (xnn/configs/cifar10_fast.py:N trains for N epochs on the same one-cycle shape,
            peak at 5/24 of the run)
Recipe:    D. Page, "How to train your ResNet" (2018), the DAWNBench entry: ResNet-9
           (xnn/models/resnet9.py, 6,573,120 parameters), batch 512, 24 epochs, SGD
           with Nesterov momentum 0.9, weight decay 5e-4 (coupled L2), learning rate
           piecewise linear 0 -> 0.4 at epoch 5 -> 0 at epoch 24 (per step);
           4-pixel padding, random 32x32 crop, horizontal flip; per-channel
           normalisation.  Page's lr 0.4/512 on a summed loss with weight decay
           5e-4 x 512 is this lr 0.4 on the mean loss with weight decay 5e-4.
           The training set lives on the accelerator (train.device_resident, auto).
Differs:   Page pads with reflection and adds 8x8 Cutout; xnn pads with zeros and
           has no Cutout, so expect slightly lower accuracy than his 94%.
Runtime:   not yet measured on a GPU. Estimated at about 45 s of training on one H100
           plus compilation: 1.14 GMACs of training arithmetic per image (0.379
           forward + 0.757 backward, `xnn cost resnet9 --train`) x 50,000 x 24 epochs
           = 1.36 PMAC at the rate xnn's bf16 ResNet-50 training step sustained on an
           H100 (benchmarks/RESULTS.md); Page reports 79 s on a V100 in float16.  On a
           2-core CPU an epoch is estimated at about 15 min (not run): use a GPU.
Expected:  about 94% test accuracy after 24 epochs (Page: 94.08% with Cutout).
Needs:     CIFAR-10 downloaded by TFDS (network), or the original
           cifar-10-binary.tar.gz in --config.data.manual_dir.
"""

from xnn.configs import common
from xnn.configs.default import get_config as _default


def get_config(arg: str | None = None):
  epochs = common.parse_arg(arg, epochs=24)["epochs"]
  if epochs < 1:
    raise ValueError(f"cifar10_fast.py:EPOCHS needs EPOCHS >= 1, got {arg!r}")
  c = _default()
  c.model.name = "resnet9"
  c.model.dtype = "bfloat16"        # f32 parameters, optimiser state and BN statistics
  common.cifar10_pad_crop_flip(c)
  c.train.batch_size = 512
  c.train.num_epochs = epochs
  c.train.eval_batch_size = 1000
  c.train.eval_every_epochs = 1.0
  c.train.log_every_steps = 97
  c.optimizer.name = "sgd"
  c.optimizer.learning_rate = 0.4
  c.optimizer.momentum = 0.9
  c.optimizer.nesterov = True
  c.optimizer.weight_decay = 5e-4
  c.schedule.name = "warmup_linear"
  c.schedule.unit = "step"
  c.schedule.warmup = 5.0 * epochs / 24
  c.schedule.init_value = 0.0
  c.schedule.end_value = 0.0
  return c
