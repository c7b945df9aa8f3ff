"""CIFAR-10 accuracy curves: He et al. 2015's ResNets and the course recipes, with references.

Argument: ``RECIPE[,MODE]``; RECIPE ``resnets`` or ``course``, MODE ``full`` (default),
``quick`` or ``tiny``.

Full (GPU/TPU, needs CIFAR-10):
    python experiments/cifar_curves/run.py --workdir runs/curves
    (or one recipe: xnn sweep experiments/cifar_curves/config.py:resnets --workdir runs/curves/resnets)
Quick (the same pipelines on the bundled digits; the README has the measured times on a
2-core CPU):
    python experiments/cifar_curves/run.py --quick --workdir runs/curves_quick

``resnets``: xnn/configs/cifar10_resnet.py (He et al. 2015 sec. 4.2: batch 128, SGD 0.9,
wd 1e-4, lr 0.1 /10 at 32k and 48k, 64k iterations, pad-4 crop + flip, BN over 64
images) for ResNet-20/32/44/56 and ResNet-110, which starts at lr 0.01 for 400
iterations (the paper: "until the training error is below 80%") then returns to 0.1.
Expected (Table 6, test error %): 8.75, 7.51, 7.17, 6.97, 6.43. Runtime: not measured
(see xnn/configs/cifar10_resnet.py).

``course``: xnn/configs/cifar10_course.py (the course's design homework: 28x28 random crops + flip,
(x-0.5)/0.5, Adam 1e-3, batch 32, 5-epoch linear warmup from 1e-5 then a quarter
cosine to 1e-5, per epoch) for MobileNet V2 (28x28 homework net, 30 epochs; expected
0.8933) and the pre-activation ResNetV2b (60 epochs; expected 0.914).

The quick mode keeps every recipe's optimiser, schedule shape and augmentation, on the
digits, 3 seeds per network: the ResNets in the residual-vs-plain quick budget
(``common.he2015_digits``: 8x8, batch 64, 24 epochs, lr 0.005 for 2 epochs then 0.025, /10
at 2/3 and 5/6), the course nets at 16x16 with 14x14 crops and no flip (8 epochs, 2 of
warmup). The reference lines on its plots are still the CIFAR-10 figures, drawn for
orientation only. 12 runs, 8 min on a 2-core Intel Xeon (the README's table); expected:
every network at 97.5% test accuracy or more on the digits in every one of the 3 seeds.
"""

from xnn import sweeps as s
from xnn.configs import cifar10_course, cifar10_resnet, common

RESNETS = ("resnet20", "resnet32", "resnet44", "resnet56")
COURSE = cifar10_course.EPOCHS
RECIPES = ("resnets", "course")
MODES = ("full", "quick", "tiny")
QUICK_EPOCHS = {"resnets": 24, "course": 8}
SEEDS = 3                  # a conclusion holds only if it holds in every seed


def _parse(arg: str | None) -> tuple[str, str]:
  a = common.parse_arg(arg, recipe="resnets", mode="full")
  if a["recipe"] not in RECIPES or a["mode"] not in MODES:
    raise ValueError(f"arg must be RECIPE[,MODE] with RECIPE in {RECIPES} and MODE in {MODES}, got {arg!r}")
  return a["recipe"], a["mode"]


def get_config(arg: str | None = None):
  recipe, mode = _parse(arg)
  if recipe == "resnets":
    c = cifar10_resnet.get_config("resnet20")
    c.train.bn_stats = "groups"          # BN over 64 images, as on the paper's two GPUs
    c.train.bn_group_size = 64
    if mode == "quick":
      common.he2015_digits(c, epochs=QUICK_EPOCHS[recipe])
    elif mode == "tiny":
      common.he2015_digits(c, epochs=2, warmup_epochs=1)
  else:
    c = cifar10_course.get_config("mobilenet_v2_28")
    if mode != "full":                   # digits 16x16, 14x14 crops; 8 (tiny: 2) epochs
      common.digits_small(c, size=16, epochs=QUICK_EPOCHS[recipe] if mode == "quick" else 2)
      c.data.crop_size = 14
      c.schedule.warmup = 2.0 if mode == "quick" else 1.0
  return c


def get_sweep(arg: str | None = None):
  recipe, mode = _parse(arg)
  if recipe == "resnets":
    if mode == "tiny":
      return s.values("model.name", ["resnet20"])
    if mode == "quick":
      return s.product(s.values("model.name", RESNETS[:2]), s.seeds(SEEDS))
    runs = s.values("model.name", RESNETS)
    # ResNet-110: lr 0.01 for the first 400 iterations, then the recipe
    runs.append({"model.name": "resnet110", "optimizer.learning_rate": 0.01,
                 "schedule.boundaries": (400, 32000, 48000), "schedule.scales": (10, 0.1, 0.1)})
    return runs
  if mode == "full":
    return s.zip(s.values("model.name", list(COURSE)), s.values("train.num_epochs", list(COURSE.values())))
  if mode == "quick":
    return s.product(s.values("model.name", list(COURSE)), s.seeds(SEEDS))
  return s.values("model.name", ["mobilenet_v2_28"])
