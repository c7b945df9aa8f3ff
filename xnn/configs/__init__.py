"""Configs: the schema (``default``), its checks (``schema``), shared pieces (``common``),
the argument parser (``args``) and the recipes (``cifar10_resnet``, ``cifar10_course``,
``cifar10_fast``, ``digits_lenet5``, ``digits_rnn``, ``seq2seq``; the searches
``search_digits``, ``search_cifar``, which also declare ``get_search_space``).

They live in the package, so experiments import them (``from xnn.configs import
cifar10_resnet``) and ``xnn train --config NAME[:ARG]`` finds a recipe by name from
any directory after ``pip install``.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import importlib.util
import os
import sys
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
NOT_RECIPES = ("__init__.py", "args.py", "common.py", "schema.py")


class ConfigError(ValueError):
  """A config that cannot be loaded, or a bad override: one line naming the file or the field.

  ``hint`` (printed by the ``xnn`` command on a second line) says what to try next.
  """

  def __init__(self, message: str, hint: str | None = None):
    super().__init__(message)
    self.hint = hint


def recipes() -> list[str]:
  """The names of the recipes in xnn/configs (``xnn train --config NAME``)."""
  return sorted(f[:-3] for f in os.listdir(HERE) if f.endswith(".py") and f not in NOT_RECIPES)


def config_path(spec: str) -> str:
  """``FILE[:ARG]`` with FILE a path, or the name of a recipe here (``cifar10_resnet:resnet20``, or
  ``configs/cifar10_resnet.py:resnet20`` as big_vision's layout names it, when no such file exists).

  Returns ``PATH[:ARG]``; a name that is neither an existing file nor a recipe, or a
  folder, raises ``ConfigError`` (a ``ValueError``) listing the recipes.
  """
  path, sep, arg = spec.partition(":")
  if os.path.isdir(path):
    raise ConfigError(f"config {path!r} is a folder; expected a Python file defining get_config(arg) "
                      f"or a recipe name: {', '.join(recipes())}")
  if os.path.exists(path):
    return spec
  name = path[:-3] if path.endswith(".py") else path
  candidate = os.path.join(HERE, os.path.basename(name) + ".py")
  # A recipe by name, or as big_vision's layout writes it (configs/NAME.py) when no such file is here.
  if (os.sep not in name or os.path.dirname(os.path.normpath(name)) == "configs") and os.path.exists(candidate):
    return candidate + sep + arg
  if os.sep in path:
    raise ConfigError(f"config file {path!r} does not exist (recipe names: {', '.join(recipes())})")
  raise ConfigError(f"config {path!r} is neither a file nor a recipe name; recipes: {', '.join(recipes())}")


def describe_error(e: BaseException) -> str:
  """``Type: first line`` of an exception, with the line of a syntax error."""
  if isinstance(e, SyntaxError) and e.lineno:
    return f"{type(e).__name__}: {e.msg} (line {e.lineno})"
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def load_module(path: str, name: str = "_xnn_config"):
  """Imports the Python file `path` as module `name`; any failure is a ``ConfigError`` naming the file."""
  if os.path.isdir(path):
    raise ConfigError(f"config {path!r} is a folder; expected a Python file defining get_config(arg)")
  if not os.path.isfile(path):
    raise ConfigError(f"config file {path!r} does not exist")
  try:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
      raise ImportError("not a Python source file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module          # as ml_collections does: dataclasses and pickling find the module
    spec.loader.exec_module(module)
  except Exception as e:  # the user's file: any error is named with the file
    raise ConfigError(f"config {path!r} cannot be loaded: {describe_error(e)}",
                      hint="--debug shows the traceback") from e
  return module


def load_config(spec: str) -> Any:
  """The ``ml_collections.ConfigDict`` that ``FILE[:ARG]``'s ``get_config(ARG)`` returns.

  FILE may be a recipe name (``config_path``). As in ml-collections, ``get_config()``
  is called without an argument when there is no ``:ARG``. A missing file, a folder,
  an import error, no ``get_config``, an exception inside it or a result that is not
  a ConfigDict or dict is a ``ConfigError`` naming the file.
  """
  import ml_collections
  path, sep, arg = config_path(spec).partition(":")
  module = load_module(path)
  get_config = getattr(module, "get_config", None)
  if not callable(get_config):
    raise ConfigError(f"config {path!r} defines no get_config(arg); expected a function returning an "
                      "ml_collections.ConfigDict")
  call = f"get_config({arg!r})" if sep else "get_config()"
  try:
    config = get_config(arg) if sep else get_config()
  except Exception as e:  # the user's code
    raise ConfigError(f"config {path!r}: {call} failed: {describe_error(e)}", hint="--debug shows the traceback") from e
  if isinstance(config, ml_collections.FrozenConfigDict):
    config = ml_collections.ConfigDict(config)
  elif isinstance(config, dict):
    config = ml_collections.ConfigDict(config)
  elif not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(f"config {path!r}: {call} returned {type(config).__name__} {_short(config)}; expected an "
                      "ml_collections.ConfigDict (or a dict)")
  return config


def _short(v: Any, width: int = 40) -> str:
  s = repr(v)
  return s if len(s) <= width else s[:width - 3] + "..."


def check_override(config: Any, path: str) -> None:
  """Makes the field ``path`` (``train.batch_size``) of `config` ready to be overridden from the command line.

  A field the config leaves out but the schema (``xnn/configs/default.py``) has is
  added with its default (``schema.resolve`` would merge it in anyway); an unknown
  field is a ``ConfigError`` naming the closest known one, as ``schema.resolve`` does.
  """
  import ml_collections
  from xnn.configs.default import get_config as default_config
  node, schema, done = config, default_config(), []
  for key in path.split("."):
    where = ".".join(done)
    if not isinstance(node, (ml_collections.ConfigDict, dict)):
      raise ConfigError(f"--config.{path}: config key {where!r} is a value ({type(node).__name__} "
                        f"{_short(node)}), not a section with a field {key!r}")
    known = set(node.keys()) | (set(schema.keys()) if isinstance(schema, ml_collections.ConfigDict) else set())
    if key not in node and key in known:
      with node.unlocked() if isinstance(node, ml_collections.ConfigDict) else contextlib.nullcontext():
        node[key] = copy.deepcopy(schema[key])
    elif key not in node:
      prefix = where + "." if where else ""
      close = difflib.get_close_matches(key, sorted(known), n=1)
      hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
      raise ConfigError(f"unknown config key {prefix + key!r} in --config.{path}{hint}; known keys under "
                        f"{where or 'config'}: {', '.join(sorted(known))}")
    node = node[key]
    schema = schema[key] if isinstance(schema, ml_collections.ConfigDict) and key in schema else None
    done.append(key)

