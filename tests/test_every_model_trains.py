"""No registered model that cannot train, and none whose checkpoint format changes unnoticed.

Every registered model goes through the state and step ``xnn train`` builds
(``tests/train_steps.py``: ``create_train_state``, a train-mode init with auxiliary
classifiers, and ``make_train_step`` with the task its data poses and the model's
published auxiliary-loss weight) under ``jax.eval_shape`` at its default input: every
shape, gradient and update is traced; nothing is compiled or allocated. The traced
convolutions are XLA's (``train.cpu_conv='xla'``): the CPU kernels are a setting of the
same step, which the real steps of the family tests run (``test_models_*.py``,
``test_recurrent.py``, ``test_attention.py``: a reduced instance of every family through
``train_steps.one_step``, compiled).

The state's parameters and BatchNorm statistics -- what a checkpoint holds -- are hashed
(paths, shapes, dtypes) and compared with ``tests/data/model_trees.json``. A change that
renames, reshapes or moves a parameter breaks the checkpoints of existing runs; when it is
meant (a new model, or a model whose parameters really change), regenerate the file:

    python tests/test_every_model_trains.py --write
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys

import jax
import pytest

import xnn.models as M
from xnn.ops import conv_setting
from train_steps import one_step, task_and_batch

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "model_trees.json")


def abstract_step(name: str, **kwargs):
  """(initial state, state after one step, metrics) of ``name``, traced at its default input."""
  model, task, batch = task_and_batch(name, **kwargs)
  with conv_setting(cpu="xla"):
    return jax.eval_shape(functools.partial(one_step, model, task, rng_streams=M.info(name).rng_streams), batch)


def tree_record(state) -> dict:
  """{"leaves": count, "sha256": hash of [(path, shape, dtype), ...]} of a state's params and batch_stats."""
  variables = {"params": state.params}
  if state.batch_stats is not None:
    variables["batch_stats"] = state.batch_stats
  leaves = [(jax.tree_util.keystr(p), list(v.shape), str(v.dtype))
            for p, v in jax.tree_util.tree_flatten_with_path(variables)[0]]
  return {"leaves": len(leaves), "sha256": hashlib.sha256(json.dumps(leaves).encode()).hexdigest()}


def _recorded() -> dict:
  with open(DATA) as f:
    return json.load(f)


@pytest.mark.parametrize("name", M.names())
def test_every_registered_model_takes_the_train_step(name):
  state, after, metrics = abstract_step(name)
  assert jax.tree.structure(after) == jax.tree.structure(state)
  same = jax.tree.map(lambda a, b: a.shape == b.shape and a.dtype == b.dtype, after, state)
  assert all(jax.tree.leaves(same))
  assert {"loss", "accuracy", "grad_norm", "learning_rate"} <= set(metrics)
  assert all(m.shape == () for m in metrics.values())
  recorded = _recorded()
  assert name in recorded, f"{name} is not in {DATA}: run python tests/test_every_model_trains.py --write"
  assert tree_record(state) == recorded[name], (
      f"the parameter tree of {name} changed: existing checkpoints no longer load. "
      "If that is intended, run python tests/test_every_model_trains.py --write")


def test_every_recorded_model_is_registered():
  assert sorted(_recorded()) == M.names()


def test_auxiliary_heads_are_trained_parameters():
  # torchvision inception_v3() has 27,161,264 parameters (Inception_V3_Weights.IMAGENET1K_V1 num_params),
  # 3,326,696 of them in AuxLogits; googlenet(aux_logits=True) has 13,004,888 (two InceptionAux heads).
  for name, kwargs, total in (("inception_v3", {}, 27_161_264), ("googlenet", {"aux_logits": True}, 13_004_888)):
    state, _, metrics = abstract_step(name, **kwargs)
    assert sum(x.size for x in jax.tree.leaves(state.params)) == total
    assert "aux_loss" in metrics
  # Szegedy et al. 2014 sec. 5 (0.3 per head); TF-slim train_image_classifier.py (0.4 on AuxLogits).
  assert M.info("googlenet").aux_loss_weight == 0.3 and M.info("inception_v3").aux_loss_weight == 0.4


def test_inception_v3_auxiliary_head_needs_299():
  with pytest.raises(ValueError, match="17x17 grid of a 299x299 input"):
    abstract_step("inception_v3", shape=(298, 298, 3))
  abstract_step("inception_v3", shape=(75, 75, 3), aux_logits=False)     # torchvision's minimum without it


if __name__ == "__main__":
  if sys.argv[1:] != ["--write"]:
    sys.exit(__doc__)
  trees = {n: tree_record(abstract_step(n)[0]) for n in M.names()}
  with open(DATA, "w") as f:
    json.dump(trees, f, indent=1, sort_keys=True)
    f.write("\n")
  print(f"wrote {len(trees)} models to {DATA}")
