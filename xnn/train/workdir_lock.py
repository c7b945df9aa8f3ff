"""One writer per workdir: an exclusive ``flock`` on ``WORKDIR/.lock.pN``, held for the run's whole life.

``hold_workdir(workdir)`` takes ``fcntl.flock(LOCK_EX | LOCK_NB)`` on a lock file and
records who holds it (host, pid, start time, command) in that file. The lock belongs
to the open file, so the kernel drops it when the holder's process ends, however it
ends: a ``kill -9``, an out-of-memory kill or a crash never leaves a stale lock, and
the next taker succeeds (the dead holder's record in the file is simply overwritten).
A second taker fails at once with ``WorkdirBusy``, naming the holder. A clean release
removes the lock file, so a finished run leaves nothing behind.

Multi-host runs: every process of one run shares the workdir, so each process locks
its own file, ``.lock.p<process index>``. Process 0 of any two runs meets on
``.lock.p0``; a straggler of an earlier run (process 3 still alive after process 0
died) is found by the new run's process 3. One file for the whole run would make the
processes of one run refuse each other, and locking on process 0 alone would miss
stragglers.

Why not the ``filelock`` package: it falls back to a "soft" lock file (a marker that
a killed holder leaves behind) where ``flock`` is unavailable, and has no public way
to write the holder's record into the locked file; here ``flock`` either works or the
error says why. ``flock`` works across hosts on NFS (Linux emulates it with NFS byte
range locks; a lock of a crashed *host* lasts until the server's lease expires) and
on Lustre mounted with ``-o flock``. Workdirs that are URLs (``gs://...``) are not
locked (a warning says so).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import fcntl
import json
import os
import socket
import sys
import time
from typing import Iterator

LOCK_PREFIX = ".lock.p"
_BUSY = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES)   # flock's "held by another" (EACCES on some NFS)
_RETRIES = 5          # a refusal retries this often, 50 ms apart: a holder that has just locked writes its record


@dataclasses.dataclass(frozen=True)
class Holder:
  """Who holds a workdir: what the lock file records."""
  pid: int
  host: str
  since: str                 # ISO 8601, UTC, e.g. 2026-12-02T01:30:00Z
  process_index: int = 0
  command: str = "xnn train"

  def describe(self) -> str:
    proc = f" (process {self.process_index} of its run)" if self.process_index else ""
    return f"pid {self.pid}{proc} on host {self.host} since {self.since} (another {self.command})"


class WorkdirBusy(ValueError):
  """Another live process holds the workdir's lock."""

  def __init__(self, workdir: str, holder: Holder | None, lock_file: str):
    who = holder.describe() if holder else f"another process (no holder recorded in {lock_file})"
    super().__init__(f"workdir {workdir} is in use by {who}; wait for it or use another --workdir")
    self.workdir, self.holder, self.lock_file = workdir, holder, lock_file


def lock_path(workdir: str, process_index: int = 0) -> str:
  return os.path.join(workdir, f"{LOCK_PREFIX}{process_index}")


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _read_holder(fd: int) -> Holder | None:
  try:
    data = json.loads(os.pread(fd, 4096, 0).decode())
    return Holder(**{f.name: data[f.name] for f in dataclasses.fields(Holder) if f.name in data})
  except (OSError, ValueError, TypeError, KeyError):
    return None


def _try_lock(fd: int) -> bool:
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return True
  except OSError as e:
    if e.errno in _BUSY:
      return False
    raise


def _same_file(fd: int, path: str) -> bool:
  """Whether ``path`` still names the file open as ``fd`` (a releasing holder unlinks it)."""
  try:
    st, cur = os.fstat(fd), os.stat(path)
  except FileNotFoundError:
    return False
  return (st.st_dev, st.st_ino) == (cur.st_dev, cur.st_ino)


def _acquire(workdir: str, path: str) -> int:
  """An fd of ``path`` holding its exclusive lock; ``WorkdirBusy`` if a live process holds it."""
  for attempt in range(_RETRIES + 1):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    if _try_lock(fd):
      if _same_file(fd, path):
        return fd
      os.close(fd)          # locked a file its holder has just removed: open the new one
      continue
    if attempt == _RETRIES:
      holder = _read_holder(fd)
      os.close(fd)
      raise WorkdirBusy(workdir, holder, path)
    os.close(fd)
    time.sleep(0.05)
  raise WorkdirBusy(workdir, None, path)


@contextlib.contextmanager
def hold_workdir(workdir: str, process_index: int | None = None, command: str = "xnn train") -> Iterator[Holder]:
  """Holds ``workdir``'s lock for this process (``.lock.p<process_index>``) while the block runs.

  Creates the folder if needed. ``process_index`` defaults to ``jax.process_index()``.
  Raises ``WorkdirBusy`` at once if a live process holds it, ``ValueError`` if the
  folder cannot be written. Yields the recorded ``Holder``.
  """
  if "://" in workdir:
    print(f"warning: workdir {workdir} is not a local path; it is not locked against a second writer",
          file=sys.stderr)
    yield Holder(os.getpid(), socket.gethostname(), _now(), process_index or 0, command)
    return
  if process_index is None:
    import jax
    process_index = jax.process_index()
  path = lock_path(workdir, process_index)
  created = not os.path.isdir(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
    fd = _acquire(workdir, path)
  except OSError as e:
    raise ValueError(f"workdir {workdir!r} is not writable: {e.strerror or e}") from None
  holder = Holder(os.getpid(), socket.gethostname(), _now(), process_index, command)
  try:
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(dataclasses.asdict(holder)) + "\n").encode(), 0)
    yield holder
  finally:
    if _same_file(fd, path):
      os.unlink(path)       # while still locked: a waiter that opened it sees it gone and retries
    os.close(fd)            # drops the lock
    if created:             # a run refused before writing anything leaves no empty folder behind
      with contextlib.suppress(OSError):
        os.rmdir(workdir)


def probe_workdir(workdir: str) -> WorkdirBusy | None:
  """The ``WorkdirBusy`` a writer of ``workdir`` would get now (naming the live holder), or None. Creates nothing.

  A free lock is taken shared for an instant to find out; a writer starting in that
  instant retries (see ``_RETRIES``).
  """
  try:
    names = sorted(n for n in os.listdir(workdir) if n.startswith(LOCK_PREFIX))
  except (FileNotFoundError, NotADirectoryError):
    return None
  for name in names:
    path = os.path.join(workdir, name)
    try:
      fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
      continue
    try:
      try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        continue            # free (closing the fd drops the probe's lock)
      except OSError as e:
        if e.errno not in _BUSY:
          raise
      time.sleep(0.05)      # a holder that has just locked writes its record
      return WorkdirBusy(workdir, _read_holder(fd), path)
    finally:
      os.close(fd)
  return None
