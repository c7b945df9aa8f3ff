"""Compilation: JAX's persistent compilation cache, and how long compiling took.

``config.train.compilation_cache`` chooses where compiled programs are kept
between processes, so a re-launched run, a resumed run or the second run of a
sweep loads its train step instead of recompiling it:

* ``user`` (default): ``$XNN_CACHE_DIR`` or ``$XDG_CACHE_HOME/xnn/jax``
  (``~/.cache/xnn/jax``), shared by every run of this user on this machine;
* ``workdir``: ``WORKDIR/jax_cache``, private to one run (kept with its outputs);
* ``off``: no persistent cache;
* any other string: that directory.

A cache directory set by the user for JAX itself (``JAX_COMPILATION_CACHE_DIR``)
wins over ``user``. Programs that compile in under
``train.compilation_cache_min_s`` seconds are not stored (JAX's
``jax_persistent_cache_min_compile_time_secs``). The cache is bounded
(``train.compilation_cache_max_gb``, least recently used entries go first), which
also makes JAX guard it with a file lock, so that the parallel runs of a sweep
can share it safely.

``CompileTimer`` adds up JAX's own compilation events (tracing, lowering to MLIR,
XLA compilation) and persistent-cache hits and misses, so that compile time is
reported apart from step time in ``metrics.jsonl``.
"""

from __future__ import annotations

import os
import tempfile
import threading

import jax
from jax import monitoring

_DURATION_EVENTS = {
    "/jax/core/compile/jaxpr_trace_duration": "trace_s",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower_s",
    "/jax/core/compile/backend_compile_duration": "xla_compile_s",
}
_COUNT_EVENTS = {
    "/jax/compilation_cache/cache_hits": "cache_hits",
    "/jax/compilation_cache/cache_misses": "cache_misses",
}


def user_cache_dir(sub: str = "jax") -> str:
  """``$XNN_CACHE_DIR/<sub>``, else ``$XDG_CACHE_HOME/xnn/<sub>`` (``~/.cache/xnn/<sub>``): xnn's
  per-user caches (compiled programs; ``xnn models``'s counts under ``models``)."""
  if os.environ.get("XNN_CACHE_DIR"):
    return os.path.join(os.environ["XNN_CACHE_DIR"], sub)
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "xnn", sub)


def cache_dir_for(setting: str, workdir: str) -> str | None:
  """The directory that ``train.compilation_cache = setting`` names (None: off)."""
  if setting in ("off", "none", ""):
    return None
  if setting == "user":
    return os.environ.get("JAX_COMPILATION_CACHE_DIR") or user_cache_dir()
  if setting == "workdir":
    return os.path.join(workdir, "jax_cache")
  return setting


def check_cache_dir(setting: str, workdir: str) -> str | None:
  """The directory of ``cache_dir_for(setting, workdir)``, created and checked writable (None: off).

  A folder that cannot be created or written raises ``ValueError`` naming
  ``train.compilation_cache``, its setting and the path. Remote paths (``gs://...``)
  are left to JAX.
  """
  path = cache_dir_for(setting, workdir)
  if path is None or "://" in path:
    return path
  what = f"train.compilation_cache={setting!r}" + ("" if path == setting else f" (folder {path!r})")
  try:
    os.makedirs(path, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix=".xnn_write_test.", dir=path)
    os.close(fd)
    os.unlink(probe)
  except OSError as e:
    raise ValueError(f"{what} cannot be used: {e.strerror or e}; expected a writable folder, "
                     "or 'user', 'workdir' or 'off'") from None
  return path


def enable_persistent_cache(setting: str, workdir: str, min_compile_s: float = 0.5,
                            max_gb: float = 4.0) -> str | None:
  """Points JAX's persistent compilation cache at ``cache_dir_for(setting, workdir)``.

  Returns the directory in use (None when off); a folder that cannot be created or
  written is a ``ValueError`` (``check_cache_dir``). Switching directories within one
  process resets JAX's cache object, so the new directory takes effect.
  """
  from jax.experimental.compilation_cache import compilation_cache as cc

  path = check_cache_dir(setting, workdir)
  max_size = int(max_gb * 2**30) if max_gb > 0 else -1
  if jax.config.jax_compilation_cache_dir != path or jax.config.jax_compilation_cache_max_size != max_size:
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_compilation_cache_max_size", max_size)
    cc.reset_cache()
  jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_s))
  return path


class CompileTimer:
  """Adds up JAX's compilation events while active (a context manager).

  ``totals()`` gives seconds spent tracing (``trace_s``), lowering (``lower_s``) and
  in XLA (``xla_compile_s``), their sum ``compile_s``, and persistent-cache
  ``cache_hits`` / ``cache_misses`` -- process-wide, so also what other threads compile.
  """

  def __init__(self):
    self._lock = threading.Lock()
    self._t = {v: 0.0 for v in _DURATION_EVENTS.values()}
    self._n = {v: 0 for v in _COUNT_EVENTS.values()}

  def _on_duration(self, event: str, duration: float, **_) -> None:
    key = _DURATION_EVENTS.get(event)
    if key:
      with self._lock:
        self._t[key] += float(duration)

  def _on_event(self, event: str, **_) -> None:
    key = _COUNT_EVENTS.get(event)
    if key:
      with self._lock:
        self._n[key] += 1

  def __enter__(self) -> "CompileTimer":
    monitoring.register_event_duration_secs_listener(self._on_duration)
    monitoring.register_event_listener(self._on_event)
    return self

  def __exit__(self, *exc) -> None:
    monitoring.unregister_event_duration_listener(self._on_duration)
    monitoring.unregister_event_listener(self._on_event)

  def totals(self) -> dict[str, float | int]:
    with self._lock:
      out: dict[str, float | int] = {k: round(v, 4) for k, v in self._t.items()}
      out["compile_s"] = round(sum(self._t.values()), 4)
      out.update(self._n)
    return out
