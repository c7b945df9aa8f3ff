"""What the training job prints while it runs: a bar on a terminal, plain lines elsewhere.

On a terminal (stderr is a TTY) a tqdm bar shows steps, rate, loss and accuracy. When
stderr is a file -- a sweep's ``launcher.log``, a Slurm log -- carriage-return updates
would pile up, so a plain line is printed every ``every_s`` seconds instead. Only the
main process prints (every host runs the same program).
"""

from __future__ import annotations

import sys
import time

import jax


class Progress:
  def __init__(self, total: int, initial: int, enabled: bool = True, every_s: float = 30.0, stream=None):
    self.stream = stream or sys.stderr
    self.enabled = enabled and jax.process_index() == 0
    self.total, self.step, self.every_s = total, initial, every_s
    self._last_line = time.time()
    self._postfix: dict[str, str] = {}
    self._bar = None
    if self.enabled and self.stream.isatty():
      from tqdm.auto import tqdm
      self._bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, file=self.stream)

  def say(self, msg: str) -> None:
    """A line of its own (above the bar on a terminal); main process only."""
    if jax.process_index() != 0:
      return
    if self._bar is not None:
      self._bar.write(msg, file=sys.stdout)
    else:
      print(msg, flush=True)

  def update(self, n: int, **postfix: str) -> None:
    """``n`` more steps done; ``postfix``: the latest metrics to show."""
    self.step += n
    self._postfix.update(postfix)
    if not self.enabled:
      return
    if self._bar is not None:
      self._bar.update(n)
      if postfix:
        self._bar.set_postfix(**postfix)
    elif time.time() - self._last_line >= self.every_s:
      self._line()

  def _line(self) -> None:
    metrics = " ".join(f"{k} {v}" for k, v in self._postfix.items())
    print(f"step {self.step}/{self.total} ({100 * self.step / max(self.total, 1):.0f}%) {metrics}".rstrip(),
          file=self.stream, flush=True)
    self._last_line = time.time()

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
      self._bar = None
