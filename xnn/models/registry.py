"""The model registry: `build(name, **kwargs)` returns a Flax linen module.

Every registered factory returns an `nn.Module` whose `__call__(x, train=False)`
maps a batch (NHWC images, or (N, T, F) sequences) to logits. Conventions shared
by every model:

* `num_classes`: size of the classifier output.
* `dtype`: compute dtype (parameters stay float32; `param_dtype` where exposed).
* BatchNorm running statistics live in the `batch_stats` collection; dropout
  draws from the `dropout` rng stream; both are active only when `train=True`.
  `ModelInfo.rng_streams` names every stream a model draws from when training
  (the sparse mixture of experts' noisy gating adds `moe`), so the training
  loop can pass one key per stream.
* Intermediate feature maps are sown into the `intermediates` collection by
  stage name (`self.sow("intermediates", "stage1", x)`), so
  `model.apply(v, x, mutable=["intermediates"])` returns them.
* A model with auxiliary classifiers (GoogLeNet with `aux_logits=True`,
  Inception-v3) returns `(logits, aux_logits, ...)` when `train=True` and only
  the logits otherwise; their parameters exist only in a train-mode `init`, so
  `init_variables` initialises every model in train mode, as training does.
  `ModelInfo.aux_loss_weight` is the published weight of each auxiliary loss.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn

from xnn.registry import Registry


@dataclasses.dataclass(frozen=True)
class ModelInfo:
  """What the registry knows about a model before building it."""
  name: str
  family: str              # serial | parallel | dense | residual | recurrent | attention
  input_shape: tuple[int, ...]   # default input, without batch: (H, W, C) or (T, F)
  num_classes: int         # default number of classes (1000 ImageNet, 10 CIFAR/digits)
  factory: Callable[..., nn.Module]
  description: str = ""
  rng_streams: tuple[str, ...] = ("dropout",)   # random streams drawn from when train=True
  aux_loss_weight: float = 0.0   # weight of each auxiliary classifier's loss (the paper's), if it has any


MODELS: Registry[ModelInfo] = Registry("model")


def register(name: str, *, family: str, input_shape: tuple[int, ...],
             num_classes: int = 1000, description: str = "", rng_streams: tuple[str, ...] = ("dropout",),
             aux_loss_weight: float = 0.0,
             **preset: Any) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
  """Decorator registering `factory(**kwargs) -> nn.Module` under `name`.

  `preset` keyword arguments are bound into the factory, so one module class can
  be registered under several names (resnet18, resnet34, ...). `rng_streams`
  (not passed to the factory) are the random streams the model draws from when
  `train=True`; `aux_loss_weight` (not passed either) weighs each auxiliary
  classifier's loss in training.
  """

  def deco(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    def bound(**kwargs: Any) -> nn.Module:
      kw = {"num_classes": num_classes, **preset, **kwargs}
      return factory(**kw)

    bound.__doc__ = factory.__doc__
    MODELS.add(name, ModelInfo(name, family, tuple(input_shape), num_classes,
                               bound, description or (factory.__doc__ or "").strip().split("\n")[0],
                               tuple(rng_streams), float(aux_loss_weight)))
    return factory

  return deco


def build(name: str, **kwargs: Any) -> nn.Module:
  """Builds the registered model `name`; unknown names list what is available."""
  return MODELS.get(name).factory(**kwargs)


def init_variables(model: nn.Module, inputs: tuple[Any, ...], rng: Any,
                   rng_streams: tuple[str, ...] = ("dropout",)) -> dict[str, Any]:
  """``model.init`` in train mode: every variable training uses, auxiliary classifiers included.

  Parameters are drawn from ``rng`` alone (the same values whatever the mode: flax derives
  each parameter's key from ``rng`` and its path); the random streams get ``rng`` too.
  BatchNorm running statistics keep their initial values (flax does not update them while
  initialising).
  """
  return model.init({"params": rng, **{s: rng for s in rng_streams}}, *inputs, train=True)


def info(name: str) -> ModelInfo:
  return MODELS.get(name)


def names(family: str | None = None) -> list[str]:
  return MODELS.names(None if family is None else (lambda m: m.family == family))


def same_vocabulary(cls: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
  """Factory of a token-to-token model whose input vocabulary (`vocab_size`) defaults to its output one."""

  def factory(num_classes: int, **kwargs: Any) -> nn.Module:
    kwargs.setdefault("vocab_size", num_classes)
    return cls(num_classes=num_classes, **kwargs)

  factory.__doc__ = cls.__doc__
  return factory
