"""Architecture search on the bundled digits under a MACs and receptive-field budget (CPU-sized).

Commands:  xnn search search_digits:tiny --workdir runs/search_tiny      (the test suite's)
           xnn search search_digits:quick --workdir runs/search_quick --parallel 2
           xnn train --config runs/search_quick/best.py --workdir runs/search_quick/best
           (the same with the file's path: xnn/configs/search_digits.py:quick, or configs/search_digits.py:quick)
Space:     the block type: the CIFAR ResNet family's basic blocks (depth 20 or 32 through the
           model's name, stage widths, option-A/B shortcut or none: residual on/off) or
           MobileNet V2's inverted residuals (blocks per stage, stage widths, expansion
           ratio); the head (global average pooling, or the learned spatial weighting);
           Adam's learning rate. ResNet-20 as drawn for CIFAR (16/32/64) is the first
           candidate (``start``).
Budget:    at most ResNet-20's forward MACs at the search's input (``:quick``: 10.1 M at
           16x16x3) and a receptive field of the last feature map at least the input's side;
           candidates over it are never trained (the log and candidates.md say which limit).
Protocol:  candidates train on the first 1,150 training images and are evaluated on the other
           287 (a validation split); ``best.py`` retrains the winner on all 1,437 and tests on
           the 360 test images (``final``). Successive halving (``:tiny``) or Hyperband
           (``:quick``) stops candidates whose validation accuracy trails after 1, 3 epochs.
Runtime:   ``:tiny`` 5 trials of 8x8 networks for 3 epochs, about 2 minutes on a 2-core CPU;
           ``:quick`` 16 trials at 16x16 for 6 epochs, under 10 minutes on a 2-core CPU with
           ``--parallel 2`` (the README has the measured run and its result).
Expected:  ``:quick``: a front of candidates at a fraction of ResNet-20's MACs within a point
           or two of its validation accuracy (see the README section "Search under a budget").
"""

from xnn import search as s
from xnn.configs import common
from xnn.configs.default import get_config as _default

MODES = ("tiny", "quick")
FINAL = {"data.train_split": "train", "data.test_split": "test"}


def _mode(arg):
  mode = common.parse_arg(arg, mode="quick")["mode"]
  if mode not in MODES:
    raise ValueError(f"arg must be one of {', '.join(MODES)}, got {arg!r}")
  return mode


def get_config(arg=None):
  mode = _mode(arg)
  c = _default()
  c.model.name = "resnet20"
  c.data.image_size = 0 if mode == "tiny" else 16       # native 8x8, or upscaled to 16x16
  c.data.channels = 0 if mode == "tiny" else 3
  c.data.train_split = "train[:1150]"                   # a validation split: the last 287 training images
  c.data.test_split = "train[1150:]"
  c.train.num_epochs = 3 if mode == "tiny" else 6
  c.train.batch_size = 64
  c.train.eval_every_epochs = 1.0
  c.train.progress_every_s = 60.0
  c.optimizer.name = "adam"
  c.optimizer.learning_rate = 3e-3
  c.schedule.warmup = 0.5
  return c


def get_search_space(arg=None):
  mode = _mode(arg)
  tiny = mode == "tiny"
  basic = [s.choice("model.name", ["resnet20"] if tiny else ["resnet20", "resnet32"]),
           s.choice("model.kwargs.widths", [(4, 8, 16), (8, 16, 32)] if tiny else
                    [(8, 16, 32), (16, 32, 64), (8, 16, 32, 64)]),
           s.choice("model.kwargs.shortcut", ["A", "none"] if tiny else ["A", "B", "none"])]
  inverted = [s.fixed("model.name", "mobilenet_v2_28"),
              s.choice("model.kwargs.stage_sizes", [(1, 1, 1)] if tiny else [(1, 1, 1), (1, 2, 2), (2, 3, 2)]),
              s.choice("model.kwargs.outputs", [(8, 16, 32)] if tiny else [(8, 16, 32), (16, 32, 64)]),
              s.choice("expansion", [2, 4] if tiny else [2, 4, 6]),
              s.derived("model.kwargs.expands", common.mobilenet_v2_expands),
              s.derived("model.kwargs.last_features", common.mobilenet_v2_last_features)]
  params = [s.branch("block", {"basic": basic, "inverted_residual": inverted})]
  if not tiny:
    params += [s.choice("model.kwargs.head", ["gap_linear", "spatial_gap"]),
               s.choice("optimizer.learning_rate", [1e-3, 3e-3, 1e-2])]
  start = [{"block": "basic", "model.name": "resnet20", "model.kwargs.widths": (8, 16, 32) if tiny else (16, 32, 64),
            "model.kwargs.shortcut": "A", **({} if tiny else {"model.kwargs.head": "gap_linear",
                                                             "optimizer.learning_rate": 3e-3})}]
  return s.SearchSpace(
      *params,
      # ResNet-20's own MACs (:tiny: the 8/16/32-wide one at 8x8x1, 0.63 M; :quick: 16/32/64 at 16x16x3, 10.1 M)
      constraints=s.Constraints(max_macs=0.4e6 if tiny else 10.2e6, min_receptive_field=1.0),
      sampler="tpe", pruner="successive_halving" if tiny else "hyperband", reduction_factor=2 if tiny else 3,
      trials=5 if tiny else 16, parallel=2, startup_trials=3 if tiny else 6, seed=0, start=start, final=FINAL)
