"""Parameter paths are part of a checkpoint's format: every registered model keeps its tree.

For each model, the variables of ``init`` at its default input (paths, shapes and dtypes
of every parameter and BatchNorm statistic, ``jax.eval_shape``: nothing is allocated)
are hashed and compared with ``tests/data/model_trees.json``. A change that renames,
reshapes or moves a parameter breaks the checkpoints of existing runs; when it is meant
(a new model, or a model whose parameters really change), regenerate the file:

    python tests/test_model_trees.py --write
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

import jax
import jax.numpy as jnp
import pytest

import xnn.models as M

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "model_trees.json")


def tree_of(name: str) -> dict:
  """{"leaves": count, "sha256": hash of [(path, shape, dtype), ...]} of ``name``'s variables."""
  info = M.info(name)
  model = M.build(name)
  rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
  error = None
  for dtype in (jnp.float32, jnp.int32):            # images and features; token models take ids
    x = jax.ShapeDtypeStruct((1, *info.input_shape), dtype)
    try:
      variables = jax.eval_shape(lambda x: model.init(rngs, x, train=False), x)
    except (TypeError, ValueError) as e:
      error = e
      continue
    leaves = [(jax.tree_util.keystr(p), list(v.shape), str(v.dtype))
              for p, v in jax.tree_util.tree_flatten_with_path(variables)[0]]
    return {"leaves": len(leaves), "sha256": hashlib.sha256(json.dumps(leaves).encode()).hexdigest()}
  raise error


def _recorded() -> dict:
  with open(DATA) as f:
    return json.load(f)


@pytest.mark.parametrize("name", M.names())
def test_variables_tree_is_unchanged(name):
  recorded = _recorded()
  assert name in recorded, f"{name} is not in {DATA}: run python tests/test_model_trees.py --write"
  assert tree_of(name) == recorded[name], (
      f"the parameter tree of {name} changed: existing checkpoints no longer load. "
      "If that is intended, run python tests/test_model_trees.py --write")


def test_every_recorded_model_is_registered():
  assert sorted(_recorded()) == M.names()


if __name__ == "__main__":
  if sys.argv[1:] != ["--write"]:
    sys.exit(__doc__)
  trees = {n: tree_of(n) for n in M.names()}
  with open(DATA, "w") as f:
    json.dump(trees, f, indent=1, sort_keys=True)
    f.write("\n")
  print(f"wrote {len(trees)} models to {DATA}")
