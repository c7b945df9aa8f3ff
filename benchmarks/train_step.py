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
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import finish, median_train_rate  # noqa: E402


def xnn_loop(model: str, batch: int, steps: int, resident: str = "off", size: int = 32,
             dtype: str = "float32", num_classes: int = 10) -> float:
  """Training images/s of ``train_and_evaluate`` on random uint8 ``size``x``size``x3 images."""
  from xnn.configs.default import get_config
  from xnn.data import from_arrays
  from xnn.train import train_and_evaluate
  rng = np.random.default_rng(0)
  n = batch * 8
  x = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
  y = rng.integers(0, num_classes, n)
  ds = from_arrays(x, y, x[:batch], y[:batch], num_classes=num_classes)
  c = get_config()
  c.model.name = model
  c.model.dtype = dtype
  c.data.image_size, c.data.channels, c.data.augment = 0, 0, "pad_crop_flip"
  c.train.batch_size, c.train.num_steps = batch, 8 * (steps // 8 + 1)
  c.train.eval_every_epochs, c.train.checkpoint_every_steps = 10_000, 10_000_000
  c.train.progress_bar = False
  c.train.device_resident = resident
  c.train.steps_per_dispatch = 8          # device-resident: 8 steps per lax.scan dispatch
  c.train.log_every_steps = 8             # one device sync per 8 steps in both modes
  c.optimizer.name, c.optimizer.learning_rate, c.optimizer.weight_decay = "sgd", 0.1, 1e-4
  c.schedule.name = "constant"
  with tempfile.TemporaryDirectory() as wd:
    train_and_evaluate(c, wd, dataset=ds)
    return median_train_rate(wd)


def bare_step(model_name: str, batch: int, steps: int, per_dispatch: int = 1, conv: str = "auto") -> float:
  """Training images/s of the jitted step on one batch already on the device."""
  return timed_step(model_name, batch, steps, per_dispatch, conv)[0]


def timed_step(model_name: str, batch: int, steps: int, per_dispatch: int = 1, conv: str = "auto",
               shape=(32, 32, 3), dtype: str = "float32", num_classes: int = 10,
               pipelined: bool = False, keep_first: bool = False):
  """(images/s, state after the first step on the host or None) of the bare jitted step.

  SGD momentum 0.9 + weight decay 1e-4 on one random batch already on the device.
  ``per_dispatch`` > 1: that many steps in one ``lax.scan`` (as the device-resident
  loop runs them); ``conv``: the zoo's CPU convolutions, traced under
  ``use_cpu_conv(conv)``: "auto" (oneDNN where available), "onednn", "xnn" (the
  pure-JAX gradients of ``xnn.ops.conv``) or "xla" (XLA's own).  Rate: the median of
  per-dispatch times, or with ``pipelined`` the whole loop timed once (dispatches
  overlap, as on a GPU).  ``keep_first``: also return a host copy of the state after
  the first (compiling) step, for comparing parameters across formulations.
  """
  import optax
  from xnn import models
  from xnn.ops.conv import use_cpu_conv
  from xnn.train.step import create_train_state, make_train_step
  with use_cpu_conv(conv):
    model = models.build(model_name, num_classes=num_classes, dtype=jnp.dtype(dtype))
    tx = optax.chain(optax.add_decayed_weights(1e-4), optax.sgd(0.1, momentum=0.9))
    state = jax.jit(lambda k: create_train_state(model, tx, k, (jnp.zeros((1, *shape)),)))(jax.random.key(0))
    one = make_train_step(model, input_keys=("image",), label_key="label", mask_key=None,
                          lr_fn=lambda s: 0.1)
    if per_dispatch > 1:
      def many(state, b, key):
        return jax.lax.scan(lambda s, _: one(s, b, key), state, None, length=per_dispatch)
      step = jax.jit(many, donate_argnums=0)
    else:
      step = jax.jit(one, donate_argnums=0)
    rng = np.random.default_rng(0)
    b = {"image": jnp.asarray(rng.standard_normal((batch, *shape)), jnp.float32),
         "label": jnp.asarray(rng.integers(0, num_classes, batch), jnp.int32)}
    key = jax.random.key(1)
    state, m = step(state, b, key)       # traced (and compiled) inside the context
    jax.block_until_ready(m)
  first = jax.device_get(state) if keep_first else None   # the next step donates the buffers
  n = max(1, steps // per_dispatch)
  if pipelined:
    state, m = step(state, b, key)       # one more warm-up dispatch
    jax.block_until_ready(m)
    t = time.perf_counter()
    for _ in range(n):
      state, m = step(state, b, key)
    jax.block_until_ready(m)
    return batch * per_dispatch * n / (time.perf_counter() - t), first
  times = []
  for _ in range(n):
    t = time.perf_counter()
    state, m = step(state, b, key)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
  return batch * per_dispatch / statistics.median(times), first


def torch_resnet20(batch: int, steps: int) -> float | None:
  try:
    import torch
    import torch.nn.functional as F
  except ImportError:
    return None
  torch.set_num_threads(os.cpu_count() or 1)
  from throughput import torch_model   # the same option-A ResNet-20 as throughput.py

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
