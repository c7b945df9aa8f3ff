"""``xnn cost --by-level`` (xnn/cost/levels.py) and ``xnn cost --config/--kwargs`` (xnn/commands/cost.py)."""

import json

import pytest

from xnn.cli import main as xnn_main
from xnn.cost import analyze_model, levels
from xnn.cost.levels import name_ranges, totals

SUMMED = ("params", "param_bytes", "macs", "activation_elements", "activation_bytes")


def _run(capsys, *argv):
  rc = xnn_main(["cost", *argv])
  out = capsys.readouterr()
  return rc, out.out, out.err


@pytest.mark.parametrize("name", ["mobilenet_v2_28", "resnet20", "lenet5"])
def test_level_totals_equal_the_per_layer_totals(name):
  rep = analyze_model(name)
  table = levels(rep)
  total = totals(table)
  for field in SUMMED:
    per_layer = sum(getattr(layer, "output_elements" if field == "activation_elements" else field)
                    for layer in rep.layers)
    assert getattr(total, field) == per_layer == getattr(rep, field), field
  assert total.largest_map == max(layer.output_elements for layer in rep.layers)
  assert total.field_out[0] == rep.receptive_field["size"]
  # every row belongs to exactly one block of one level
  blocks = [b for lv in table for b in lv.blocks]
  assert len(blocks) == len({(i, b) for i, b in enumerate(blocks)})


def test_mobilenet_v2_28_levels_against_the_design_homework():
  """The design homework's MobileNet V2 28x28 (practice, question 10): levels of 4 / 6 / 3 inverted residuals
  at 28x28, 14x14 and 7x7 after a 3x3 tail, a 1x1 conv to 256, GAP and a dense layer.

  The homework's per-block numbers that are right are reproduced: filter memory 1,024 + 576 + 1,024 (level 1),
  8,192 + 1,152 + 8,192 (level 2), 32,768 + 2,304 + 32,768 (level 3) weights, plus BN; 1x1 MACs 802,816
  (level 1) and 1,605,632 (level 2); the depthwise MACs are out positions x 9 taps x channels (28*28*9*64 =
  451,584, not the homework's 518K from the padded 30x30 input). Receptive field 53, not 73 (docs/cost.md).
  """
  table = levels(analyze_model("mobilenet_v2_28"))
  assert [lv.name for lv in table] == ["28x28", "14x14", "7x7", "head"]
  assert [lv.blocks for lv in table] == [
      ["conv1"] + [f"stage1_block{i}" for i in range(1, 5)], [f"stage2_block{i}" for i in range(1, 7)],
      [f"stage3_block{i}" for i in range(1, 4)] + ["conv_last"], ["head"]]
  level1, level2, level3, _ = table
  bn = lambda *channels: sum(2 * c for c in channels)          # BatchNorm scale and offset
  assert level1.repeat.params == 1_024 + 576 + 1_024 + bn(64, 64, 16)
  assert level2.repeat.params == 8_192 + 1_152 + 8_192 + bn(128, 128, 64)
  assert level3.repeat.params == 32_768 + 2_304 + 32_768 + bn(256, 256, 128)
  assert level1.repeat.macs == 802_816 + 28 * 28 * 9 * 64 + 802_816
  assert level2.repeat.macs == 1_605_632 + 14 * 14 * 9 * 128 + 1_605_632
  assert level3.repeat.macs == 7 * 7 * 128 * 256 * 2 + 7 * 7 * 9 * 256
  # one more block adds 2 j pixels of field, j the level's stride: 1, 2, 4
  assert [lv.repeat.field_growth for lv in table[:3]] == [(2, 2), (4, 4), (8, 8)]
  assert [lv.cost.field_out for lv in table[:3]] == [(11, 11), (33, 33), (53, 53)]
  # the largest map of level 2 is its first block's expansion, still at 28x28 (the stride is on the depthwise)
  assert level2.cost.largest_map == 28 * 28 * 128


