"""``xnn sweep status DIR``: where every run of a sweep stands, whatever launched it.

One row per run, read from the run's folder only (no scheduler is asked):

* ``finished``: ``final.json`` exists -- final test accuracy and wall time;
* ``running``: a live process holds the workdir's lock (``xnn.train.workdir_lock``) --
  where (host, pid), the newest step in ``metrics.jsonl``, the last test accuracy;
* ``failed``: the last start of the run (``launcher.log``, between the markers of
  ``xnn.sweeps.launchers.log_start``/``log_exit``) exited with a status that is not
  an interruption -- its last error line;
* ``pending``: none of these -- not started yet, or interrupted (killed, preempted,
  waiting to be requeued) at the step of its newest checkpoint, from which it resumes.

The runs are those ``SWEEP_DIR/sweep.json`` lists (written at launch), else the
run folders found in ``SWEEP_DIR``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any

from xnn.sweeps.launchers import EXIT_MARK, LOG, START_MARK, SWEEP_RECORD
from xnn.train.workdir_lock import probe_workdir

STATES = ("pending", "running", "finished", "failed")
_ERROR = re.compile(r"^(xnn \w+: error: .*|[A-Za-z_][\w.]*(Error|Exception|Interrupt)(: .*)?|Killed.*)$")
_EXIT = re.compile(re.escape(EXIT_MARK) + r"\S+ status (-?\d+)")


@dataclasses.dataclass
class RunStatus:
  name: str
  state: str                            # one of STATES
  step: int | None = None               # newest train/eval step in metrics.jsonl (running, pending)
  test_accuracy: float | None = None    # final (finished) or last evaluated (running, pending)
  wall_time_s: float | None = None      # finished runs
  where: str | None = None              # running: "host pid N"
  error: str | None = None              # failed: the last error line of its log
  checkpoint_step: int | None = None    # pending: where a restart resumes

  def detail(self) -> str:
    if self.state == "finished":
      return f"wall time {self.wall_time_s:.1f} s" if self.wall_time_s is not None else ""
    if self.state == "running":
      return f"on {self.where}"
    if self.state == "failed":
      return self.error or ""
    if self.checkpoint_step:
      return f"resumes from step {self.checkpoint_step}"
    return "not started" if self.step is None else "no checkpoint yet"


def _runs(sweep_dir: str) -> list[str]:
  if "://" in sweep_dir:
    raise ValueError(f"xnn sweep status reads a local folder; {sweep_dir} is a URL (copy it, or mount it)")
  if not os.path.isdir(sweep_dir):
    raise FileNotFoundError(f"sweep folder {sweep_dir} does not exist")
  try:
    with open(os.path.join(sweep_dir, SWEEP_RECORD)) as f:
      return [r["name"] for r in json.load(f)["runs"]]
  except FileNotFoundError:
    pass
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ValueError(f"{os.path.join(sweep_dir, SWEEP_RECORD)} cannot be read ({e})") from None
  names = sorted(d for d in os.listdir(sweep_dir)
                 if os.path.isdir(os.path.join(sweep_dir, d)) and
                 any(os.path.exists(os.path.join(sweep_dir, d, f)) for f in (LOG, "config.json", "metrics.jsonl")))
  if not names:
    raise FileNotFoundError(f"no runs in {sweep_dir}: it has no {SWEEP_RECORD} and no run folders")
  return names


def _last_segment(workdir: str) -> list[str] | None:
  """The lines of the last start of the run in its log (None: never started by a launcher)."""
  try:
    with open(os.path.join(workdir, LOG), "rb") as f:
      lines = f.read().decode(errors="replace").splitlines()
  except OSError:
    return None
  starts = [i for i, line in enumerate(lines) if line.startswith(START_MARK)]
  return lines[starts[-1]:] if starts else lines


def _exit_status(segment: list[str]) -> int | None:
  for line in reversed(segment):
    m = _EXIT.match(line)
    if m:
      return int(m.group(1))
  return None


def last_exit(workdir: str) -> int | None:
  """The exit status that the last start of a run logged (None: none logged, e.g. still running)."""
  segment = _last_segment(workdir)
  return _exit_status(segment) if segment else None


def last_error(workdir: str) -> str:
  """The last error line of the last start of a run (``xnn train: error: ...``, a traceback's last line)."""
  return _error_line(_last_segment(workdir) or [])


def _error_line(segment: list[str]) -> str:
  """The last line that reads as an error (``xnn train: error: ...``, a traceback's last line), else the last line."""
  body = [line.strip() for line in segment if line.strip() and not line.startswith((START_MARK, EXIT_MARK))]
  for line in reversed(body):
    if _ERROR.match(line):
      return line
  return body[-1] if body else "(no output)"


def _progress(workdir: str) -> tuple[int | None, float | None]:
  from xnn.train.metrics import read_metrics
  recs = read_metrics(os.path.join(workdir, "metrics.jsonl"))
  steps = [r["step"] for r in recs if r.get("type") in ("train", "eval")]
  accs = [r["test_accuracy"] for r in recs if r.get("type") == "eval" and "test_accuracy" in r]
  return (max(steps) if steps else None), (accs[-1] if accs else None)


def run_status(name: str, workdir: str) -> RunStatus:
  try:
    with open(os.path.join(workdir, "final.json")) as f:
      final = json.load(f)
    return RunStatus(name, "finished", final.get("step"), final.get("test_accuracy"), final.get("wall_time_s"))
  except (OSError, ValueError):
    pass
  step, acc = _progress(workdir)
  busy = probe_workdir(workdir)
  if busy is not None:
    h = busy.holder
    where = f"{h.host} pid {h.pid}" if h else "a process that recorded no holder"
    return RunStatus(name, "running", step, acc, where=where)
  segment = _last_segment(workdir)
  code = _exit_status(segment) if segment else None
  if code is not None and 0 < code < 128:
    return RunStatus(name, "failed", step, acc, error=_error_line(segment))
  from xnn.train.checkpoint import checkpoint_steps
  ckpts = checkpoint_steps(workdir) if os.path.isdir(workdir) else []
  return RunStatus(name, "pending", step, acc, checkpoint_step=ckpts[-1] if ckpts else None)


def sweep_status(sweep_dir: str) -> list[RunStatus]:
  return [run_status(n, os.path.join(sweep_dir, n)) for n in _runs(sweep_dir)]


def to_json(rows: list[RunStatus]) -> str:
  out: dict[str, Any] = {"runs": [dataclasses.asdict(r) for r in rows],
                         "counts": {s: sum(r.state == s for r in rows) for s in STATES}}
  return json.dumps(out, indent=1)


def render(rows: list[RunStatus], title: str) -> None:
  from rich.console import Console
  from rich.table import Table
  counts = ", ".join(f"{sum(r.state == s for r in rows)} {s}" for s in STATES)
  table = Table(title=f"{title}: {counts}")
  for col in ("run", "state", "step", "test accuracy", "detail"):
    table.add_column(col, overflow="fold")
  for r in rows:
    table.add_row(r.name, r.state, "" if r.step is None else str(r.step),
                  "" if r.test_accuracy is None else f"{r.test_accuracy:.4f}", r.detail())
  Console(width=max(120, Console().width)).print(table)
