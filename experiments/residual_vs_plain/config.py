"""He et al. 2015, sec. 4.2: plain vs residual networks of depth 20, 32, 44, 56 on CIFAR-10.

Full (GPU/TPU, needs CIFAR-10; runtime: see configs/cifar10_resnet.py):
    xnn sweep experiments/residual_vs_plain/config.py:full --workdir runs/rvp --parallel 1
    python experiments/residual_vs_plain/plots.py runs/rvp
Quick (the same pipeline on the bundled digits, upscaled to 16x16, depths 20 and 56;
350 s measured on a 2-core CPU):
    python experiments/residual_vs_plain/run.py --quick --workdir runs/rvp_quick

Recipe (all in the config, none in code): batch 128, SGD momentum 0.9, weight decay
1e-4, lr 0.1 divided by 10 at 32k and 48k iterations, stop at 64k; pad-4 random crop
and horizontal flip; option-A (identity) shortcuts; BatchNorm statistics over 64
images as on the paper's two GPUs (``train.bn_stats=groups``, 64); training on all
50k images (``arg=full_45k`` holds out 5k as the paper did to choose the schedule).
Normalisation: per-channel mean/std (the paper subtracts the per-pixel mean; the
difference is a constant shift per pixel that the first BN absorbs).
ResNet-110 (``arg=full_110``) warms up at 0.01 for 400 iterations, then 0.1.
Expected (paper Table 6, test error %): ResNet-20 8.75, -32 7.51, -44 7.17,
-56 6.97, -110 6.43 (±0.16); the plain nets' errors are only drawn in Fig. 6 (the
56-layer plain net is worse than the 20-layer one) -- the report reads no numbers
off the figure.
"""

from xnn import sweep as s
from xnn.configs.default import get_config as _default

DEPTHS = (20, 32, 44, 56)
QUICK_DEPTHS = (20, 56)    # Figure 6's contrast: plain-56 trains worse than plain-20, ResNet-56 better


def get_config(arg: str | None = None):
  arg = arg or "quick"
  c = _default()
  c.model.name = "resnet20"
  c.optimizer.name = "sgd"
  c.optimizer.learning_rate = 0.1
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 1e-4
  c.schedule.name = "piecewise"
  c.train.batch_size = 128
  c.train.bn_stats = "groups"
  c.train.bn_group_size = 64
  c.data.augment = "pad_crop_flip"
  c.data.flip = True
  if arg.startswith("full"):
    c.data.name = "cifar10"
    c.data.image_size = 0
    c.data.channels = 0
    c.data.pad = 4
    c.train.num_steps = 64_000
    c.train.log_every_steps = 100
    c.schedule.boundaries = "32000,48000"
    c.schedule.scale = 0.1
    if arg == "full_45k":
      c.data.train_split = "train[:45000]"
      c.data.test_split = "train[45000:]"
    if arg == "full_110":
      c.model.name = "resnet110"
      c.optimizer.learning_rate = 0.01
      c.schedule.boundaries = "400,32000,48000"
      c.schedule.scales = "10,0.1,0.1"
  elif arg in ("quick", "tiny"):
    # Digits, 8x8 upscaled to 16x16, 3 channels; 12 epochs of 11 steps, lr /10 at 2/3 and 5/6.
    # tiny (the test suite's): 2 epochs, depth 20 only.
    c.data.image_size = 16
    c.data.channels = 3
    c.data.pad = 2
    c.data.flip = False            # digits are not mirror-symmetric
    c.train.num_epochs = 12 if arg == "quick" else 2
    c.train.log_every_steps = 11
    c.schedule.boundaries = "88,110" if arg == "quick" else "15,19"
  else:
    raise ValueError(f"arg must be quick, tiny, full, full_45k or full_110, got {arg!r}")
  return c


def get_sweep(arg: str | None = None):
  arg = arg or "quick"
  if arg == "full_110":
    return s.product(s.values("model.name", ["resnet110"]), s.seeds(5))
  depths = {"quick": QUICK_DEPTHS, "tiny": (20,)}.get(arg, DEPTHS)
  names = [f"{kind}{d}" for d in depths for kind in ("plain", "resnet")]
  return s.product(s.values("model.name", names), s.seeds(3 if arg.startswith("full") else 1))
