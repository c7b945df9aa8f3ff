"""He et al. 2015, sec. 4.2: plain vs residual networks of depth 20, 32, 44, 56 on CIFAR-10.

Full (GPU/TPU, needs CIFAR-10; runtime: see configs/cifar10_resnet.py):
    xnn sweep experiments/residual_vs_plain/config.py:full --workdir runs/rvp --parallel 1
    python experiments/residual_vs_plain/plots.py runs/rvp
Quick (the same pipeline on the bundled digits, depths 20 and 56, 3 seeds each; the
README has the measured time and numbers on a 2-core CPU):
    python experiments/residual_vs_plain/run.py --quick --workdir runs/rvp_quick

Recipe (all in the config, none in code): ``xnn.configs.common.he2015_cifar10`` (batch
128, SGD momentum 0.9, weight decay 1e-4, lr 0.1 divided by 10 at 32k and 48k
iterations, stop at 64k; pad-4 random crop and horizontal flip), option-A (identity)
shortcuts, BatchNorm statistics over 64 images as on the paper's two GPUs
(``train.bn_stats=groups``, 64); training on all 50k images (``arg=full_45k`` holds out
5k as the paper did to choose the schedule). Normalisation: per-channel mean/std (the
paper subtracts the per-pixel mean; the difference is a constant shift per pixel that
the first BN absorbs).
ResNet-110 (``arg=full_110``) warms up at 0.01 for 400 iterations, then 0.1.
Expected (paper Table 6, test error %): ResNet-20 8.75, -32 7.51, -44 7.17,
-56 6.97, -110 6.43 (±0.16); the plain nets' errors are only drawn in Fig. 6 (the
56-layer plain net is worse than the 20-layer one) -- the report reads no numbers
off the figure.

Quick budget (``xnn.configs.common.he2015_digits``): the digits at 8x8, batch 64, 24 epochs
(528 iterations), lr 0.005 for 2 epochs then 0.025, /10 at iterations 352 and 440; 12 runs,
8.5 min on a 2-core Intel Xeon (the README's table). Expected, in every one of the 3 seeds
(last-epoch training error): plain-56 57.5-68.0%, plain-20 0.85-1.35%, ResNet-56
0.28-0.57%, ResNet-20 0.14-0.36% -- plain-56 trains worse than plain-20 and than ResNet-56,
but ResNet-56 does not reach ResNet-20: 20 layers already fit the digits.
"""

from xnn import sweeps as s
from xnn.configs import common
from xnn.configs.default import get_config as _default

DEPTHS = (20, 32, 44, 56)
QUICK_DEPTHS = (20, 56)    # Figure 6's contrast: plain-56 trains worse than plain-20, ResNet-56 better
QUICK_EPOCHS = 24          # a budget in which plain-56 and ResNet-56 are apart in every seed (README)
SEEDS = 3                  # a conclusion holds only if it holds in every seed
MODES = ("quick", "tiny", "full", "full_45k", "full_110")


def _mode(arg: str | None) -> str:
  mode = common.parse_arg(arg, mode="quick")["mode"]
  if mode not in MODES:
    raise ValueError(f"arg must be one of {', '.join(MODES)}, got {arg!r}")
  return mode


def get_config(arg: str | None = None):
  mode = _mode(arg)
  c = common.he2015_cifar10(_default())
  c.model.name = "resnet20"
  c.train.bn_stats = "groups"        # BN over 64 images, as on the paper's two GPUs
  c.train.bn_group_size = 64
  if mode.startswith("full"):
    c.train.log_every_steps = 100
    if mode == "full_45k":
      c.data.train_split = "train[:45000]"
      c.data.test_split = "train[45000:]"
    if mode == "full_110":         # ResNet-110: lr 0.01 for the first 400 iterations, then the recipe
      c.model.name = "resnet110"
      c.optimizer.learning_rate = 0.01
      c.schedule.boundaries = (400, 32_000, 48_000)
      c.schedule.scales = (10.0, 0.1, 0.1)
  elif mode == "quick":
    common.he2015_digits(c, epochs=QUICK_EPOCHS)
  else:                            # tiny (the test suite's): 2 epochs, depth 20, one seed
    common.he2015_digits(c, epochs=2, warmup_epochs=1)
  return c


def get_sweep(arg: str | None = None):
  mode = _mode(arg)
  if mode == "full_110":
    return s.product(s.values("model.name", ["resnet110"]), s.seeds(5))
  depths = {"quick": QUICK_DEPTHS, "tiny": (20,)}.get(mode, DEPTHS)
  names = [f"{kind}{d}" for d in depths for kind in ("plain", "resnet")]
  return s.product(s.values("model.name", names), s.seeds(1 if mode == "tiny" else SEEDS))
