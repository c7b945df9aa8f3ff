"""Configs: the schema (``default``), its checks (``schema``), shared pieces (``common``),
the argument parser (``args``) and the recipes (``cifar10_resnet``, ``cifar10_course``,
``cifar10_fast``, ``digits_lenet5``, ``digits_rnn``, ``seq2seq``).

They live in the package, so experiments import them (``from xnn.configs import
cifar10_resnet``) and ``xnn train --config NAME[:ARG]`` finds a recipe by name from
any directory after ``pip install``.
"""

from __future__ import annotations

import os

HERE = os.path.dirname(os.path.abspath(__file__))


def config_path(spec: str) -> str:
  """``FILE[:ARG]`` with FILE a path, or the name of a recipe here (``cifar10_resnet:resnet20``).

  Returns ``PATH[:ARG]``; a name that is neither an existing file nor a recipe raises
  ``ValueError`` listing the recipes.
  """
  path, sep, arg = spec.partition(":")
  if os.path.exists(path):
    return spec
  name = path[:-3] if path.endswith(".py") else path
  candidate = os.path.join(HERE, os.path.basename(name) + ".py")
  if os.sep not in name and os.path.exists(candidate):
    return candidate + sep + arg
  recipes = sorted(f[:-3] for f in os.listdir(HERE) if f.endswith(".py") and f not in (
      "__init__.py", "args.py", "common.py", "schema.py"))
  raise ValueError(f"config {path!r} is neither a file nor a recipe name; recipes: {', '.join(recipes)}")
