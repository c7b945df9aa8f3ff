"""Learning-rate schedules and optimisers (optax), built from the config.

Schedules (``config.schedule.name``):

* ``constant``       the peak rate throughout.
* ``piecewise``      He et al. 2015 (sec. 4.2): the rate times ``scale`` at each
                     boundary step (0.1, /10 at 32k and 48k, stop at 64k), or
                     times the matching entry of ``scales`` (ResNet-110's warmup:
                     0.01, x10 at 400, x0.1 at 32k and 48k).
* ``warmup_cosine``  linear warmup from ``init_value`` to the peak over
                     ``warmup`` epochs, then a cosine decay to ``end_value``.
                     ``cosine="half"`` is the usual half period
                     (end + (peak-end)(1+cos(pi t))/2, optax/SGDR);
                     ``cosine="quarter"`` is end + (peak-end)cos(pi t/2), the
                     course code's schedule (the design homework's training log:
                     1e-5 -> 1e-3 over 5 epochs, back to 1e-5 at epoch 29, 0.000505
                     -- the midpoint -- at epoch 21, i.e. t = 2/3 with t = (epoch-5)/24).
* ``warmup_linear``  linear warmup from ``init_value`` to the peak over ``warmup``
                     epochs, then linear to ``end_value`` at the end: the
                     piecewise-linear "one-cycle" of Page's ResNet-9 recipe
                     (0 -> 0.4 at epoch 5 -> 0 at epoch 24, per step).

``unit="epoch"`` holds the rate constant within an epoch and, for the cosine,
puts t = 1 at the last epoch (as the course's per-epoch callback does);
``unit="step"`` changes it every step with t = (step - warmup)/(total - warmup).

Optimisers (``config.optimizer.name``): ``sgd`` and ``adam`` add the L2 term
``weight_decay * param`` to the gradient (PyTorch's ``weight_decay``), ``adamw`` decays
decoupled from the gradient (Loshchilov & Hutter 2019). ``weight_decay_mask`` chooses the
leaves: ``all`` (He et al. 2015) or ``no_bn_bias`` (``decay_mask``: no decay on
normalisation scales/offsets and biases, as the flax ImageNet example and most CIFAR
recipes do).
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import optax

from xnn.configs import schema


def create_learning_rate_fn(cfg: Any, peak: float, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
  """An optax schedule ``step -> learning rate`` for ``config.schedule``."""
  name = cfg.name
  if name == "constant":
    return optax.constant_schedule(peak)
  if name == "piecewise":
    bounds = [int(b) for b in cfg.boundaries]
    if not bounds:
      raise ValueError("schedule.name='piecewise' needs schedule.boundaries, e.g. (32000, 48000)")
    scales = [float(x) for x in cfg.scales] or [cfg.scale] * len(bounds)
    if len(scales) != len(bounds):
      raise ValueError(f"schedule.scales has {len(scales)} entries for {len(bounds)} boundaries")
    return optax.piecewise_constant_schedule(peak, dict(zip(bounds, scales)))
  if name not in ("warmup_cosine", "warmup_linear"):
    raise ValueError(f"schedule.name must be constant, piecewise, warmup_cosine or warmup_linear, got {name!r}")
  if name == "warmup_cosine" and cfg.cosine not in ("half", "quarter"):
    raise ValueError(f"schedule.cosine must be 'half' or 'quarter', got {cfg.cosine!r}")
  if cfg.unit not in ("step", "epoch"):
    raise ValueError(f"schedule.unit must be 'step' or 'epoch', got {cfg.unit!r}")
  init, end = cfg.init_value, cfg.end_value

  if cfg.unit == "epoch":
    warm = float(cfg.warmup)
    last = total_steps // steps_per_epoch - 1   # index of the last epoch

    def to_pos(step):
      return jnp.floor_divide(step, steps_per_epoch).astype(jnp.result_type(float)), warm, max(last - warm, 1e-9)
  else:
    warm = float(cfg.warmup) * steps_per_epoch

    def to_pos(step):
      return jnp.asarray(step, jnp.result_type(float)), warm, max(total_steps - warm, 1e-9)

  def schedule(step):
    pos, w, span = to_pos(step)
    warm_lr = init + (peak - init) * pos / max(w, 1e-9)
    t = jnp.clip((pos - w) / span, 0.0, 1.0)
    if name == "warmup_linear":
      shape = 1.0 - t
    else:
      shape = jnp.cos(jnp.pi / 2 * t) if cfg.cosine == "quarter" else 0.5 * (1 + jnp.cos(jnp.pi * t))
    return jnp.where(pos < w, warm_lr, end + (peak - end) * shape)

  return schedule


# Parameter names that are biases or normalisation scales whatever their rank: flax's ``bias`` and
# ``scale`` (Dense, Conv, BatchNorm, LayerNorm), the zoo's ``W_q_bias``-style attention biases (heads x
# features) and the mixture-of-experts' per-expert ``b1``/``b2``.
NO_DECAY_NAMES = re.compile(r"(.*_)?bias|scale|b\d*", re.IGNORECASE)
WEIGHT_DECAY_MASKS = schema.CHOICES["optimizer.weight_decay_mask"]


def _leaf_name(path: tuple) -> str:
  """The last key of a tree path: a dict key, an attribute name or a sequence index."""
  key = path[-1] if path else None
  return str(getattr(key, "key", getattr(key, "name", getattr(key, "idx", key))))


def decay_mask(params: Any) -> Any:
  """``params``' tree of bools: True where ``optimizer.weight_decay_mask='no_bn_bias'`` decays the leaf.

  A leaf is decayed when it has more than one axis (the rule of the flax ImageNet example,
  google/flax examples/imagenet/train.py: ``sum(jnp.sum(x**2) for x in params if x.ndim > 1)``,
  which leaves out every BatchNorm scale/offset and every dense/conv bias) and is not named as a bias or
  normalisation scale (``NO_DECAY_NAMES``: biases of more than one axis, such as per-head attention biases).
  """
  return jax.tree_util.tree_map_with_path(
      lambda path, x: bool(jnp.ndim(x) > 1 and not NO_DECAY_NAMES.fullmatch(_leaf_name(path))), params)


def decayed_paths(params: Any, mask: str = "no_bn_bias") -> dict[str, bool]:
  """``{path: decayed?}`` for every parameter (paths as ``jax.tree_util.keystr``) under ``mask``."""
  flags = decay_mask(params) if mask == "no_bn_bias" else jax.tree.map(lambda _: True, params)
  return {jax.tree_util.keystr(p): f for p, f in jax.tree_util.tree_leaves_with_path(flags)}


def create_optimizer(cfg: Any, lr_fn: optax.Schedule) -> optax.GradientTransformation:
  """SGD (momentum, Nesterov) with L2, Adam with L2, or AdamW, from ``config.optimizer``.

  ``weight_decay_mask``: ``all`` decays every parameter, BatchNorm scales/offsets and biases included (He et
  al. 2015, sec. 4.2, give a decay of 1e-4 without naming parameters); ``no_bn_bias`` only the leaves
  ``decay_mask`` selects (optax's ``mask``: the other leaves' updates are
  those of the optimiser without weight decay, exactly).
  """
  mask = getattr(cfg, "weight_decay_mask", "all")
  if mask not in WEIGHT_DECAY_MASKS:
    raise ValueError(f"optimizer.weight_decay_mask must be one of {', '.join(WEIGHT_DECAY_MASKS)}, got {mask!r}")
  mask_fn = decay_mask if mask == "no_bn_bias" else None
  chain = []
  if cfg.grad_clip_norm:
    chain.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
  if cfg.name in ("sgd", "adam") and cfg.weight_decay:
    chain.append(optax.add_decayed_weights(cfg.weight_decay, mask=mask_fn))   # coupled L2, as PyTorch's SGD/Adam
  if cfg.name == "sgd":
    chain.append(optax.sgd(lr_fn, momentum=cfg.momentum or None, nesterov=cfg.nesterov))
  elif cfg.name == "adam":
    chain.append(optax.adam(lr_fn, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps))
  elif cfg.name == "adamw":
    chain.append(optax.adamw(lr_fn, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay,
                             mask=mask_fn))
  else:
    raise ValueError(f"optimizer.name must be sgd, adam or adamw, got {cfg.name!r}")
  return optax.chain(*chain)
