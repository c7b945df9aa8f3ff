"""``xnn train [--config FILE[:ARG]] [--workdir DIR] [--config.a.b=value ...]``.

ml-collections conventions: FILE defines ``get_config(arg)`` (a path, or the name of a
recipe in xnn/configs such as ``cifar10_resnet:resnet56``); ``--config.x=v``
overrides a field (unknown fields and wrong types are errors). ``model.kwargs`` is
open: ``--config.model.kwargs.NAME=VALUE`` sets any argument of the model's factory
(values read by ``xnn.configs.args.parse_value``; ``NAME.KEY`` for a dict argument
such as ``head_kwargs``), and ``--config.model.kwargs=NAME=VALUE,NAME=VALUE`` sets
several (read by ``xnn.configs.args.parse_arg``). Without ``--config`` the embedded
default runs (LeNet-5 on the bundled digits). Re-running on a workdir that has a
checkpoint resumes from it.

The config is loaded by ``xnn.configs.load_config`` and every override is checked
by ``xnn.configs.check_override`` before ml-collections parses it, so a file that
does not load, an unknown field (named with the closest known one) or a value of
the wrong type is one ``ValueError`` line before anything runs; ``xnn.cli`` prints
it as ``xnn train: error: ...`` with exit status 2. A run that fails while running
(a NaN loss) exits with 1; SIGTERM/SIGINT saves a checkpoint and exits with
128 + the signal number.
"""

from __future__ import annotations

import os
import re
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
         "  --config.model.kwargs.NAME=VALUE  a model factory argument, e.g. --config.model.kwargs.shortcut=B\n"
         "  --config.model.kwargs=NAME=VALUE,...  several, e.g. --config.model.kwargs=aux_logits=True\n"
         "  --init_from DIR  start a new run from the newest verified weights of the run in DIR\n"
         "             (same as --config.train.init_from=DIR; --init-from is accepted too)\n"
         "  --debug    show the traceback of an error instead of its one line\n")


def _split_kwargs(argv: list[str]) -> tuple[list[str], dict[str, str]]:
  """``--config.model.kwargs.NAME=VALUE`` and ``--config.model.kwargs=NAME=VALUE,...`` arguments apart from
  the rest (NAME may be new), as NAME -> value text."""
  from xnn.configs.args import parse_arg
  rest, kwargs = [], {}
  for a in argv:
    if a.startswith(KWARGS_PREFIX[:-1] + "="):
      text = a[len(KWARGS_PREFIX):]
      try:
        named = parse_arg(text, lazy=True)
      except ValueError:
        named = None
      if not text.strip() or not named:
        raise ValueError(f"{a!r}: expected {KWARGS_PREFIX[:-1]}=NAME=VALUE[,NAME=VALUE...], "
                         "e.g. --config.model.kwargs=aux_logits=True")
      kwargs.update({name: repr(value) for name, value in named.items()})
    elif a.startswith(KWARGS_PREFIX):
      name, eq, value = a[len(KWARGS_PREFIX):].partition("=")
      if not eq or not all(part.isidentifier() for part in name.split(".")):
        raise ValueError(f"{a!r}: expected {KWARGS_PREFIX}NAME=VALUE with NAME an argument name "
                         "(NAME.KEY for a dict argument)")
      kwargs[name] = value
    else:
      rest.append(a)
  return rest, kwargs


def _config_arg(argv: list[str]) -> tuple[str, list[str]]:
  """(the ``--config NAME[:ARG]`` / ``--config=NAME[:ARG]`` value or the default, argv without it)."""
  spec, rest, i = DEFAULT_CONFIG, [], 0
  while i < len(argv):
    a = argv[i]
    if a == "--config":
      if i + 1 == len(argv) or argv[i + 1].startswith("--"):
        raise ValueError("--config needs a value: a config file FILE[:ARG] or a recipe name")
      spec, i = argv[i + 1], i + 2
      continue
    if a.startswith("--config="):
      spec = a[len("--config="):]
    else:
      rest.append(a)
    i += 1
  return spec, rest


def _override_paths(argv: list[str]) -> list[str]:
  """The fields that ``--config.FIELD[=VALUE]`` (or ``--noconfig.FIELD`` for a bool) arguments set."""
  out = []
  for a in argv:
    m = re.match(r"^--?(no)?config\.([^=]*)", a)
    if m:
      out.append(m.group(2))
  return out


def parse(argv: list[str]):
  """(config, workdir) from the command line; ``ValueError`` (one line) naming a bad argument."""
  import ml_collections
  from ml_collections import config_flags
  from xnn.configs import check_override, load_config
  from xnn.configs.args import override_error
  from xnn.configs.args import parse_value
  argv = [re.sub(r"^--init-from(?==|$)", "--init_from", a) for a in argv]
  argv, kwargs = _split_kwargs(argv)
  spec, argv = _config_arg(argv)
  config = load_config(spec)
  for path in _override_paths(argv):
    check_override(config, path)
  argv = ["xnn train", *argv]
  fv = flags.FlagValues()
  # sys_argv: config_flags reads the command line itself to find the overrides
  config_flag = config_flags.DEFINE_config_dict("config", config, "config", flag_values=fv, lock_config=True,
                                                sys_argv=argv)
  workdir = flags.DEFINE_string("workdir", None, "output folder", flag_values=fv)
  init_from = flags.DEFINE_string("init_from", None, "start from this workdir's weights", flag_values=fv)
  try:
    rest = fv(argv)
  except flags.Error as e:
    raise ValueError(override_error(" ".join(str(e).split()))) from None
  except (AttributeError, KeyError, TypeError) as e:    # ml-collections, for what check_override lets through
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    raise ValueError(f"bad --config override: {' '.join(text.split())}") from None
  if rest[1:]:
    raise ValueError(f"unexpected argument {rest[1]!r}: xnn train takes --config, --workdir and "
                     "--config.FIELD=VALUE options only")
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
    if init_from.value is not None:
      config.train.init_from = init_from.value
  return config, workdir.value


def main(argv: list[str]) -> int:
  if any(a in ("-h", "--help", "-help") for a in argv):
    print(USAGE)
    return 0
  config, workdir = parse(argv)        # bad input raises ValueError: xnn.cli prints it as one line
  from xnn.train.distributed import maybe_initialize
  maybe_initialize()
  from xnn.train import TrainingInterrupted, train_and_evaluate
  if workdir is None:
    workdir = os.path.join("runs", f"{config.model.name}_{config.data.name}")
  try:
    result = train_and_evaluate(config, workdir)
  except TrainingInterrupted as e:   # checkpointed: re-running resumes. Other errors: see xnn.cli.run
    print(f"xnn train: {e}", file=sys.stderr)
    return 128 + e.signum
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
