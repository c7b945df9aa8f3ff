"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import json
import os
import statistics


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