def test_name_ranges():
  assert name_ranges(["conv1", "stage1_block1", "stage1_block2", "stage1_block3"]) == "conv1, stage1_block1..3"
  assert name_ranges(["(top)", "conv2", "(top)", "head"]) == "(top), conv2, (top), head"


def test_by_level_cli_formats(capsys):
  rc, out, _ = _run(capsys, "mobilenet_v2_28", "--by-level", "--format", "json")
  assert rc == 0
  d = json.loads(out)
  assert d["total"]["macs"] == d["macs"] == 42_376_192 and d["total"]["params"] == d["params"] == 341_850
  assert [lv["level"] for lv in d["levels"]] == ["28x28", "14x14", "7x7", "head"]
  assert d["levels"][2]["repeat_block"]["name"] == "stage3_block3"
  rc, out, _ = _run(capsys, "resnet20", "--by-level", "--format", "markdown")
  assert rc == 0 and "| 16x16 | 3: stage2_block1..3 | 16x16x32 |" in out


def test_config_costs_the_model_as_the_config_builds_it(capsys, tmp_path):
  """A config's kwargs, dtype and input size (data.image_size, channels) and the data set's classes."""
  config = tmp_path / "cfg.py"
  config.write_text(
      "from xnn.configs.default import get_config as default\n"
      "def get_config(arg=None):\n"
      "  c = default()\n"
      "  c.model.name = 'resnet20'\n"
      "  c.model.kwargs.widths = (8, 16, 32)\n"
      "  c.model.dtype = arg or 'float32'\n"
      "  c.data.image_size = 16\n"
      "  return c\n")
  rc, out, _ = _run(capsys, "--config", str(config), "--format", "json")
  assert rc == 0
  d = json.loads(out)
  same = analyze_model("resnet20", input_shape=(16, 16, 3), widths=(8, 16, 32))
  assert (d["params"], d["macs"], d["activation_bytes"]) == (same.params, same.macs, same.activation_bytes)
  assert d["layers"][0]["input_shape"] == [1, 16, 16, 3] and d["layers"][-1]["output_shape"] == [1, 10]
  rc, out, _ = _run(capsys, "--config", f"{config}:bfloat16", "--format", "json")
  half = json.loads(out)
  assert half["param_bytes"] == d["param_bytes"] == 4 * d["params"]        # parameters stay float32
  assert half["macs"] == d["macs"] and half["activation_bytes"] < 0.6 * d["activation_bytes"]
  # --kwargs adds to the config's model.kwargs; MODEL replaces its model.name
  rc, out, _ = _run(capsys, "resnet32", "--config", str(config), "--kwargs", "shortcut=B", "--format", "json")
  wider = json.loads(out)
  assert wider["params"] == analyze_model("resnet32", input_shape=(16, 16, 3), widths=(8, 16, 32),
                                          shortcut="B").params


def test_config_of_a_recipe_reads_the_data_sets_description_only(capsys, tmp_path, monkeypatch):
  """CIFAR-10's shape and classes come from its TFDS builder's description: nothing is downloaded."""
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
  monkeypatch.setenv("XNN_OFFLINE", "1")
  rc, out, _ = _run(capsys, "--config", "cifar10_course:mobilenet_v2_28", "--by-level")
  assert rc == 0 and "input 28x28x3" in out and "42,376,192" in out
  assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("argv, words", [
    ([], ["give a registered MODEL", "--config"]),
    (["resnet20", "--kwargs", "nonsense=1"], ["--kwargs", "do not fit model 'resnet20'", "nonsense"]),
    (["resnet20", "--kwargs", "a=1,,="], ["--kwargs", "NAME=VALUE"]),
    (["--config", "no_such_recipe"], ["no_such_recipe"]),
])
def test_cost_cli_errors_are_one_line(capsys, argv, words):
  rc, out, err = _run(capsys, *argv)
  assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1 and err.startswith("xnn cost: error: ")
  for w in words:
    assert w in err
