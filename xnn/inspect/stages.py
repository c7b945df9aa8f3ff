"""What a model sows into its ``intermediates`` collection: stage outputs and attention weights.

Every model of the zoo sows its stage outputs (``self.sow("intermediates", "stage1", x)``, see
``xnn.models.registry``); Transformers sow each layer's output and every attention layer its weights
(``attention_weights``, (N, H, M_q, M_kv), or (N, M_q, M_kv) for the lecture's encoder-attention-decoder
layer). The *stages* of a model are its outermost sown values other than attention weights: the CNNs'
top-level ``stem``/``stageN`` (not the values their blocks sow inside, such as MobileNet V2's
``expand``), a Transformer encoder's ``encoder/outputN``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ATTENTION = "attention_weights"
ROUTING = ("moe_gates",)          # gates of the sparse mixture of experts: routing, not a stage


def sown(model: Any, variables: Any, *inputs: Any) -> tuple[Any, dict[str, Any]]:
  """(outputs, ``{path: value}``) of ``model.apply(variables, *inputs, train=False)``, with every value it
  sows into ``intermediates`` by its '/'-joined path (the last value where a module sowed several)."""
  from flax import traverse_util
  outputs, state = model.apply(variables, *inputs, train=False, mutable=["intermediates"])
  flat = traverse_util.flatten_dict(dict(state.get("intermediates", {})), sep="/")
  return outputs, {path: value[-1] if isinstance(value, tuple) else value for path, value in flat.items()}


def sown_order(model: Any, variables: Any, *inputs: Any) -> list[str]:
  """The sown paths in the order the model sowed them. They are read while the model is traced (abstractly,
  nothing is computed), because a jitted function returns its dicts with their keys sorted (``stem`` after
  ``stage3``)."""
  import jax
  order: list[str] = []

  def trace(v, *xs):
    order.extend(sown(model, v, *xs)[1])
    return 0

  jax.eval_shape(trace, variables, *inputs)
  return order


def stage_paths(paths: list[str]) -> list[str]:
  """The stages among sown paths: the outermost ones that are not attention weights or routing, in order."""
  candidates = [p for p in paths if p.split("/")[-1] != ATTENTION and p.split("/")[-1] not in ROUTING]
  if not candidates:
    return []
  depth = min(p.count("/") for p in candidates)
  return [p for p in candidates if p.count("/") == depth]


def attention_paths(paths: list[str]) -> list[str]:
  """The sown attention weights, in the order the model computed them."""
  return [p for p in paths if p.split("/")[-1] == ATTENTION]


def stage_outputs(model: Any, variables: Any, *inputs: Any) -> dict[str, np.ndarray]:
  """``{stage: its output}`` for the inputs, as NumPy arrays, in the model's order."""
  _, values = sown(model, variables, *inputs)
  return {p: np.asarray(values[p]) for p in stage_paths(sown_order(model, variables, *inputs))}


def shape_text(shape: tuple[int, ...]) -> str:
  """A stage's shape without the batch: ``8x8x64`` (H x W x C) or ``10x64`` (T x F)."""
  return "x".join(map(str, shape[1:]))
