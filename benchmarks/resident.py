"""Device-resident epochs vs the streaming input pipeline, in one run.

    python benchmarks/resident.py [--epochs 20] [--cifar-steps 64] [--json FILE]

* digits:  the embedded default job (LeNet-5 on the bundled UCI digits, batch 64,
           20 epochs) with ``train.device_resident`` off (grain loader, host
           batches) and on (the set on the device, one epoch of steps per
           ``lax.scan`` dispatch): median training images/s over the logged
           intervals (compile excluded), training wall time and test accuracy.
* cifar:   LeNet-5 on CIFAR-shaped random uint8 images (32x32x3, pad-4 crop +
           flip, per-channel normalisation), batch 128, both modes: images/s.

ResNet-20 on CIFAR-shaped data is in ``benchmarks/train_step.py --resident``.
Results are recorded in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import jax
import numpy as np

from common import finish, median_train_rate


def run(mode: str, config_fn, dataset=None) -> dict:
  from xnn.train import train_and_evaluate
  c = config_fn()
  c.train.device_resident = mode
  c.train.progress_bar = False
  c.train.compilation_cache = "off"
  with tempfile.TemporaryDirectory() as wd:
    t = time.perf_counter()
    r = train_and_evaluate(c, wd, dataset=dataset)
    wall = time.perf_counter() - t
    rate = median_train_rate(wd)
  return {"images_per_s": rate, "wall_s": wall, "test_accuracy": r.test_accuracy}


def digits_config(epochs: int):
  from xnn.configs.default import get_config

  def make():
    c = get_config()
    c.train.num_epochs = epochs
    return c
  return make


def cifar_shaped(steps: int, batch: int = 128):
  from xnn.configs.default import get_config
  from xnn.data import from_arrays
  rng = np.random.default_rng(0)
  n = batch * 16
  x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
  y = rng.integers(0, 10, n)
  ds = from_arrays(x, y, x[:batch], y[:batch])

  def make():
    c = get_config()
    c.data.image_size, c.data.channels, c.data.augment = 0, 0, "pad_crop_flip"
    c.train.batch_size, c.train.num_steps, c.train.log_every_steps = batch, steps, 16
    c.train.eval_every_epochs, c.train.steps_per_dispatch = 1, 16
    return c
  return make, ds


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--epochs", type=int, default=20)
  p.add_argument("--cifar-steps", type=int, default=64)
  p.add_argument("--json", help="also write the results to this JSON file")
  a = p.parse_args()
  res = {"device": jax.devices()[0].device_kind, "cpus": os.cpu_count(), "jax": jax.__version__}
  for mode in ("off", "on"):
    res[f"digits_{mode}"] = run(mode, digits_config(a.epochs))
  make, ds = cifar_shaped(a.cifar_steps)
  for mode in ("off", "on"):
    res[f"cifar_lenet5_{mode}"] = run(mode, make, ds)
  res["digits_resident_over_streaming"] = res["digits_on"]["images_per_s"] / res["digits_off"]["images_per_s"]
  res["cifar_resident_over_streaming"] = (res["cifar_lenet5_on"]["images_per_s"]
                                          / res["cifar_lenet5_off"]["images_per_s"])
  print(json.dumps(res, indent=2))
  return finish(res, a.json)


if __name__ == "__main__":
  sys.exit(main())
