"""Training throughput, in one run: xnn's loop vs a bare jitted step vs PyTorch.

    python benchmarks/train_step.py [--model resnet20] [--batch 128] [--steps 20]

* xnn loop:   ``train_and_evaluate`` on in-memory CIFAR-shaped uint8 data through the
              real pipeline (grain loader, pad-4 crop + flip, normalisation, host ->
              device transfer, metrics, progress bar off); images/s from its
              ``metrics.jsonl`` (compile step excluded).
* bare step:  the same jitted train step on one batch already on the device, in a
              Python loop -- the ceiling for the loop (target: loop >= 0.95 x bare).
              On the CPU also with the pure-JAX convolution gradients
              (``XNN_CPU_CONV=xnn``) instead of oneDNN's kernels, for the speed-up.
* resident:   (``--resident``) the same loop with the training set on the device
              (``train.device_resident=on``, 8 steps per dispatch), and its ceiling,
              the bare step run 8 times in one ``lax.scan`` on one device batch.
* PyTorch:    an equivalent ResNet-20 (option A shortcuts, BN, SGD momentum 0.9,
              weight decay 1e-4) training loop on the same CPU, when torch is
              installed; eager mode, all cores.

Prints one table and the ratios; results are recorded in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import jax

from common import finish, timed_step, torch_model, xnn_loop


def bare_step(model_name: str, batch: int, steps: int, per_dispatch: int = 1, conv: str = "auto") -> float:
  """Training images/s of the jitted step on one batch already on the device."""
  return timed_step(model_name, batch, steps, per_dispatch, conv)[0]


def torch_resnet20(batch: int, steps: int) -> float | None:
  try:
    import torch
    import torch.nn.functional as F
  except ImportError:
    return None
  torch.set_num_threads(os.cpu_count() or 1)

  net = torch_model("resnet20")
  assert sum(p.numel() for p in net.parameters()) == 269_722
  opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
  x = torch.randn(batch, 3, 32, 32)
  y = torch.randint(0, 10, (batch,))
  times = []
  for i in range(steps + 2):
    t = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(net(x), y)
    loss.backward()
    opt.step()
    if i >= 2:
      times.append(time.perf_counter() - t)
  return batch / statistics.median(times)


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--model", default="resnet20")
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--steps", type=int, default=20)
  p.add_argument("--json", help="also write the results to this JSON file")
  p.add_argument("--resident", action="store_true", help="also time the device-resident loop")
  a = p.parse_args()
  res = {"model": a.model, "batch": a.batch, "device": jax.devices()[0].device_kind,
         "platform": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
         "jax": jax.__version__}
  res["bare_images_per_s"] = bare_step(a.model, a.batch, a.steps)
  if jax.default_backend() == "cpu":
    from xnn.ops import onednn
    res["onednn"] = onednn.version() or f"unavailable: {onednn.unavailable_reason()}"
    res["bare_jax_conv_images_per_s"] = bare_step(a.model, a.batch, a.steps, conv="xnn")
  res["xnn_loop_images_per_s"] = xnn_loop(a.model, a.batch, a.steps)
  if a.resident:
    res["bare_scan8_images_per_s"] = bare_step(a.model, a.batch, a.steps, per_dispatch=8)
    res["xnn_resident_images_per_s"] = xnn_loop(a.model, a.batch, a.steps, "on")
    res["resident_over_bare_scan8"] = res["xnn_resident_images_per_s"] / res["bare_scan8_images_per_s"]
    res["resident_over_streaming"] = res["xnn_resident_images_per_s"] / res["xnn_loop_images_per_s"]
  if jax.default_backend() == "cpu":
    res["bare_over_bare_jax_conv"] = res["bare_images_per_s"] / res["bare_jax_conv_images_per_s"]
  res["torch_images_per_s"] = torch_resnet20(a.batch, a.steps) if a.model == "resnet20" else None
  res["loop_over_bare"] = res["xnn_loop_images_per_s"] / res["bare_images_per_s"]
  if res["torch_images_per_s"]:
    import torch
    res["torch"] = torch.__version__
    res["xnn_over_torch"] = res["xnn_loop_images_per_s"] / res["torch_images_per_s"]
    if a.resident:
      res["xnn_resident_over_torch"] = res["xnn_resident_images_per_s"] / res["torch_images_per_s"]
  for k, v in res.items():
    print(f"{k:>24}: {v:.4g}" if isinstance(v, float) else f"{k:>24}: {v}")
  return finish(res, a.json)


if __name__ == "__main__":
  sys.exit(main())
