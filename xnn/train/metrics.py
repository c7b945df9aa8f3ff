"""Run outputs: ``metrics.jsonl`` (the source of truth), TensorBoard events
(tensorboardX, no TensorFlow) and ``curves.png``, all in the workdir.

Every file other than the append-only ``metrics.jsonl`` is written atomically
(a temporary file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from typing import Any, Iterable

import jax


def atomic_write(path: str, data: bytes | str) -> None:
  """Writes ``path`` all at once: readers see the old file or the new one, never half."""
  folder = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp_" + os.path.basename(path))
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data.encode() if isinstance(data, str) else data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def read_metrics(path: str) -> list[dict[str, Any]]:
  """All records of a ``metrics.jsonl`` (a torn last line, from a kill, is ignored)."""
  out = []
  if not os.path.exists(path):
    return out
  with open(path) as f:
    for line in f:
      try:
        out.append(json.loads(line))
      except json.JSONDecodeError:
        break
  return out


def _clean(v: Any) -> Any:
  v = float(v) if hasattr(v, "dtype") or isinstance(v, (int, float)) and not isinstance(v, bool) else v
  if isinstance(v, float) and not math.isfinite(v):
    return str(v)
  return v


class MetricsWriter:
  """Writes metrics records from the main process only (process 0)."""

  def __init__(self, workdir: str, resume_step: int = 0, tensorboard: bool = True):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.curves_path = os.path.join(workdir, "curves.png")
    self._tb = None
    if not self.enabled:
      return
    # A resumed run drops what the interrupted run logged after its checkpoint.
    kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
    atomic_write(self.path, "".join(json.dumps(r) + "\n" for r in kept))
    self.records = kept
    self._file = open(self.path, "a")
    if tensorboard:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=resume_step + 1 if resume_step else None)

  def write(self, kind: str, step: int, **values: Any) -> dict[str, Any]:
    rec = {"type": kind, "step": int(step), **{k: _clean(v) for k, v in values.items()}}
    if not self.enabled:
      return rec
    self.records.append(rec)
    self._file.write(json.dumps(rec) + "\n")
    self._file.flush()
    if self._tb is not None:
      for k, v in rec.items():
        if isinstance(v, float) and k not in ("step",):
          self._tb.add_scalar(f"{kind}/{k}", v, step)
    return rec

  def plot(self) -> None:
    if self.enabled:
      plot_curves(self.records, self.curves_path)

  def close(self) -> None:
    if self.enabled:
      self._file.close()
      if self._tb is not None:
        self._tb.close()


def plot_curves(records: Iterable[dict[str, Any]], path: str, title: str = "") -> None:
  """Train/test accuracy and loss against epoch (PNG, written atomically)."""
  import io

  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  epochs = [r for r in records if r["type"] == "epoch"]
  evals = [r for r in records if r["type"] == "eval"]
  fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
  for ax, key, label in ((ax_acc, "accuracy", "accuracy"), (ax_loss, "loss", "loss")):
    if epochs:
      ax.plot([r["epoch"] for r in epochs], [r[f"train_{key}"] for r in epochs], "--", label=f"train {label}")
    if evals:
      ax.plot([r["epoch"] for r in evals], [r[f"test_{key}"] for r in evals], "-o", ms=3, label=f"test {label}")
    ax.set_xlabel("epoch")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    ax.legend()
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=100)
  plt.close(fig)
  atomic_write(path, buf.getvalue())
