"""Training throughput on this machine's accelerator (or CPU), in one run.

    python benchmarks/throughput.py [--models resnet20,resnet50] [--dtypes float32,bfloat16]
                                    [--steps 30] [--json out.json] [--loop]

For each model (resnet20: batch 128 at 32x32x3; resnet50: batch 32 at 224x224x3)
and compute dtype, images/s of:

* jax bare:   xnn's jitted train step (SGD momentum + weight decay, BatchNorm in
              train mode) on one batch already on the device, in a Python loop;
* xnn loop:   (``--loop``) ``train_and_evaluate`` through the real input pipeline;
* torch:      the same network and optimiser in PyTorch on the same device when
              torch is installed (own ResNet-20 with option-A shortcuts;
              torchvision's resnet50), float32 or ``autocast(bfloat16)``;

plus the device's measured matrix-multiply rate (8192^3 products, or 2048^3 on a
CPU) in each dtype and the hardware limit it implies: that rate divided by the
training FLOPs per image (2 x the forward + backward MACs of ``xnn cost --train``),
printed with the ratios xnn / PyTorch and xnn / limit (see benchmarks/RESULTS.md).
Ratios are only meaningful within one run: absolute times drift on shared machines.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp

from common import finish, timed_step, torch_model, xnn_loop

SETUPS = {"resnet20": (128, (32, 32, 3)), "resnet50": (32, (224, 224, 3))}


def matmul_rate(dtype: str) -> float:
  n = 8192 if jax.default_backend() != "cpu" else 2048
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda x: x @ x)
  jax.block_until_ready(f(a))
  times = []
  for _ in range(10):
    t = time.perf_counter()
    jax.block_until_ready(f(a))
    times.append(time.perf_counter() - t)
  return 2 * n ** 3 / statistics.median(times)


def jax_bare(name: str, batch: int, shape, dtype: str, steps: int) -> float:
  """xnn's jitted train step, dispatches pipelined (``common.timed_step``)."""
  return timed_step(name, batch, steps, shape=shape, dtype=dtype,
                    num_classes=10 if name == "resnet20" else 1000, pipelined=True)[0]


def train_flops_per_image(name: str, shape) -> float:
  """2 x (forward + backward MACs) of one training image, from ``xnn cost --train``."""
  from xnn.cost import analyze_model
  rep = analyze_model(name, shape, batch=1, train=True, num_classes=10 if name == "resnet20" else 1000)
  return 2.0 * (rep.macs + rep.backward_macs)


def torch_bench(name: str, batch: int, shape, dtype: str, steps: int) -> float | None:
  try:
    import torch
    import torch.nn.functional as F
  except ImportError:
    return None
  dev = "cuda" if torch.cuda.is_available() else "cpu"
  if dev == "cpu":
    torch.set_num_threads(os.cpu_count() or 1)
  try:
    net = torch_model(name).to(dev)
  except ImportError as e:
    print(f"no PyTorch {name}: {e}", flush=True)
    return None
  opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
  x = torch.randn(batch, shape[2], shape[0], shape[1], device=dev)
  y = torch.randint(0, 10, (batch,), device=dev)
  amp = dtype == "bfloat16"

  def one():
    opt.zero_grad(set_to_none=True)
    with torch.autocast(dev, dtype=torch.bfloat16, enabled=amp):
      loss = F.cross_entropy(net(x), y)
    loss.backward()
    opt.step()

  def sync():
    if dev == "cuda":
      torch.cuda.synchronize()

  for _ in range(3):
    one()
  sync()
  t = time.perf_counter()
  for _ in range(steps):
    one()
  sync()
  return batch * steps / (time.perf_counter() - t)


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--models", default="resnet20,resnet50")
  p.add_argument("--dtypes", default="float32,bfloat16")
  p.add_argument("--steps", type=int, default=30)
  p.add_argument("--json")
  p.add_argument("--loop", action="store_true", help="also time train_and_evaluate (streaming input)")
  a = p.parse_args()
  out = {"device": str(jax.devices()[0].device_kind), "backend": jax.default_backend(), "jax": jax.__version__,
         "matmul_flops_per_s": {}, "rows": []}
  try:
    import torch
    out["torch"] = torch.__version__
  except ImportError:
    pass
  dtypes = a.dtypes.split(",")
  for dt in dtypes:
    out["matmul_flops_per_s"][dt] = matmul_rate(dt)
    print(f"matmul {dt}: {out['matmul_flops_per_s'][dt] / 1e9:,.1f} GFLOP/s", flush=True)
  for name in a.models.split(","):
    batch, shape = SETUPS[name]
    flops = train_flops_per_image(name, shape)
    for dt in dtypes:
      limit = out["matmul_flops_per_s"][dt] / flops
      row = {"model": name, "batch": batch, "dtype": dt, "train_flops_per_image": flops,
             "limit_images_per_s": limit,
             "jax_bare_images_per_s": jax_bare(name, batch, shape, dt, a.steps),
             "torch_images_per_s": torch_bench(name, batch, shape, dt, a.steps)}
      row["jax_over_limit"] = row["jax_bare_images_per_s"] / limit
      if a.loop:
        row["xnn_loop_images_per_s"] = xnn_loop(name, batch, a.steps, size=shape[0], dtype=dt,
                                                num_classes=10 if name == "resnet20" else 1000)
        row["xnn_loop_over_limit"] = row["xnn_loop_images_per_s"] / limit
      if row["torch_images_per_s"]:
        row["jax_over_torch"] = row["jax_bare_images_per_s"] / row["torch_images_per_s"]
        row["torch_over_limit"] = row["torch_images_per_s"] / limit
        if a.loop:
          row["xnn_loop_over_torch"] = row["xnn_loop_images_per_s"] / row["torch_images_per_s"]
      out["rows"].append(row)
      print(json.dumps(row), flush=True)
  return finish(out, a.json)


if __name__ == "__main__":
  sys.exit(main())
