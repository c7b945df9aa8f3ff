"""Convolution gradients on XLA:CPU: XLA's own vs ``xnn.ops.conv`` (tap products).

    python benchmarks/conv_grad.py [--runs 7] [--steps 10] [--method auto|taps|im2col]
                                   [--extra] [--compare-methods] [--skip-layers] [--skip-model]

Per layer shape (NHWC input, HWIO 3x3 kernel, padding 1): milliseconds of the jitted
forward, input gradient and weight gradient with XLA's convolution vs xnn's, the
weight-gradient speed-up, and the largest weight-gradient difference relative to its
scale.  Then a full ResNet-20 train step (batch 128, SGD momentum, BN) built with
Flax's default conv vs with ``nn.Conv(conv_general_dilated=xnn.ops.conv_general_dilated)``
(a subclass swapped in for ``flax.linen.Conv`` during model construction; xnn/models is
not edited).  Times are medians of ``--runs`` runs after one warm-up; compare the
ratios, which are measured in the same run on a shared machine.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from xnn.ops import conv as xconv

DN = ("NHWC", "HWIO", "NHWC")


def _median_ms(f, *args, runs: int) -> float:
  """Median wall time (ms) of ``f(*args)`` over ``runs`` runs after one warm-up call."""
  jax.block_until_ready(f(*args))
  ts = []
  for _ in range(runs):
    t = time.perf_counter()
    jax.block_until_ready(f(*args))
    ts.append(time.perf_counter() - t)
  return 1e3 * statistics.median(ts)


def layer_times(conv_fn, x, w, g, stride, pad, groups, runs):
  """(forward, input-grad, weight-grad) ms and the weight gradient of ``conv_fn``."""
  def f(x, w):
    return conv_fn(x, w, (stride, stride), ((pad, pad), (pad, pad)), dimension_numbers=DN,
                   feature_group_count=groups)
  fwd = jax.jit(f)
  dx = jax.jit(lambda x, w, g: jax.vjp(lambda x: f(x, w), x)[1](g)[0])
  dw = jax.jit(lambda x, w, g: jax.vjp(lambda w: f(x, w), w)[1](g)[0])
  return (_median_ms(fwd, x, w, runs=runs), _median_ms(dx, x, w, g, runs=runs),
          _median_ms(dw, x, w, g, runs=runs), dw(x, w, g))


RESNET_SHAPES = [  # (name, N, H, Cin, Cout, k, stride, groups)
    ("r20 32x32x16 s1", 128, 32, 16, 16, 3, 1, 1),
    ("r20 32->16 16->32 s2", 128, 32, 16, 32, 3, 2, 1),
    ("r20 16x16x32 s1", 128, 16, 32, 32, 3, 1, 1),
    ("r20 16->8 32->64 s2", 128, 16, 32, 64, 3, 2, 1),
    ("r20 8x8x64 s1", 128, 8, 64, 64, 3, 1, 1),
    ("r50 56x56x64 s1", 32, 56, 64, 64, 3, 1, 1),
]
EXTRA_SHAPES = [
    ("r20 stem 32x32x3->16 s1", 128, 32, 3, 16, 3, 1, 1),
    ("r50 stem 7x7 s2 3->64", 8, 224, 3, 64, 7, 2, 1),
    ("r50 1x1 56x56 64->256", 32, 56, 64, 256, 1, 1, 1),
    ("r50 1x1 s2 56->28 256->512", 32, 56, 256, 512, 1, 2, 1),
    ("resnext 3x3 g32 56x56x128", 32, 56, 128, 128, 3, 1, 32),
    ("grouped g2 32x32x32", 128, 32, 32, 32, 3, 1, 2),
    ("depthwise 3x3 56x56x64", 32, 56, 64, 64, 3, 1, 64),
    ("depthwise 3x3 s2 56->28 x64", 32, 56, 64, 64, 3, 2, 64),
]


def bench_layers(runs: int, extra: bool = False, compare_methods: bool = False) -> None:
  """Prints per-layer forward / input-grad / weight-grad ms, XLA vs xnn."""
  print(f"{'layer':30s} {'fwd xla':>8s} {'fwd xnn':>8s} {'dx xla':>8s} {'dx xnn':>8s} "
        f"{'dw xla':>8s} {'dw xnn':>8s} {'dw x':>6s} {'dw rel err':>10s}")
  rng = np.random.default_rng(0)
  for name, n, h, c, o, k, s, grp in RESNET_SHAPES + (EXTRA_SHAPES if extra else []):
    p = k // 2
    x = jnp.asarray(rng.standard_normal((n, h, h, c)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((k, k, c // grp, o)) / np.sqrt(k * k * c / grp),
                    jnp.float32)
    ho = (h + 2 * p - k) // s + 1
    g = jnp.asarray(rng.standard_normal((n, ho, ho, o)), jnp.float32)
    fa, xa, wa, ra = layer_times(lax.conv_general_dilated, x, w, g, s, p, grp, runs)
    fb, xb, wb, rb = layer_times(xconv.conv_general_dilated, x, w, g, s, p, grp, runs)
    err = float(jnp.max(jnp.abs(ra - rb)) / jnp.max(jnp.abs(ra)))
    print(f"{name:30s} {fa:8.2f} {fb:8.2f} {xa:8.2f} {xb:8.2f} {wa:8.2f} {wb:8.2f} "
          f"{wa / wb:6.2f} {err:10.1e}", flush=True)
    if compare_methods:
      res = []
      for meth in (("taps", "taps_t", "im2col") if grp == 1 else ("taps", "taps_dot")):
        pads = ((p, p), (p, p))
        f = jax.jit(lambda x, g, meth=meth: xconv.weight_grad(
            x, g, w.shape, (s, s), pads, (1, 1), grp, method=meth))
        res.append(f"{meth} {_median_ms(f, x, g, runs=runs):.2f}")
      print(f"{'':30s} weight-grad formulations alone (ms): " + ", ".join(res), flush=True)


@contextlib.contextmanager
def patched_flax_conv(conv_fn):
  """Within the block, ``flax.linen.Conv`` defaults to ``conv_general_dilated=conv_fn``."""
  import flax.linen as nn
  orig = nn.Conv

  class Conv(orig):  # same class name, so auto-generated parameter names do not change
    conv_general_dilated: object = conv_fn

  nn.Conv = Conv
  try:
    yield
  finally:
    nn.Conv = orig


def train_step_ms(conv_fn, batch: int, steps: int, model_name: str = "resnet20"):
  """Median ms of a jitted ResNet train step (SGD momentum, weight decay) using conv_fn."""
  import optax
  from xnn import models
  from xnn.train.step import create_train_state, make_train_step
  with patched_flax_conv(conv_fn):
    model = models.build(model_name, num_classes=10)
    tx = optax.chain(optax.add_decayed_weights(1e-4), optax.sgd(0.1, momentum=0.9))
    state = create_train_state(model, tx, jax.random.key(0), (jnp.zeros((1, 32, 32, 3)),))
    step = jax.jit(make_train_step(model, input_keys=("image",), label_key="label",
                                   mask_key=None, lr_fn=lambda s: 0.1))
    rng = np.random.default_rng(0)
    b = {"image": jnp.asarray(rng.standard_normal((batch, 32, 32, 3)), jnp.float32),
         "label": jnp.asarray(rng.integers(0, 10, batch), jnp.int32)}
    key = jax.random.key(1)
    new_state, m = step(state, b, key)
    jax.block_until_ready(m)
    ts = []
    for _ in range(steps):
      t = time.perf_counter()
      _, m = step(state, b, key)
      jax.block_until_ready(m)
      ts.append(time.perf_counter() - t)
  return 1e3 * statistics.median(ts), new_state


def bench_model(batch: int, steps: int) -> None:
  ta, sa = train_step_ms(lax.conv_general_dilated, batch, steps)
  tb, sb = train_step_ms(xconv.conv_general_dilated, batch, steps)
  diffs = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), sa.params, sb.params)
  print(f"\nResNet-20 train step, batch {batch}: XLA conv {ta:.1f} ms ({batch / ta * 1e3:.0f} img/s),"
        f" xnn conv {tb:.1f} ms ({batch / tb * 1e3:.0f} img/s), speed-up {ta / tb:.2f}x;"
        f" max |param difference| after one step {max(jax.tree.leaves(diffs)):.1e}")


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--runs", type=int, default=7)
  ap.add_argument("--steps", type=int, default=10)
  ap.add_argument("--batch", type=int, default=128)
  ap.add_argument("--extra", action="store_true",
                  help="also stems, 1x1, grouped and depthwise layers")
  ap.add_argument("--method", default="auto", choices=("auto", "taps", "taps_t", "im2col"))
  ap.add_argument("--compare-methods", action="store_true",
                  help="also time each weight-gradient formulation alone")
  ap.add_argument("--skip-layers", action="store_true")
  ap.add_argument("--skip-model", action="store_true")
  a = ap.parse_args()
  xconv.WGRAD_METHOD = a.method
  print(f"jax {jax.__version__}, backend {jax.default_backend()}, {jax.devices()[0].device_kind},"
        f" weight-grad method {a.method}")
  if not a.skip_layers:
    bench_layers(a.runs, a.extra, a.compare_methods)
  if not a.skip_model:
    bench_model(a.batch, a.steps)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
