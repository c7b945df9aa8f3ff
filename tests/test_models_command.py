"""``xnn models``: table and JSON listing of the registered models, its catalog and cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import pytest

from xnn.commands import models as cmd


def run_json(capsys, *args):
  assert cmd.main(["--json", *args]) == 0
  return json.loads(capsys.readouterr().out)


def test_json_lists_family_with_counts(capsys):
  rows = run_json(capsys, "--family", "parallel", "--no-macs")
  by_name = {r["name"]: r for r in rows}
  assert {"googlenet", "inception_v3", "inception_v4", "squeezenet1_0", "squeezenet1_1"} <= set(by_name)
  for r in rows:
    assert {"name", "family", "input_shape", "params"} <= set(r)
    assert r["family"] == "parallel" and isinstance(r["params"], int)
    assert len(r["input_shape"]) == 3
  assert by_name["googlenet"]["params"] == 6_624_904          # torchvision googlenet (no aux)
  assert by_name["squeezenet1_1"]["params"] == 1_235_496      # torchvision squeezenet1_1
  assert by_name["inception_v3"]["input_shape"] == [299, 299, 3]
  assert "macs" not in by_name["googlenet"]


def test_json_serial_defaults(capsys):
  rows = {r["name"]: r for r in run_json(capsys, "--family", "serial", "--no-macs")}
  assert rows["vgg16"]["params"] == 138_357_544               # torchvision vgg16
  assert rows["alexnet"]["params"] == 61_100_840              # torchvision alexnet
  assert rows["lenet5"]["params"] == 62_958                   # LeNet-5 docstring (the LeNet-5 homework, C=3)
  # CIFAR/digits networks are counted at their registry default of 10 classes.
  assert rows["vgg11_cifar"]["num_classes"] == 10 and rows["vgg11_cifar"]["params"] == 14_487_946
  assert rows["alexnet_original"]["input_shape"] == [227, 227, 3]


def test_macs_column_uses_xnn_cost(capsys, monkeypatch, tmp_path):
  # Parameters from the shipped catalog, MACs counted afresh (by the stand-in below) and kept in tmp_path.
  catalog = json.loads(cmd.CATALOG.read_text())
  params = {n: {"params": e["params"]} for n, e in catalog["models"].items()}
  (tmp_path / "catalog.json").write_text(json.dumps({"params_key": catalog["params_key"], "models": params}))
  monkeypatch.setattr(cmd, "CATALOG", tmp_path / "catalog.json")
  monkeypatch.setenv("XNN_CACHE_DIR", str(tmp_path))
  calls = []

  def analyze_model(name):
    calls.append(name)
    return types.SimpleNamespace(macs=len(name) * 1000)

  monkeypatch.setitem(sys.modules, "xnn.cost", types.SimpleNamespace(analyze_model=analyze_model))
  rows = run_json(capsys, "--family", "dense", "--macs")
  assert sorted(calls) == sorted(r["name"] for r in rows)
  assert all(r["macs"] == len(r["name"]) * 1000 for r in rows)
  assert {r["name"]: r["params"] for r in rows}["densenet121"] == 7_978_856   # torchvision densenet121


def test_table_output(capsys):
  assert cmd.main(["--family", "dense", "--no-macs"]) == 0
  out = capsys.readouterr().out
  assert "densenet264" in out and "33,337,704" in out and "224x224x3" in out


def test_unknown_family_is_an_error(capsys):
  with pytest.raises(SystemExit) as e:
    cmd.main(["--family", "nonexistent"])
  assert e.value.code == 2
  assert "families" in capsys.readouterr().err


# --- numbers by code version: key, catalog, cache ------------------------------------------


def test_key_ignores_docstrings_and_comments(tmp_path):
  a, b, c = tmp_path / "a.py", tmp_path / "b.py", tmp_path / "c.py"
  a.write_text('"""Module."""\n\ndef f(x):\n  """Doubles."""\n  return 2 * x  # comment\n')
  b.write_text('"""Another text."""\n# a new comment\n\n\ndef f(x):\n  """Twice x."""\n\n  return 2 * x\n')
  c.write_text('def f(x):\n  return 3 * x\n')
  assert cmd._code_tree(a) == cmd._code_tree(b) != cmd._code_tree(c)
  assert cmd.source_key("params") != cmd.source_key("macs")
  assert len(cmd.source_key("params")) == 16


def test_shipped_catalog_is_current_and_exact():
  """catalog.json must be regenerated (`xnn models --write-catalog`) whenever the code changes its numbers."""
  import xnn.models as M
  catalog = json.loads(cmd.CATALOG.read_text())
  assert catalog["params_key"] == cmd.source_key("params"), "stale catalog: run `xnn models --write-catalog`"
  assert catalog["macs_key"] == cmd.source_key("macs"), "stale catalog: run `xnn models --write-catalog`"
  assert catalog["train_only_key"] == cmd.source_key("train_only"), "stale catalog: run `xnn models --write-catalog`"
  assert set(catalog["models"]) == set(M.names())
  for name in ("lenet5", "resnet20", "squeezenet1_1", "mobilenet_v2_28", "lstm_classifier",
               "transformer_classifier"):
    assert catalog["models"][name] == {"params": cmd.count_params(name), "train_only": 0,
                                       "macs": cmd.count_macs(name)}, name
  # torchvision inception_v3(): 27,161,264 parameters, 3,326,696 of them in the AuxLogits head.
  assert catalog["models"]["inception_v3"]["params"] == 27_161_264
  assert catalog["models"]["inception_v3"]["train_only"] == 3_326_696 == cmd.count_train_only("inception_v3")


def test_catalog_answers_without_counting(monkeypatch, tmp_path):
  monkeypatch.setenv("XNN_CACHE_DIR", str(tmp_path))

  def fail(name):
    raise AssertionError(f"counted {name}")

  monkeypatch.setattr(cmd, "count_params", fail)
  monkeypatch.setattr(cmd, "count_macs", fail)
  catalog = json.loads(cmd.CATALOG.read_text())["models"]
  if json.loads(cmd.CATALOG.read_text())["macs_key"] != cmd.source_key("macs"):
    pytest.skip("stale catalog (test_shipped_catalog_is_current_and_exact fails)")
  rows = cmd.collect(with_macs=True)
  assert len(rows) == len(catalog) and all(r["params"] == catalog[r["name"]]["params"] for r in rows)
  assert all(r["macs"] == catalog[r["name"]]["macs"] for r in rows)


def test_cache_keeps_each_model_and_is_reused(monkeypatch, tmp_path, capsys):
  monkeypatch.setenv("XNN_CACHE_DIR", str(tmp_path))
  monkeypatch.setattr(cmd, "CATALOG", tmp_path / "no_catalog.json")
  calls = []

  def count(name):
    calls.append(name)
    if name == "densenet169":
      raise KeyboardInterrupt
    return len(name)

  monkeypatch.setattr(cmd, "count_params", count)
  monkeypatch.setattr(cmd, "count_train_only", lambda name: 0)
  with pytest.raises(KeyboardInterrupt):            # interrupted at the third model
    cmd.collect("dense")
  cache = tmp_path / "models" / f"params-{cmd.source_key('params')}.json"
  assert json.loads(cache.read_text()) == {"densenet121": 11, "densenet161": 11}
  err = capsys.readouterr().err
  assert "counting params and train_only of 5 models" in err and "[1/5] densenet121: 11 params, 0 train_only" in err
  calls.clear()
  monkeypatch.setattr(cmd, "count_params", lambda name: calls.append(name) or len(name))
  rows = cmd.collect("dense")
  assert calls == ["densenet169", "densenet201", "densenet264"]   # the first two come from the cache
  assert [r["params"] for r in rows] == [11] * 5
  calls.clear()
  capsys.readouterr()
  cmd.collect("dense")
  assert calls == [] and capsys.readouterr().err == ""          # all known: silent


def test_write_catalog(monkeypatch, tmp_path, capsys):
  monkeypatch.setenv("XNN_CACHE_DIR", str(tmp_path))
  monkeypatch.setattr(cmd, "count_params", len)
  monkeypatch.setattr(cmd, "count_train_only", lambda name: 7 * (name == "inception_v3"))
  monkeypatch.setattr(cmd, "count_macs", lambda name: 1000 * len(name))
  path = tmp_path / "catalog.json"
  catalog = cmd.write_catalog(path, use_cache=False)
  assert json.loads(path.read_text()) == catalog
  assert catalog["params_key"] == cmd.source_key("params") and catalog["macs_key"] == cmd.source_key("macs")
  assert catalog["models"]["resnet20"] == {"params": 8, "train_only": 0, "macs": 8000}
  assert catalog["models"]["inception_v3"] == {"params": 12, "train_only": 7, "macs": 12000}
  monkeypatch.setattr(cmd, "CATALOG", path)
  monkeypatch.setattr(cmd, "count_params", None)     # everything now comes from the catalog
  monkeypatch.setattr(cmd, "count_train_only", None)
  assert {r["name"]: r["params"] for r in cmd.collect("serial")}["lenet5"] == 6
  rows = cmd.collect("parallel")
  cmd.print_table(rows, with_macs=False)              # the training-only parameters are marked and named
  out = capsys.readouterr().out
  assert "12*" in out and "* includes parameters used only in training (auxiliary classifiers): inception_v3 7" in out


def _names_in(text):
  import re

  import xnn.models as M
  text = re.sub(r"\x1b\[[0-9;]*m", "", text)        # rich's styles on a terminal
  return [n for n in M.names() if any(line.split() and line.split()[0] == n for line in text.splitlines())]


def test_narrow_terminal_never_cuts_names(monkeypatch, capsys):
  import xnn.models as M
  rows = [{"name": n, "family": M.info(n).family, "input_shape": list(M.info(n).input_shape),
           "num_classes": M.info(n).num_classes, "params": 123_456_789, "macs": 4_089_184_256} for n in M.names()]
  cmd.print_table(rows, with_macs=True)            # not a terminal: plain text
  assert _names_in(capsys.readouterr().out) == M.names()
  monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
  for columns in ("80", "60"):                   # a terminal: rich when it fits, else plain text
    monkeypatch.setenv("COLUMNS", columns)
    cmd.print_table(rows, with_macs=True)
    out = capsys.readouterr().out
    assert _names_in(out) == M.names() and "…" not in out, columns


def test_xnn_models_subprocess_columns_80(tmp_path):
  env = {**os.environ, "COLUMNS": "80", "XNN_CACHE_DIR": str(tmp_path)}
  p = subprocess.run([sys.executable, "-m", "xnn.cli", "models", "--family", "serial"], capture_output=True,
                     text=True, env=env, timeout=300)
  assert p.returncode == 0, p.stderr
  import xnn.models as M
  assert _names_in(p.stdout) == M.names("serial")
