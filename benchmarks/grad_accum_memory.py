"""Memory and time of a train step with gradient accumulation (``train.grad_accum_steps``).

    python benchmarks/grad_accum_memory.py [--model resnet20] [--batch 256] [--side 32] [--steps 1,2,4,8]

For each k: XLA's buffer assignment of the compiled step (``memory_analysis()``: temporary
buffers, i.e. activations and gradients in flight, and the arguments), and the median time of
a step on this machine. The step is ``xnn.train.step.make_train_step``, as ``xnn train`` builds
it; the batch and the state are the same for every k.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import jax
import numpy as np
import optax


def measure(model_name: str, batch: int, side: int, k: int, repeats: int) -> dict:
  import xnn.models as M
  from xnn.train import tasks
  from xnn.train.step import create_train_state, make_train_step
  model = M.build(model_name, num_classes=10)
  task = tasks.ImageClassification(("image",), "label")
  rng = np.random.default_rng(0)
  data = {"image": rng.normal(size=(batch, side, side, 3)).astype(np.float32),
          "label": rng.integers(0, 10, size=(batch,)).astype(np.int32)}
  tx = optax.sgd(0.1, momentum=0.9)
  state = create_train_state(model, tx, jax.random.key(0), (data["image"][:1],))
  step = jax.jit(make_train_step(model, task, lr_fn=optax.constant_schedule(0.1), grad_accum_steps=k))
  compiled = step.lower(state, data, jax.random.key(1)).compile()
  memory = compiled.memory_analysis()
  times = []
  for _ in range(repeats + 1):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(state, data, jax.random.key(1)))
    times.append(time.perf_counter() - t0)
  return {"k": k, "temp_bytes": int(memory.temp_size_in_bytes), "argument_bytes": int(memory.argument_size_in_bytes),
          "step_ms": 1e3 * statistics.median(times[1:])}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--model", default="resnet20")
  p.add_argument("--batch", type=int, default=256)
  p.add_argument("--side", type=int, default=32)
  p.add_argument("--steps", default="1,2,4,8", help="the grad_accum_steps values")
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--json", default=None)
  a = p.parse_args(argv)
  rows = [measure(a.model, a.batch, a.side, int(k), a.repeats) for k in a.steps.split(",")]
  print(f"{a.model}, batch {a.batch} at {a.side}x{a.side}x3, on {jax.devices()[0].device_kind}")
  print("| k | temporary buffers (MB) | k=1's / this | arguments (MB) | step (ms) |")
  print("|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['k']} | {r['temp_bytes'] / 1e6:.1f} | {rows[0]['temp_bytes'] / r['temp_bytes']:.2f} | "
          f"{r['argument_bytes'] / 1e6:.1f} | {r['step_ms']:.0f} |")
  if a.json:
    with open(a.json, "w") as f:
      json.dump(rows, f, indent=2)
  return 0


if __name__ == "__main__":
  sys.exit(main())
