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
import time
from typing import Any, Iterable

import jax


def atomic_write(path: str, data: bytes | str) -> None:
  """Writes ``path`` all at once: readers see the old file or the new one, never half."""
  folder = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp_" + os.path.basename(path))
  try:
    os.fchmod(fd, 0o666 & ~_umask())     # mkstemp makes 0600; a run's files follow the umask
    with os.fdopen(fd, "wb") as f:
      f.write(data.encode() if isinstance(data, str) else data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def _umask() -> int:
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


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


def clean_value(v: Any) -> Any:
  v = float(v) if hasattr(v, "dtype") or isinstance(v, (int, float)) and not isinstance(v, bool) else v
  if isinstance(v, float) and not math.isfinite(v):
    return str(v)
  return v


KEPT_AT_RESUME = ("train", "epoch", "eval")   # written before the checkpoint of their step


class MetricsWriter:
  """Writes metrics records from the main process only (process 0)."""

  def __init__(self, workdir: str, resume_step: int = 0, tensorboard: bool = True):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.curves_path = os.path.join(workdir, "curves.png")
    self._plotted_at = -math.inf
    self._tb = None
    if not self.enabled:
      return
    # A resumed run drops what the interrupted run logged after its checkpoint, and the records of
    # the checkpoint's own step that the resumed run writes again (one record per kind and step).
    kept = [r for r in read_metrics(self.path)
            if r.get("step", 0) < resume_step or r.get("step") == resume_step and r.get("type") in KEPT_AT_RESUME]
    atomic_write(self.path, "".join(json.dumps(r) + "\n" for r in kept))
    self.records = kept
    self._file = open(self.path, "a")
    if tensorboard:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"),
                               purge_step=resume_step + 1 if resume_step else None)

  def write(self, kind: str, step: int, **values: Any) -> dict[str, Any]:
    rec = {"type": kind, "step": int(step), **{k: clean_value(v) for k, v in values.items()}}
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

  def plot(self, title: str = "", force: bool = False, every_s: float = 30.0) -> None:
    """Redraws ``curves.png``: at most every ``every_s`` seconds (drawing takes a few tenths of a
    second, a noticeable share of a short run's evaluations), always when ``force``."""
    if self.enabled and (force or time.monotonic() - self._plotted_at >= every_s):
      plot_curves(self.records, self.curves_path, title)
      self._plotted_at = time.monotonic()

  def close(self) -> None:
    if self.enabled:
      self._file.close()
      if self._tb is not None:
        self._tb.close()


def plot_curves(records: Iterable[dict[str, Any]], path: str, title: str = "") -> None:
  """Train (dashed) and test (solid) accuracy and loss against epoch, loss on a log axis (PNG, written
  atomically); ``title`` (e.g. the run's model and data set) heads the figure."""
  from xnn import plots

  plt = plots.pyplot()
  records = list(records)
  epochs = [r for r in records if r["type"] == "epoch"]
  evals = [r for r in records if r["type"] == "eval"]
  fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4.2))
  for ax, key in ((ax_acc, "accuracy"), (ax_loss, "loss")):
    for rs, kind, style in ((epochs, "train", dict(ls="--", color="C0")),
                            (evals, "test", dict(ls="-", marker="o", ms=3, color="C1"))):
      if rs:
        ax.plot([r["epoch"] for r in rs], [plots.as_float(r[f"{kind}_{key}"]) for r in rs], label=kind, **style)
    plots.epoch_axis(ax)
  ax_acc.set_ylabel("accuracy")
  ax_acc.set_title("accuracy")
  plots.log_axis(ax_loss, "loss")
  plots.grid(ax_acc)
  plots.grid(ax_loss)
  ax_loss.set_title("loss")
  handles, labels = ax_acc.get_legend_handles_labels()
  if handles:
    fig.legend(handles, labels, loc="lower center", ncol=len(handles), frameon=False, bbox_to_anchor=(0.5, -0.02))
  fig.suptitle(title or "training curves")
  fig.tight_layout(rect=(0, 0.06, 1, 1))
  atomic_write(path, plots.png_bytes(fig))
