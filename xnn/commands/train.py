"""``xnn train [--config FILE[:ARG]] [--workdir DIR] [--config.a.b=value ...]``.

ml-collections conventions: FILE defines ``get_config(arg)`` (a path, or the name of a
recipe in xnn/configs such as ``cifar10_resnet:resnet56``); ``--config.x=v``
overrides a field (unknown fields and wrong types are errors). ``model.kwargs`` is
open: ``--config.model.kwargs.NAME=VALUE`` sets any argument of the model's factory
(values read by ``xnn.configs.args.parse_value``; ``NAME.KEY`` for a dict argument
such as ``head_kwargs``). Without ``--config`` the embedded
default runs (LeNet-5 on the bundled digits). Re-running on a workdir that has a
checkpoint resumes from it.
"""

from __future__ import annotations

import os
import sys

from absl import flags

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "configs", "default.py")
KWARGS_PREFIX = "--config.model.kwargs."
USAGE = ("usage: xnn train [--config FILE[:ARG]] [--workdir DIR] [--config.FIELD=VALUE ...]\n\n"
         "  --config   config file defining get_config(arg), or a recipe name in xnn/configs\n"
         "             (default: the embedded default, LeNet-5 on the bundled UCI digits)\n"
         "  --workdir  output folder: config.json, metrics.jsonl, curves.png, tensorboard/,\n"
         "             checkpoints/ (default: runs/<model>_<data>); an existing checkpoint resumes\n"
         "  --config.FIELD=VALUE  override any config field, e.g. --config.train.num_epochs=5\n"
         "  --config.model.kwargs.NAME=VALUE  a model factory argument, e.g. --config.model.kwargs.shortcut=B\n")


def _split_kwargs(argv: list[str]) -> tuple[list[str], dict[str, str]]:
  """``--config.model.kwargs.NAME=VALUE`` arguments apart from the rest (NAME may be new)."""
  rest, kwargs = [], {}
  for a in argv:
    if a.startswith(KWARGS_PREFIX):
      name, eq, value = a[len(KWARGS_PREFIX):].partition("=")
      if not eq or not all(part.isidentifier() for part in name.split(".")):
        raise ValueError(f"{a!r}: expected {KWARGS_PREFIX}NAME=VALUE with NAME an argument name "
                         "(NAME.KEY for a dict argument)")
      kwargs[name] = value
    else:
      rest.append(a)
  return rest, kwargs


def _config_spec(argv: list[str]) -> list[str]:
  """``--config NAME[:ARG]`` / ``--config=NAME[:ARG]`` with a recipe name resolved to its file."""
  from xnn.configs import config_path
  out = list(argv)
  for i, a in enumerate(out):
    if a == "--config" and i + 1 < len(out):
      out[i + 1] = config_path(out[i + 1])
    elif a.startswith("--config=") and not a.startswith("--config.="):
      out[i] = "--config=" + config_path(a[len("--config="):])
  return out


def parse(argv: list[str]):
  """(config, workdir) from the command line; ``ValueError`` naming a bad argument."""
  import ml_collections
  from ml_collections import config_flags
  from xnn.configs.args import parse_value
  argv, kwargs = _split_kwargs(argv)
  argv = ["xnn train", *_config_spec(argv)]
  fv = flags.FlagValues()
  # sys_argv: config_flags reads the command line itself to find the config file's overrides
  config_flag = config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "config file", flag_values=fv,
                                                lock_config=True, sys_argv=argv)
  workdir = flags.DEFINE_string("workdir", None, "output folder", flag_values=fv)
  try:
    fv(argv)
  except flags.Error as e:
    raise ValueError(f"{e}\n\n{USAGE}") from None
  config = config_flag.value
  with config.unlocked():
    for name, value in kwargs.items():
      *outer, last = name.split(".")
      section = config.model.kwargs
      for key in outer:
        if key not in section:
          section[key] = ml_collections.ConfigDict()
        section = section[key]
      section[last] = parse_value(value)
  return config, workdir.value


def main(argv: list[str]) -> int:
  if any(a in ("-h", "--help", "-help") for a in argv):
    print(USAGE)
    return 0
  try:
    config, workdir = parse(argv)
  except ValueError as e:
    print(f"xnn train: error: {e}", file=sys.stderr)
    return 2
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
