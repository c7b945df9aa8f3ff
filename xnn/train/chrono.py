"""Training time apart from everything else (big_vision's ``chrono``).

The loop counts the steps it runs (``count``) and brackets what is not training --
compilation, evaluation, checkpointing -- with ``paused()``. ``rate()`` gives the
steps per second of training time since the previous call; ``total_s`` is all the
training time so far.
"""

from __future__ import annotations

import contextlib
import time


class Chrono:
  def __init__(self, clock=time.perf_counter):
    self._clock = clock
    self._paused_at: float | None = None
    self._paused_s = 0.0            # paused time since the last rate()
    self._mark = clock()
    self._steps = 0
    self.total_s = 0.0

  def count(self, steps: int) -> None:
    """``steps`` more steps ran in training time."""
    self._steps += steps

  def pause(self) -> None:
    if self._paused_at is None:
      self._paused_at = self._clock()

  def resume(self) -> None:
    if self._paused_at is not None:
      self._paused_s += self._clock() - self._paused_at
      self._paused_at = None

  @contextlib.contextmanager
  def paused(self):
    """The block's time is not training time."""
    was_paused = self._paused_at is not None
    self.pause()
    try:
      yield
    finally:
      if not was_paused:
        self.resume()

  def rate(self) -> float:
    """Steps per second of training time since the last call (0 when no step was counted)."""
    now = self._clock()
    paused = self._paused_s + (now - self._paused_at if self._paused_at is not None else 0.0)
    elapsed = max(now - self._mark - paused, 0.0)
    steps = self._steps
    self.total_s += elapsed
    self._mark, self._paused_s, self._steps = now, 0.0, 0
    if self._paused_at is not None:
      self._paused_at = now
    return steps / elapsed if steps and elapsed > 0 else 0.0
