"""``xnn models``: table and JSON listing of the registered models."""

from __future__ import annotations

import json
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
  assert rows["lenet5"]["params"] == 62_958                   # LeNet-5 docstring (seed 003, C=3)
  # CIFAR/digits networks are counted at their registry default of 10 classes.
  assert rows["vgg11_cifar"]["num_classes"] == 10 and rows["vgg11_cifar"]["params"] == 14_487_946
  assert rows["alexnet_original"]["input_shape"] == [227, 227, 3]


def test_macs_column_uses_xnn_cost(capsys, monkeypatch):
  calls = []

  def analyze_model(name):
    calls.append(name)
    return types.SimpleNamespace(macs=len(name) * 1000)

  monkeypatch.setitem(sys.modules, "xnn.cost", types.SimpleNamespace(analyze_model=analyze_model))
  rows = run_json(capsys, "--family", "dense")
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
