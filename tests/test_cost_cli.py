"""`xnn cost` command line (xnn/commands/cost.py): formats, errors, roofline, ERF."""

import json

import pytest

from xnn.cli import main as xnn_main
from xnn.commands.cost import main


def _run(capsys, *argv):
  """`xnn cost ARGV` through the xnn entry point (which turns bad input into one error line)."""
  rc = xnn_main(["cost", *argv])
  out = capsys.readouterr()
  return rc, out.out, out.err


def test_json_keys(capsys):
  rc, out, _ = _run(capsys, "lenet5", "--format", "json")
  assert rc == 0
  d = json.loads(out)
  for k in ("params", "macs", "flops", "activation_elements"):
    assert isinstance(d[k], int)
  assert d["params"] == 62_958 and d["macs"] == 849_320   # see tests/test_cost_models.py
  assert d["receptive_field"] == {"size": 16, "stride": 4, "padding": 0}
  assert d["flops"] == 2 * d["macs"] + d["other_ops"]
  conv1 = d["layers"][0]
  assert conv1["name"] == "conv1" and conv1["params"] == 608 and conv1["macs"] == 470_400
  assert conv1["receptive_field"] == {"size": 5, "stride": 1, "padding": 0}
  assert "backward_macs" not in d


def test_json_train(capsys):
  rc, out, _ = _run(capsys, "lenet5", "--format", "json", "--train", "--batch", "4")
  d = json.loads(out)
  # batch 4: 4 x 849,320 forward MACs. Backward per image, by hand:
  #   fc layers: weight + data gradients, 2 x (48,000 + 10,080 + 840) = 117,840
  #   conv2 weight gradient = its forward, 320,000; conv2 data gradient is the *full* 5x5
  #   convolution of the 10x10x16 gradient (padding 4, padded taps count) onto 14x14x8:
  #   14*14*8 * 25*16 = 627,200; conv1: weight gradient only (the input needs none), 470,400.
  assert d["macs"] == 4 * 849_320
  assert d["backward_macs"] == 4 * (117_840 + 320_000 + 627_200 + 470_400)
  assert isinstance(d["peak_bytes"], int) and d["peak_bytes"] > 0


def test_table_depth_and_totals(capsys):
  rc, out, _ = _run(capsys, "resnet20", "--depth", "1")
  assert rc == 0
  lines = out.splitlines()
  assert lines[0].split()[:3] == ["layer", "type", "input"]
  assert any(line.startswith("stage3_block3") for line in lines)
  assert not any(line.startswith("stage3_block3/") for line in lines)
  total = next(line for line in lines if line.startswith("total"))
  assert "269,722" in total and "40,551,040" in total


def test_csv_and_markdown_and_device(capsys):
  rc, out, _ = _run(capsys, "lenet5", "--format", "csv")
  assert out.splitlines()[0].startswith("layer,type,input,output,kernel,stride,params,MACs")
  assert out.splitlines()[1].startswith("conv1,conv,32x32x3,28x28x8,5,1,608,470400")
  rc, out, _ = _run(capsys, "lenet5", "--format", "markdown", "--device", "h100")
  assert out.startswith("| layer |") and "bound" in out and "estimated time on H100" in out


def test_bad_model_lists_available(capsys):
  rc, _, err = _run(capsys, "resnet_does_not_exist")
  assert rc == 2 and "resnet20" in err and "lenet5" in err


def test_bad_input(capsys):
  with pytest.raises(SystemExit) as e:
    main(["lenet5", "--input", "32,32,x"])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert "'32,32,x'" in err and "224,224,3" in err
  # an input too small for the network is reported with the shape, not a traceback
  rc, _, err = _run(capsys, "lenet5", "--input", "8,8,3")
  assert rc == 2 and "8,8,3" in err


def test_bad_device(capsys):
  rc, _, err = _run(capsys, "lenet5", "--device", "tpu-v9")
  assert rc == 2 and "h100" in err


def test_erf_png(capsys, tmp_path):
  png = tmp_path / "erf.png"
  rc, out, _ = _run(capsys, "lenet5", "--erf", str(png))
  assert rc == 0 and png.exists() and png.stat().st_size > 0
  assert "effective receptive field" in out


def test_device_presets_and_measure():
  from xnn.cost import DEVICES, get_device
  from xnn.cost.roofline import estimate
  # H100 SXM5 datasheet: 989 TFLOP/s dense bf16, 3.35 TB/s
  h100 = DEVICES["h100"]
  assert h100.flops_bf16 == 989e12 and h100.bandwidth == 3.35e12
  # 1 GFLOP moving 1 MB: compute 1e9/67e12 = 15 us (f32) > memory 1e6/3.35e12 = 0.3 us
  t, bound = estimate(10**9, 10**6, h100)
  assert bound == "compute" and t == pytest.approx(1e9 / 67e12)
  t, bound = estimate(10**6, 10**9, h100, "bfloat16")
  assert bound == "memory" and t == pytest.approx(1e9 / 3.35e12)
  m = get_device("measure")
  assert m.flops_f32 > 1e8 and m.bandwidth > 1e8
