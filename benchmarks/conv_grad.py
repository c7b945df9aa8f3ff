"""Convolutions and their gradients on the CPU: XLA's own vs xnn's (oneDNN or pure JAX).

    python benchmarks/conv_grad.py [--runs 7] [--steps 10] [--method auto|conv|taps|im2col]
                                   [--conv auto|onednn|xnn] [--extra] [--compare-methods]
                                   [--in-loop] [--torch] [--skip-layers] [--skip-model]

``--conv`` picks xnn's side of the per-layer tables: "auto" (oneDNN's kernels
through ``xnn.ops.onednn`` where available), "onednn", or "xnn" (the pure-JAX
gradients of ``xnn.ops.conv``, weight-gradient formulation ``--method``).

Per layer shape (NHWC input, HWIO kernel, 'same' padding): milliseconds of the jitted
forward, input gradient and weight gradient with XLA's convolution vs xnn's, the
weight-gradient speed-up, and the largest weight-gradient difference relative to its
scale.  ``--in-loop`` also times each weight gradient inside a ``lax.scan`` of 8
iterations (per iteration), where XLA:CPU's own is slow (jax-ml/jax#12868).
``--torch`` times the same layers in PyTorch (oneDNN, channels-last).  Then a
full ResNet-20 train step (batch 128, SGD momentum, BN) with the model zoo's
convolutions as XLA's, xnn's pure-JAX ones and oneDNN's (``use_cpu_conv``), as one
step per dispatch and as 8 steps in one ``lax.scan``.  Times are medians of ``--runs`` runs after one
warm-up; compare the ratios, which are measured in the same run on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from xnn.ops import conv as xconv
from xnn.ops import conv_general_dilated, conv_setting, current

DN = ("NHWC", "HWIO", "NHWC")


def _median_ms(f, *args, runs: int) -> float:
  """Median wall time (ms) of ``f(*args)`` over ``runs`` runs after one warm-up call.

  ``jax.block_until_ready`` waits for JAX arrays and passes anything else (PyTorch
  tensors, computed synchronously on the CPU) through.
  """
  jax.block_until_ready(f(*args))
  ts = []
  for _ in range(runs):
    t = time.perf_counter()
    jax.block_until_ready(f(*args))
    ts.append(time.perf_counter() - t)
  return 1e3 * statistics.median(ts)


LOOP = 8


def layer_times(conv_fn, x, w, g, stride, pad, groups, runs, in_loop=False):
  """(forward, input-grad, weight-grad[, weight-grad in a scan, per iteration]) ms, and dW."""
  def f(x, w):
    return conv_fn(x, w, (stride, stride), ((pad, pad), (pad, pad)), dimension_numbers=DN,
                   feature_group_count=groups)
  fwd = jax.jit(f)
  dx = jax.jit(lambda x, w, g: jax.vjp(lambda x: f(x, w), x)[1](g)[0])
  dw_fn = lambda x, w, g: jax.vjp(lambda w: f(x, w), w)[1](g)[0]
  dw = jax.jit(dw_fn)
  out = [_median_ms(fwd, x, w, runs=runs), _median_ms(dx, x, w, g, runs=runs),
         _median_ms(dw, x, w, g, runs=runs)]
  if in_loop:   # a carried scalar makes every iteration depend on the last (no hoisting)
    def looped(x, w, g):
      body = lambda c, _: (c + 1e-9 * dw_fn(x + c, w, g)[0, 0, 0, 0], None)
      return lax.scan(body, jnp.float32(0), None, length=LOOP)[0]
    out.append(_median_ms(jax.jit(looped), x, w, g, runs=max(1, runs // 2)) / LOOP)
  return (*out, dw(x, w, g))


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


def _layer_inputs(rng, n, h, c, o, k, s, grp):
  """x (NHWC), w (HWIO, fan-in scaled), g (the output gradient) for one layer shape."""
  p = k // 2
  x = jnp.asarray(rng.standard_normal((n, h, h, c)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((k, k, c // grp, o)) / np.sqrt(k * k * c / grp), jnp.float32)
  ho = (h + 2 * p - k) // s + 1
  g = jnp.asarray(rng.standard_normal((n, ho, ho, o)), jnp.float32)
  return x, w, g


def torch_layer_times(n, h, c, o, k, s, grp, runs):
  """PyTorch (channels-last, all cores) forward / input-grad / weight-grad ms of one layer."""
  import torch
  torch.set_num_threads(os.cpu_count() or 1)
  p = k // 2
  x = torch.randn(n, c, h, h).to(memory_format=torch.channels_last).requires_grad_(True)
  w = (torch.randn(o, c // grp, k, k) / np.sqrt(k * k * c / grp)).requires_grad_(True)
  conv = lambda: torch.nn.functional.conv2d(x, w, None, s, p, 1, grp)
  y = conv()
  g = torch.randn_like(y)
  with torch.no_grad():
    fwd = _median_ms(conv, runs=runs)
  dx = _median_ms(lambda: torch.autograd.grad(conv(), x, g), runs=runs)
  dw = _median_ms(lambda: torch.autograd.grad(conv(), w, g), runs=runs)
  return fwd, dx - fwd, dw - fwd           # the gradient calls include a forward


def bench_torch(runs: int, extra: bool) -> None:
  """Per layer: xnn's total (fwd + dx + dW) ms vs PyTorch's, in the same run."""
  try:
    import torch
  except ImportError:
    print("torch is not installed: no PyTorch comparison")
    return
  print(f"\nPer layer, xnn ({current().cpu}) vs PyTorch {torch.__version__} (channels-last, oneDNN), ms:")
  print(f"{'layer':30s} {'fwd xnn':>8s} {'fwd pt':>8s} {'dx xnn':>8s} {'dx pt':>8s} {'dw xnn':>8s} "
        f"{'dw pt':>8s} {'all xnn':>8s} {'all pt':>8s} {'pt/xnn':>7s}")
  rng = np.random.default_rng(0)
  for name, n, h, c, o, k, s, grp in RESNET_SHAPES + (EXTRA_SHAPES if extra else []):
    p = k // 2
    x, w, g = _layer_inputs(rng, n, h, c, o, k, s, grp)
    fb, xb, wb, _ = layer_times(conv_general_dilated, x, w, g, s, p, grp, runs)
    ft, xt, wt = torch_layer_times(n, h, c, o, k, s, grp, runs)
    print(f"{name:30s} {fb:8.2f} {ft:8.2f} {xb:8.2f} {xt:8.2f} {wb:8.2f} {wt:8.2f} "
          f"{fb + xb + wb:8.2f} {ft + xt + wt:8.2f} {(ft + xt + wt) / (fb + xb + wb):7.2f}", flush=True)


def bench_layers(runs: int, extra: bool = False, compare_methods: bool = False,
                 in_loop: bool = False) -> None:
  """Prints per-layer forward / input-grad / weight-grad ms, XLA vs xnn."""
  print(f"{'layer':30s} {'fwd xla':>8s} {'fwd xnn':>8s} {'dx xla':>8s} {'dx xnn':>8s} "
        f"{'dw xla':>8s} {'dw xnn':>8s} {'dw x':>6s} {'dw rel err':>10s}"
        + (f" {'loop xla':>9s} {'loop xnn':>9s} {'loop x':>7s}" if in_loop else ""))
  rng = np.random.default_rng(0)
  for name, n, h, c, o, k, s, grp in RESNET_SHAPES + (EXTRA_SHAPES if extra else []):
    p = k // 2
    x, w, g = _layer_inputs(rng, n, h, c, o, k, s, grp)
    fa, xa, wa, *la, ra = layer_times(lax.conv_general_dilated, x, w, g, s, p, grp, runs, in_loop)
    fb, xb, wb, *lb, rb = layer_times(conv_general_dilated, x, w, g, s, p, grp, runs, in_loop)
    err = float(jnp.max(jnp.abs(ra - rb)) / jnp.max(jnp.abs(ra)))
    loop = f" {la[0]:9.2f} {lb[0]:9.2f} {la[0] / lb[0]:7.1f}" if in_loop else ""
    print(f"{name:30s} {fa:8.2f} {fb:8.2f} {xa:8.2f} {xb:8.2f} {wa:8.2f} {wb:8.2f} "
          f"{wa / wb:6.2f} {err:10.1e}{loop}", flush=True)
    if compare_methods:
      res = []
      for meth in (("conv", "taps", "taps_t", "im2col") if grp == 1 else ("taps", "taps_dot")):
        pads = ((p, p), (p, p))
        f = jax.jit(lambda x, g, meth=meth, shape=w.shape, st=(s, s), pads=pads, grp=grp: xconv.weight_grad(
            x, g, shape, st, pads, (1, 1), grp, method=meth))
        res.append(f"{meth} {_median_ms(f, x, g, runs=runs):.2f}")
      print(f"{'':30s} weight-grad formulations alone (ms): " + ", ".join(res), flush=True)


def bench_model(batch: int, steps: int) -> None:
  """ResNet-20 train step with XLA's, xnn's pure-JAX and oneDNN's convolutions, 1 and 8 steps per dispatch."""
  from common import timed_step
  from xnn.ops import onednn
  modes = ["xla", "xnn"] + (["onednn"] if onednn.available() else [])
  one = {m: timed_step("resnet20", batch, steps, conv=m, keep_first=True) for m in modes}
  ref = one["xla"][1].params
  print(f"\nResNet-20 train step, batch {batch}, one step per dispatch:")
  for m, (rate, state) in one.items():
    diff = max(jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), state.params, ref)))
    print(f"  {m:7s} {1e3 * batch / rate:8.1f} ms ({rate:.0f} img/s), {rate / one['xla'][0]:.2f}x XLA;"
          f" max |param - XLA's| after one step {diff:.1e}", flush=True)
  n = 8
  print(f"ResNet-20, {n} steps per lax.scan dispatch:")
  loop = {m: timed_step("resnet20", batch, n * max(1, steps // 4), per_dispatch=n, conv=m)[0] for m in modes}
  for m, rate in loop.items():
    print(f"  {m:7s} {1e3 * batch / rate:8.1f} ms/step ({rate:.0f} img/s), {rate / loop['xla']:.2f}x XLA", flush=True)


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--runs", type=int, default=7)
  ap.add_argument("--steps", type=int, default=10)
  ap.add_argument("--batch", type=int, default=128)
  ap.add_argument("--extra", action="store_true",
                  help="also stems, 1x1, grouped and depthwise layers")
  ap.add_argument("--method", default="auto", choices=("auto", "conv", "taps", "taps_t", "im2col"))
  ap.add_argument("--in-loop", action="store_true",
                  help="also time each weight gradient inside a lax.scan")
  ap.add_argument("--compare-methods", action="store_true",
                  help="also time each weight-gradient formulation alone")
  ap.add_argument("--torch", action="store_true",
                  help="also time each layer in PyTorch (same run) and compare")
  ap.add_argument("--skip-layers", action="store_true")
  ap.add_argument("--skip-model", action="store_true")
  ap.add_argument("--conv", default="auto", choices=("auto", "onednn", "xnn"),
                  help="xnn's CPU convolution in the per-layer tables (XNN_CPU_CONV)")
  a = ap.parse_args()
  from xnn.ops import onednn
  print(f"jax {jax.__version__}, backend {jax.default_backend()}, {jax.devices()[0].device_kind},"
        f" xnn conv {a.conv} (oneDNN {onednn.version() or 'unavailable'}), weight-grad method {a.method}")
  with conv_setting(wgrad=a.method):
    with conv_setting(cpu=a.conv):
      if not a.skip_layers:
        bench_layers(a.runs, a.extra, a.compare_methods, a.in_loop)
      if a.torch:
        bench_torch(a.runs, a.extra)
    if not a.skip_model:
      bench_model(a.batch, a.steps)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
