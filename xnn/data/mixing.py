"""Mixup and CutMix of a training batch, inside the jitted train step (so both input paths get them).

* Mixup (Zhang et al. 2018, eq. 1): x = lam * x_i + (1 - lam) * x_j and the target
  lam * y_i + (1 - lam) * y_j, with lam ~ Beta(alpha, alpha).
* CutMix (Yun et al. 2019, eqs. 1-2 and their code's ``rand_bbox``): a box of
  ``int(H sqrt(1 - lam)) x int(W sqrt(1 - lam))`` pixels centred at a uniformly drawn
  pixel and clipped to the image is cut from x_j and pasted into x_i; the target
  weight of x_i is the share of x_i's pixels left after clipping,
  1 - box area / (H W), so labels are mixed in the proportion of the pixels.

One lam per batch and x_j = the batch in a random order, as the papers' code does.
With both ``alpha``s > 0 each batch takes one of the two, CutMix with probability
``switch_prob`` (0.5, as timm's ``Mixup``). The mixed batch carries the soft target under
``SOFT_TARGET_KEY`` (N, classes); ``xnn.train.tasks`` trains on it with soft-label
cross-entropy, and the integer labels stay for the training accuracy.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

SOFT_TARGET_KEY = "soft_target"


def cutmix_box(rng: jax.Array, lam: jax.Array, height: int, width: int) -> tuple[jax.Array, ...]:
  """(y0, y1, x0, x1) of the pasted box: ``int(side * sqrt(1 - lam))`` sides around a uniform centre, clipped."""
  ky, kx = jax.random.split(rng)
  cut = jnp.sqrt(1.0 - lam)
  cut_h, cut_w = (height * cut).astype(jnp.int32), (width * cut).astype(jnp.int32)
  cy = jax.random.randint(ky, (), 0, height)
  cx = jax.random.randint(kx, (), 0, width)
  return (jnp.clip(cy - cut_h // 2, 0, height), jnp.clip(cy + cut_h // 2, 0, height),
          jnp.clip(cx - cut_w // 2, 0, width), jnp.clip(cx + cut_w // 2, 0, width))


def mix_batch(batch: dict[str, jax.Array], rng: jax.Array, *, image_key: str, label_key: str, num_classes: int,
              mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0,
              switch_prob: float = 0.5) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
  """(the mixed batch with its soft targets, ``{"lam", "share", "cutmix", "order"}``).

  ``lam`` is the drawn lam; ``share`` the target weight of x_i: ``lam`` for Mixup, the share of x_i's
  pixels for CutMix; ``cutmix`` whether CutMix was applied; ``order[i]`` = j, the example mixed into x_i.
  """
  if mixup_alpha <= 0 and cutmix_alpha <= 0:
    raise ValueError("mix_batch needs mixup_alpha > 0 or cutmix_alpha > 0")
  x, y = batch[image_key], batch[label_key]
  n, h, w = x.shape[:3]
  k_perm, k_mix, k_cut, k_box, k_switch = jax.random.split(rng, 5)
  order = jax.random.permutation(k_perm, n)
  onehot = jax.nn.one_hot(y, num_classes, dtype=jnp.float32)
  other_x, other_target = x[order], onehot[order]

  def mixup():
    lam = jax.random.beta(k_mix, mixup_alpha, mixup_alpha)
    return lam, lam, (lam * x + (1.0 - lam) * other_x).astype(x.dtype)

  def cutmix():
    lam = jax.random.beta(k_cut, cutmix_alpha, cutmix_alpha)
    y0, y1, x0, x1 = cutmix_box(k_box, lam, h, w)
    rows, cols = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
    inside = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)
    share = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
    return lam, share.astype(jnp.float32), jnp.where(inside[None, :, :, None], other_x, x)

  if mixup_alpha > 0 and cutmix_alpha > 0:
    use_cut = jax.random.bernoulli(k_switch, switch_prob)
    (lam_m, share_m, x_m), (lam_c, share_c, x_c) = mixup(), cutmix()
    lam, share, mixed = (jnp.where(use_cut, lam_c, lam_m), jnp.where(use_cut, share_c, share_m),
                         jnp.where(use_cut, x_c, x_m))
  elif cutmix_alpha > 0:
    use_cut = jnp.bool_(True)
    lam, share, mixed = cutmix()
  else:
    use_cut = jnp.bool_(False)
    lam, share, mixed = mixup()
  target = share * onehot + (1.0 - share) * other_target
  out: dict[str, Any] = {**batch, image_key: mixed, SOFT_TARGET_KEY: target}
  return out, {"lam": lam, "share": share, "cutmix": use_cut, "order": order}
