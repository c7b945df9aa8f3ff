"""Helpers shared by the benchmark scripts (each script runs with this folder on sys.path).

* ``timed_step``: xnn's bare jitted train step on one batch already on the device;
* ``xnn_loop``: ``train_and_evaluate`` through the real input pipeline;
* ``torch_model``: the same networks in PyTorch (option-A ResNet-20, torchvision's ResNet-50);
* ``median_train_rate``, ``finish``: reading a run's rate, writing the results.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np


def median_train_rate(workdir: str) -> float:
  """Median training images/s of a finished run's ``metrics.jsonl`` (first interval: compile)."""
  from xnn.train.metrics import read_metrics
  rates = [r["examples_per_sec"] for r in read_metrics(os.path.join(workdir, "metrics.jsonl"))
           if r["type"] == "train"]
  return statistics.median(rates[1:])


def finish(results: dict, json_path: str | None) -> int:
  """Writes ``results`` to ``json_path`` when given; the scripts' exit status."""
  if json_path:
    with open(json_path, "w") as f:
      json.dump(results, f, indent=2)
  return 0


def timed_step(model_name: str, batch: int, steps: int, per_dispatch: int = 1, conv: str = "auto",
               shape=(32, 32, 3), dtype: str = "float32", num_classes: int = 10,
               pipelined: bool = False, keep_first: bool = False):
  """(images/s, state after the first step on the host or None) of the bare jitted step.

  SGD momentum 0.9 + weight decay 1e-4 on one random batch already on the device.
  ``per_dispatch`` > 1: that many steps in one ``lax.scan`` (as the device-resident
  loop runs them); ``conv``: the zoo's CPU convolutions, traced under
  ``conv_setting(cpu=conv)``: "auto" (oneDNN where available), "onednn", "xnn" (the
  pure-JAX gradients of ``xnn.ops.conv``) or "xla" (XLA's own).  Rate: the median of
  per-dispatch times, or with ``pipelined`` the whole loop timed once (dispatches
  overlap, as on a GPU).  ``keep_first``: also return a host copy of the state after
  the first (compiling) step, for comparing parameters across formulations.
  """
  import optax
  from xnn import models
  from xnn.ops import conv_setting
  from xnn.train.step import create_train_state, make_train_step
  from xnn.train.tasks import ImageClassification
  with conv_setting(cpu=conv):
    model = models.build(model_name, num_classes=num_classes, dtype=jnp.dtype(dtype))
    tx = optax.chain(optax.add_decayed_weights(1e-4), optax.sgd(0.1, momentum=0.9))
    state = jax.jit(lambda k: create_train_state(model, tx, k, (jnp.zeros((1, *shape)),)))(jax.random.key(0))
    one = make_train_step(model, ImageClassification(("image",), "label"), lr_fn=lambda s: 0.1)
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


def torch_model(name: str):
  import torch.nn as nn
  import torch.nn.functional as F
  if name == "resnet50":
    import torchvision          # ImportError: no PyTorch column for this model
    return torchvision.models.resnet50()

  class Block(nn.Module):
    def __init__(self, cin, cout, stride):
      super().__init__()
      self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
      self.b1 = nn.BatchNorm2d(cout)
      self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
      self.b2 = nn.BatchNorm2d(cout)
      self.stride, self.extra = stride, cout - cin

    def forward(self, x):
      y = self.b2(self.c2(F.relu(self.b1(self.c1(x)))))
      if self.stride != 1 or self.extra:
        x = F.pad(x[:, :, ::self.stride, ::self.stride], (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
      return F.relu(y + x)

  class ResNet20(nn.Module):
    def __init__(self):
      super().__init__()
      self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
      layers, cin = [], 16
      for s, w in enumerate((16, 32, 64)):
        for b in range(3):
          layers.append(Block(cin, w, 2 if s and not b else 1))
          cin = w
      self.body = nn.Sequential(*layers)
      self.fc = nn.Linear(64, 10)

    def forward(self, x):
      return self.fc(self.body(self.stem(x)).mean((2, 3)))

  return ResNet20()
