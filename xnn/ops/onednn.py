"""2-D convolutions on the CPU through oneDNN (Intel's deep-learning kernel library).

XLA:CPU's own convolution kernels are slower than oneDNN's on the same cores
(benchmarks/RESULTS.md, "per-layer vs PyTorch": PyTorch's CPU convolutions are
oneDNN's).  This module calls oneDNN's convolution forward, backward-data and
backward-weights primitives from inside XLA programs as FFI custom calls
(``jax.ffi.ffi_call``), so they run in jitted steps and in ``lax.scan`` loop bodies
like any XLA operation.

Layouts are Flax's: NHWC activations (read and written in place) and HWIO kernels
(grouped: HW(I/G)O); oneDNN picks its kernel implementation for the CPU it finds
(AVX2/AVX-512 JIT code) and the kernel is reordered to its preferred layout per
call (the weight gradient back).  f32 and bf16.

The three primitives are each other's transposes, so each is a ``jax.custom_vjp``
whose backward pass is the other two (``dx = conv_bwd_data(dy, w)``,
``dw = conv_bwd_weights(x, dy)``, and so on): reverse-mode derivatives of any order
work, forward mode does not (a custom-vjp function).  ``vmap`` runs the call once
per batch element.

Build: the C++ source (``onednn_conv.cc``, next to this file) is compiled on first
use with the system's C++ compiler (``$CXX`` or ``g++``) against the oneDNN that
pip installs with xnn on Linux x86-64 (``onednn-cpu-gomp``, ``onednn-devel-cpu-gomp``)
and the XLA FFI headers shipped in jaxlib, into
``$XNN_EXT_CACHE`` (default ``~/.cache/xnn/ext``) under a name hashed from the
source, the jaxlib version, the oneDNN location and the compiler, atomically and
under a file lock (several processes may start at once).  It takes a few seconds,
once (a line on stderr says so while it builds).  When any of that is missing
(another OS or CPU, no compiler), ``available()`` is False,
``unavailable_reason()`` says why, and xnn's convolutions use their pure-JAX
formulations (``xnn.ops.conv``).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading

import jax
import numpy as np

from xnn.ops.geometry import output_spatial

__all__ = ["available", "unavailable_reason", "version", "conv2d", "library_path"]

_SOURCE = pathlib.Path(__file__).with_name("onednn_conv.cc")
_TARGETS = {"fwd": "XnnOnednnConvFwd", "bwd_data": "XnnOnednnConvBwdData",
            "bwd_weights": "XnnOnednnConvBwdWeights"}
_lock = threading.Lock()
_state: dict = {}


def _onednn_root() -> pathlib.Path | None:
  """The prefix holding include/oneapi/dnnl/dnnl.hpp and lib/libdnnl.so.3."""
  candidates = [os.environ.get("XNN_ONEDNN_ROOT"), sys.prefix, sys.base_prefix, "/usr"]
  for c in candidates:
    if not c:
      continue
    root = pathlib.Path(c)
    if (root / "include/oneapi/dnnl/dnnl.hpp").is_file() and _libdir(root) is not None:
      return root
  return None


def _libdir(root: pathlib.Path) -> pathlib.Path | None:
  for sub in ("lib", "lib64", "lib/x86_64-linux-gnu"):
    d = root / sub
    if any((d / n).exists() for n in ("libdnnl.so", "libdnnl.so.3")):
      return d
  return None


def _cache_dir() -> pathlib.Path:
  """``$XNN_EXT_CACHE``, else ``~/.cache/xnn/ext``; a per-user temp dir if that is not writable."""
  if os.environ.get("XNN_EXT_CACHE"):
    return pathlib.Path(os.environ["XNN_EXT_CACHE"])
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  d = pathlib.Path(base) / "xnn" / "ext"
  try:
    d.mkdir(parents=True, exist_ok=True)
    if os.access(d, os.W_OK):
      return d
  except OSError:
    pass
  return pathlib.Path(tempfile.gettempdir()) / f"xnn-ext-{os.getuid()}"


def _compiler() -> str | None:
  cxx = os.environ.get("CXX")
  if cxx and shutil.which(cxx.split()[0]):
    return cxx
  for name in ("g++", "c++", "clang++"):
    if shutil.which(name):
      return name
  return None


def _build() -> pathlib.Path:
  """Compile (once) and return the shared library's path; raises RuntimeError with why not."""
  if not sys.platform.startswith("linux"):
    raise RuntimeError(f"the oneDNN convolution is built on Linux only (this is {sys.platform})")
  root = _onednn_root()
  if root is None:
    raise RuntimeError("oneDNN not found (pip install onednn-cpu-gomp onednn-devel-cpu-gomp, "
                       "or set XNN_ONEDNN_ROOT to a prefix with include/oneapi/dnnl/dnnl.hpp)")
  cxx = _compiler()
  if cxx is None:
    raise RuntimeError("no C++ compiler found (set CXX or install g++)")
  import jaxlib
  ffi_include = pathlib.Path(jax.ffi.include_dir())
  libdir = _libdir(root)
  try:
    cxx_version = subprocess.run(cxx.split() + ["--version"], capture_output=True, text=True,
                                 timeout=30).stdout.splitlines()[:1]
  except (OSError, subprocess.SubprocessError) as e:
    raise RuntimeError(f"the C++ compiler {cxx!r} does not run: {e}") from e
  key = hashlib.sha256("\n".join([
      _SOURCE.read_text(), jaxlib.__version__, str(ffi_include), str(root), str(libdir),
      cxx, *cxx_version]).encode()).hexdigest()[:16]
  cache = _cache_dir()
  target = cache / f"libxnn_onednn_{key}.so"
  if target.is_file():
    return target
  cache.mkdir(parents=True, exist_ok=True)
  import filelock
  with filelock.FileLock(str(target) + ".lock", timeout=600):
    if target.is_file():             # another process built it while we waited
      return target
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=cache)
    os.close(fd)
    print(f"xnn: building the oneDNN convolution library {target.name} (once per machine)", file=sys.stderr,
          flush=True)
    cmd = cxx.split() + ["-O2", "-std=c++17", "-shared", "-fPIC", "-w", str(_SOURCE),
                         f"-I{ffi_include}", f"-I{root / 'include'}", f"-L{libdir}", "-ldnnl",
                         f"-Wl,-rpath,{libdir}", "-o", tmp]
    try:
      proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
      if proc.returncode != 0:
        raise RuntimeError(f"compiling {_SOURCE.name} failed ({' '.join(cmd)}):\n"
                           f"{proc.stderr[-4000:]}")
      os.replace(tmp, target)          # atomic: readers never see a half-written library
    finally:
      if os.path.exists(tmp):
        os.unlink(tmp)
  return target


