"""Architecture search on CIFAR-10 under ResNet-20's MACs (a GPU or TPU host).

Commands:  xnn search search_cifar --workdir runs/search_cifar --parallel 4          (TPE + Hyperband)
           xnn search search_cifar:nsga2 --workdir runs/search_cifar_nsga2 --parallel 4
           (NSGA-II on accuracy and MACs together: the front itself is the result)
           xnn search search_cifar --workdir runs/search_cifar --dry-run --trials 20
           (what 20 random candidates cost and which limits they exceed; seconds, any machine)
           xnn search search_cifar --workdir runs/search_cifar --launcher slurm --partition gpu \\
                      --gpus-per-node 1 --time 2:00:00 --parallel 8
           xnn train --config runs/search_cifar/best.py --workdir runs/search_cifar/best
Space:     the block type: the CIFAR ResNet family (He et al. 2015, sec. 4.2: depth 20/32/44
           through the model's name, stage widths, option-A/B shortcuts or none) or MobileNet
           V2's inverted residuals (Sandler et al. 2018: blocks per stage, stage widths,
           expansion ratio 2/4/6); the head; SGD's learning rate; weight decay.
           ResNet-20 as published is the first candidate (``start``).
Budget:    forward MACs at most ResNet-20's (40.6 M); peak training memory at batch 128 at most
           2 GiB (MobileNet V2's wide expansions at 32x32 exceed it); the last feature map's
           receptive field at least the 32-pixel image; the roofline latency at batch 1 on an
           H100 at most 10 us (a lower bound: launch overheads are not in it).
Protocol:  candidates train 30 epochs on 45,000 training images and are evaluated on the other
           5,000 (He et al.'s split); Hyperband stops the trailing ones after 2 and 6 epochs.
           ``best.py`` retrains the winner on all 50,000 for 160 epochs and tests on the
           test set (``final``).
Runtime:   not timed. From the ResNet-20 rate measured on one H100 (11.7k images/s,
           benchmarks/RESULTS.md), a 30-epoch candidate is about 2 minutes of training plus
           compilation; 60 trials with Hyperband's early stops are roughly 1-2 GPU-hours.
Expected:  candidates within ResNet-20's budget near its accuracy (91.25% after 64k steps,
           He et al. 2015, Table 6), some at a fraction of its MACs. Needs CIFAR-10 (TFDS
           downloads it, or put cifar-10-binary.tar.gz in --config.data.manual_dir).
"""

from xnn import search as s
from xnn.configs import common
from xnn.configs.default import get_config as _default

MODES = ("tpe", "nsga2")
FINAL = {"data.train_split": "train", "data.test_split": "test", "train.num_epochs": 160}


def _mode(arg):
  mode = common.parse_arg(arg, mode="tpe")["mode"]
  if mode not in MODES:
    raise ValueError(f"arg must be one of {', '.join(MODES)}, got {arg!r}")
  return mode


def get_config(arg=None):
  _mode(arg)
  c = common.cifar10_pad_crop_flip(_default())
  c.model.name = "resnet20"
  c.data.train_split = "train[:45000]"          # He et al.'s 45k/5k split: the search never sees the test set
  c.data.test_split = "train[45000:]"
  c.train.batch_size = 128
  c.train.num_epochs = 30
  c.train.eval_every_epochs = 1.0
  c.train.log_every_steps = 100
  c.optimizer.name = "sgd"
  c.optimizer.learning_rate = 0.1
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 1e-4
  c.schedule.name = "warmup_cosine"
  c.schedule.warmup = 1.0
  return c


def get_search_space(arg=None):
  nsga2 = _mode(arg) == "nsga2"
  basic = [s.choice("model.name", ["resnet20", "resnet32", "resnet44"]),
           s.choice("model.kwargs.widths", [(8, 16, 32), (12, 24, 48), (16, 32, 64)]),
           s.choice("model.kwargs.shortcut", ["A", "B", "none"])]
  inverted = [s.fixed("model.name", "mobilenet_v2_28"),
              s.choice("model.kwargs.stage_sizes", [(1, 2, 2), (2, 3, 2), (3, 4, 3)]),
              s.choice("model.kwargs.outputs", [(16, 32, 64), (24, 48, 96)]),
              s.choice("expansion", [2, 4, 6]),
              s.derived("model.kwargs.expands", common.mobilenet_v2_expands),
              s.derived("model.kwargs.last_features", common.mobilenet_v2_last_features)]
  return s.SearchSpace(
      s.branch("block", {"basic": basic, "inverted_residual": inverted}),
      s.choice("model.kwargs.head", ["gap_linear", "spatial_gap"]),
      s.choice("optimizer.learning_rate", [0.05, 0.1, 0.2]),
      s.choice("optimizer.weight_decay", [1e-4, 5e-4]),
      constraints=s.Constraints(max_macs=40.7e6, max_peak_memory_mib=2048, min_receptive_field=1.0,
                                max_latency_ms=0.01, device="h100"),
      objectives=("accuracy", "macs") if nsga2 else ("accuracy",),
      sampler="nsga2" if nsga2 else "tpe", pruner="none" if nsga2 else "hyperband",
      min_epochs=2, reduction_factor=3, trials=60, parallel=4, startup_trials=12, seed=0,
      start=[{"block": "basic", "model.name": "resnet20", "model.kwargs.widths": (16, 32, 64),
              "model.kwargs.shortcut": "A", "model.kwargs.head": "gap_linear", "optimizer.learning_rate": 0.1,
              "optimizer.weight_decay": 1e-4}],
      final=FINAL)
