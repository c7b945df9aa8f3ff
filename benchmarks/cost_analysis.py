"""Analysis time and host memory of `xnn.cost.analyze_model` (target: < 3 s per model on 2 CPU cores).

    .venv/bin/python benchmarks/cost_analysis.py [MODEL ...]

For each model (default resnet152 at 224x224, or resnet110 if it is not registered)
and batch 1 and 256: wall time of the whole analysis (eval_shape of init, make_jaxpr,
walk, liveness, receptive field), the peak of Python allocations during it
(tracemalloc, in a second untimed run), the process CPU time (robust to a
shared machine's load) and the process's maximum resident set size (resource.getrusage).
Nothing is materialised, so batch 256 costs what batch 1 costs.
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc


def bench(name: str, batch: int) -> dict:
  from xnn.cost import analyze_model
  t0, c0 = time.perf_counter(), time.process_time()
  rep = analyze_model(name, batch=batch)
  dt, cpu = time.perf_counter() - t0, time.process_time() - c0
  # tracemalloc slows Python down ~10x: a second, untimed run measures the allocations
  tracemalloc.start()
  analyze_model(name, batch=batch)
  _, peak = tracemalloc.get_traced_memory()
  tracemalloc.stop()
  return {"model": name, "batch": batch, "seconds": dt, "cpu_seconds": cpu, "tracemalloc_peak_mb": peak / 2 ** 20,
          "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
          "gmacs": rep.macs / 1e9, "params": rep.params, "layers": len(rep.layers),
          "equations": len(rep.graph.nodes)}


def main() -> None:
  import xnn.models as M
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("models", nargs="*")
  p.add_argument("--batches", default="1,256")
  args = p.parse_args()
  models = args.models or ["resnet152" if "resnet152" in M.names() else "resnet110"]
  bench(models[0], 1)   # warm-up: imports, first-trace caches
  print(f"{'model':<12} {'batch':>5} {'seconds':>8} {'cpu s':>6} {'tracemalloc MB':>15} {'maxrss MB':>10} "
        f"{'GMACs':>9} {'eqns':>6}")
  for name in models:
    for b in map(int, args.batches.split(",")):
      r = bench(name, b)
      print(f"{r['model']:<12} {r['batch']:>5} {r['seconds']:>8.2f} {r['cpu_seconds']:>6.2f} "
            f"{r['tracemalloc_peak_mb']:>15.1f} {r['maxrss_mb']:>10.0f} {r['gmacs']:>9.2f} {r['equations']:>6}")


if __name__ == "__main__":
  main()