def _load():
  """Build, load and register the FFI targets once per process; caches the outcome."""
  with _lock:
    if "ok" in _state:
      return _state
    try:
      path = _build()
      lib = ctypes.CDLL(str(path))
      lib.XnnOnednnVersion.restype = ctypes.c_char_p
      for op, sym in _TARGETS.items():
        jax.ffi.register_ffi_target(f"xnn_onednn_conv_{op}",
                                    jax.ffi.pycapsule(getattr(lib, sym)), platform="cpu")
      _state.update(ok=True, path=path, lib=lib, version=lib.XnnOnednnVersion().decode())
    except Exception as e:  # noqa: BLE001 - any failure means "use the JAX formulation"
      _state.update(ok=False, reason=f"{type(e).__name__}: {e}")
    return _state


def available() -> bool:
  """Whether oneDNN convolutions can run in this process (builds the library on first call)."""
  return _load()["ok"]


def unavailable_reason() -> str | None:
  """Why ``available()`` is False (None when it is True)."""
  s = _load()
  return None if s["ok"] else s["reason"]


def version() -> str | None:
  """oneDNN's version and CPU runtime code, e.g. '3.2.0 (2)' (2: OpenMP), or None."""
  s = _load()
  return s.get("version")


def library_path() -> pathlib.Path | None:
  """The compiled FFI library in use, or None."""
  return _load().get("path")


