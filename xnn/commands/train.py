"""``xnn train [--config FILE[:ARG]] [--workdir DIR] [--config.a.b=value ...]``.

ml-collections conventions: FILE defines ``get_config(arg)``; ``--config.x=v``
overrides a field (unknown fields and wrong types are errors). Without
``--config`` the embedded default runs (LeNet-5 on the bundled digits).
Re-running on a workdir that has a checkpoint resumes from it.
"""

from __future__ import annotations

import os
import sys

from absl import flags

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "configs", "default.py")
USAGE = ("usage: xnn train [--config FILE[:ARG]] [--workdir DIR] [--config.FIELD=VALUE ...]\n\n"
         "  --config   config file defining get_config(arg) (default: the embedded default,\n"
         "             LeNet-5 on the bundled UCI digits)\n"
         "  --workdir  output folder: config.json, metrics.jsonl, curves.png, tensorboard/,\n"
         "             checkpoints/ (default: runs/<model>_<data>); an existing checkpoint resumes\n"
         "  --config.FIELD=VALUE  override any config field, e.g. --config.train.num_epochs=5\n")


def _parse(argv: list[str]):
  from ml_collections import config_flags
  fv = flags.FlagValues()
  config_flag = config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "config file", flag_values=fv,
                                                lock_config=True)
  workdir = flags.DEFINE_string("workdir", None, "output folder", flag_values=fv)
  try:
    fv(["xnn train"] + argv)
  except flags.Error as e:
    raise SystemExit(f"xnn train: {e}\n\n{USAGE}") from None
  return config_flag.value, workdir.value


def main(argv: list[str]) -> int:
  if any(a in ("-h", "--help", "-help") for a in argv):
    print(USAGE)
    return 0
  config, workdir = _parse(argv)
  from xnn.train.distributed import maybe_initialize
  maybe_initialize()
  from xnn.train import TrainingInterrupted, train_and_evaluate
  if workdir is None:
    workdir = os.path.join("runs", f"{config.model.name}_{config.data.name}")
  try:
    result = train_and_evaluate(config, workdir)
  except TrainingInterrupted as e:
    print(f"xnn train: {e}", file=sys.stderr)
    return 128 + e.signum
  except (ValueError, KeyError, FloatingPointError) as e:
    print(f"xnn train: error: {e}", file=sys.stderr)
    return 1
  import jax
  if jax.process_index() != 0:
    return 0
  if result.greedy_token_accuracy is not None:
    print(f"greedy decoding (no teacher forcing): token accuracy {result.greedy_token_accuracy:.4f}, "
          f"sequence accuracy {result.greedy_sequence_accuracy:.4f}")
  print(f"done: step {result.step}, test accuracy {result.test_accuracy:.4f}, "
        f"test loss {result.test_loss:.4f}, {result.wall_time_s:.1f} s, {result.params:,} parameters; "
        f"outputs in {workdir}")
  return 0
