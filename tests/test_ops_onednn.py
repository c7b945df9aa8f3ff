"""xnn.ops.onednn: building the FFI library, and the fallback when it cannot be built.

(Values and gradients against XLA's are in tests/test_ops_conv.py, which runs every
case through oneDNN too.)
"""

import os

import jax
import jax.numpy as jnp
import pytest

from xnn.ops import conv_general_dilated, onednn

NHWC = ("NHWC", "HWIO", "NHWC")


def _jaxpr():
  x, w = jnp.ones((1, 6, 6, 4)), jnp.ones((3, 3, 4, 4))
  return str(jax.make_jaxpr(lambda a: conv_general_dilated(
      a, w, (1, 1), "SAME", dimension_numbers=NHWC))(x))


def test_build_into_a_fresh_cache_is_atomic_and_reused(tmp_path, monkeypatch):
  if onednn._onednn_root() is None or onednn._compiler() is None:
    pytest.skip(f"cannot build here: {onednn.unavailable_reason()}")
  monkeypatch.setenv("XNN_EXT_CACHE", str(tmp_path / "ext"))
  path = onednn._build()
  assert path.parent == tmp_path / "ext" and path.name.startswith("libxnn_onednn_")
  # only the library (and its lock file) are left: no half-written temporary
  assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, path.name + ".lock"])
  mtime = os.stat(path).st_mtime_ns
  assert onednn._build() == path and os.stat(path).st_mtime_ns == mtime   # not rebuilt


def test_build_errors_name_what_is_missing(monkeypatch):
  monkeypatch.setattr(onednn, "_onednn_root", lambda: None)
  with pytest.raises(RuntimeError, match="oneDNN not found.*onednn-cpu-gomp.*XNN_ONEDNN_ROOT"):
    onednn._build()
  monkeypatch.undo()
  if onednn._onednn_root() is None:
    pytest.skip("oneDNN is not installed here")
  monkeypatch.setattr(onednn, "_compiler", lambda: None)
  with pytest.raises(RuntimeError, match="no C\\+\\+ compiler found"):
    onednn._build()


def test_compile_failure_reports_the_compiler_output(tmp_path, monkeypatch):
  if onednn._onednn_root() is None or onednn._compiler() is None:
    pytest.skip("cannot build here")
  bad = tmp_path / "bad.cc"
  bad.write_text("this is not C++\n")
  monkeypatch.setattr(onednn, "_SOURCE", bad)
  monkeypatch.setenv("XNN_EXT_CACHE", str(tmp_path / "ext"))
  with pytest.raises(RuntimeError, match="compiling bad.cc failed"):
    onednn._build()
  assert [p.name for p in (tmp_path / "ext").iterdir() if not p.name.endswith(".lock")] == []


def test_unavailable_falls_back_to_the_jax_formulation(monkeypatch):
  monkeypatch.setattr(onednn, "_state", {"ok": False, "reason": "RuntimeError: no C++ compiler found"})
  monkeypatch.delenv("XNN_CPU_CONV", raising=False)
  txt = _jaxpr()                                   # auto: quietly the pure-JAX gradients
  assert "ffi_call" not in txt and "custom_vjp_call" in txt
  monkeypatch.setenv("XNN_CPU_CONV", "onednn")     # insisting: an error that says why
  with pytest.raises(RuntimeError, match="XNN_CPU_CONV=onednn but .* unavailable: .*no C\\+\\+ compiler"):
    _jaxpr()


def test_supports():
  x, w = jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 4, 5))
  s, p, d = (1, 1), ((1, 1), (1, 1)), (1, 1)
  assert onednn.supports(x, w, s, p, d)
  assert onednn.supports(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), s, p, d)
  assert not onednn.supports(x, w.astype(jnp.bfloat16), s, p, d)           # mixed dtypes
  assert not onednn.supports(x, w, s, p, d, preferred_element_type=jnp.bfloat16)
  assert not onednn.supports(x.astype(jnp.float16), w.astype(jnp.float16), s, p, d)
  assert not onednn.supports(x, jnp.ones((9, 9, 4, 5)), s, ((0, 0), (0, 0)), d)   # empty output
  assert onednn.output_shape((2, 8, 8, 4), (3, 3, 4, 5), (2, 2), ((1, 1), (0, 1)), (1, 2)) == (2, 4, 3, 5)