def output_shape(x_shape, k_shape, strides, pads, dilation):
  """NHWC output shape of the convolution (XLA's and oneDNN's formula)."""
  return (x_shape[0], *output_spatial(x_shape[1:3], k_shape[:2], strides, pads, dilation), k_shape[3])


def _call(op, a, b, out_shape, cfg):
  strides, pads, dilation, groups = cfg
  return jax.ffi.ffi_call(
      f"xnn_onednn_conv_{op}", jax.ShapeDtypeStruct(out_shape, a.dtype),
      vmap_method="sequential")(
          a, b, strides=np.asarray(strides, np.int64),
          pad_lo=np.asarray([p[0] for p in pads], np.int64),
          pad_hi=np.asarray([p[1] for p in pads], np.int64),
          dilation=np.asarray(dilation, np.int64), groups=np.int64(groups))


@functools.lru_cache(maxsize=None)
def _ops(cfg, x_shape, k_shape, y_shape):
  """The three mutually-transposed custom-vjp primitives for one static configuration."""

  @jax.custom_vjp
  def fwd(x, w):
    return _call("fwd", x, w, y_shape, cfg)

  @jax.custom_vjp
  def bwd_data(dy, w):
    return _call("bwd_data", dy, w, x_shape, cfg)

  @jax.custom_vjp
  def bwd_weights(x, dy):
    return _call("bwd_weights", x, dy, k_shape, cfg)

  # y = A_w x.  <dy, A_w x> gives dx = A_w^T dy (bwd_data) and dw = bwd_weights(x, dy);
  # the same bilinear form read the other ways gives each primitive's own gradients.
  fwd.defvjp(lambda x, w: (fwd(x, w), (x, w)),
             lambda r, g: (bwd_data(g, r[1]), bwd_weights(r[0], g)))
  bwd_data.defvjp(lambda dy, w: (bwd_data(dy, w), (dy, w)),
                  lambda r, g: (fwd(g, r[1]), bwd_weights(g, r[0])))
  bwd_weights.defvjp(lambda x, dy: (bwd_weights(x, dy), (x, dy)),
                     lambda r, g: (bwd_data(r[1], g), fwd(r[0], g)))
  return fwd


def supports(lhs, rhs, strides, pads, dilation, preferred_element_type=None) -> bool:
  """Whether ``conv2d`` handles these operands (2-D, f32/bf16 alike, non-empty output)."""
  if lhs.ndim != 4 or rhs.ndim != 4 or lhs.dtype != rhs.dtype:
    return False
  if str(lhs.dtype) not in ("float32", "bfloat16"):
    return False
  if preferred_element_type is not None and np.dtype(preferred_element_type) != lhs.dtype:
    return False
  if 0 in lhs.shape or 0 in rhs.shape:
    return False
  return min(output_shape(lhs.shape, rhs.shape, strides, pads, dilation)[1:3]) >= 1


def conv2d(lhs, rhs, strides, pads, dilation, groups):
  """NHWC x HWIO convolution (explicit non-negative pads) computed by oneDNN.

  Same value as ``lax.conv_general_dilated(lhs, rhs, strides, pads, None, dilation,
  ('NHWC', 'HWIO', 'NHWC'), groups)`` up to summation order.
  """
  cfg = (tuple(strides), tuple(tuple(p) for p in pads), tuple(dilation), int(groups))
  y_shape = output_shape(lhs.shape, rhs.shape, *cfg[:3])
  if min(y_shape[1:3]) < 1:
    raise ValueError(f"convolution output would be empty: {y_shape}")
  return _ops(cfg, tuple(lhs.shape), tuple(rhs.shape), y_shape)(lhs, rhs)
