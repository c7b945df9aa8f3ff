"""The ``xnn`` entry point (xnn/cli.py): bad input is one ``xnn <cmd>: error:`` line, never a traceback."""

import os
import subprocess
import sys

import pytest

from xnn import cli
from xnn.commands import CommandError
from xnn.registry import UnknownNameError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _check_one_error_line(argv, expected, rc, out, err):
  assert rc == 2, (rc, err)
  assert "Traceback" not in err and out == ""
  errors = [line for line in err.splitlines() if "error:" in line]
  assert len(errors) == 1 and err.rstrip().splitlines()[-1] == errors[0], err   # after argparse's usage, if any
  assert errors[0].startswith(f"xnn {argv[0]}: error: "), errors[0]
  for text in expected:
    assert text in errors[0], (text, errors[0])


@pytest.mark.parametrize("argv, expected", [
    (["models", "--family", "nope"], ["'nope'", "families:", "residual"]),
    (["cost", "nope"], ["unknown model 'nope'", "Available models:", "resnet20"]),
    (["cost", "resnet20", "--input", "3,x"], ["--input", "'3,x'", "224,224,3"]),
])
def test_bad_input_is_one_error_line(argv, expected, tmp_path):
  env = {**os.environ, "XNN_CACHE_DIR": str(tmp_path)}
  env.pop("XNN_TRACEBACK", None)
  p = subprocess.run([sys.executable, "-m", "xnn.cli", *argv], capture_output=True, text=True, cwd=REPO,
                     env=env, timeout=300)
  _check_one_error_line(argv, expected, p.returncode, p.stdout, p.stderr)


@pytest.mark.parametrize("argv, expected", [
    (["cost", "resnt20"], ["unknown model 'resnt20'", "Did you mean 'resnet20'"]),
    (["cost", "lenet5", "--input", "8,8,3"], ["cannot analyse lenet5 at input 8,8,3", "32,32,3"]),
    (["cost", "lenet5", "--batch", "0"], ["--batch", "'0'", "positive integer"]),
    (["cost", "lenet5", "--device", "tpu-v9"], ["unknown device 'tpu-v9'", "h100"]),
    (["cost", "lenet5", "--erf", "/nonexistent_folder/erf.png"], ["--erf /nonexistent_folder/", "does not exist"]),
])
def test_bad_input_in_process(argv, expected, capsys, monkeypatch):
  monkeypatch.delenv("XNN_TRACEBACK", raising=False)
  try:
    rc = cli.main(argv)
  except SystemExit as e:      # argparse's usage errors
    rc = e.code
  out = capsys.readouterr()
  _check_one_error_line(argv, expected, rc, out.out, out.err)


def test_error_messages_and_codes():
  assert cli.error_message(CommandError("bad --x 3: expected a positive number")) == (
      "bad --x 3: expected a positive number", 2)
  assert cli.error_message(CommandError("runs/a has no metrics.jsonl", 1)) == ("runs/a has no metrics.jsonl", 1)
  assert cli.error_message(UnknownNameError("unknown model 'x'. Available models: a, b")) == (
      "unknown model 'x'. Available models: a, b", 2)
  assert cli.error_message(KeyError("no field 'lr'")) == ("no field 'lr'", 2)          # not "\"no field 'lr'\""
  assert cli.error_message(FileNotFoundError(2, "No such file or directory", "runs/x")) == (
      "No such file or directory: runs/x", 2)
  assert cli.error_message(ValueError("first line\n  second line\n")) == ("first line second line", 2)


def test_run_catches_expected_errors_only(monkeypatch, capsys):
  import types
  module = types.SimpleNamespace()
  monkeypatch.setitem(sys.modules, "xnn_fake_command", module)
  monkeypatch.setitem(cli.COMMANDS, "fake", ("xnn_fake_command", "a test command"))

  def raising(exc):
    def main(argv):
      raise exc
    return main

  module.main = raising(FileNotFoundError(2, "No such file or directory", "runs/sweep"))
  assert cli.main(["fake"]) == 2
  assert capsys.readouterr().err == "xnn fake: error: No such file or directory: runs/sweep\n"
  module.main = raising(KeyboardInterrupt())
  assert cli.main(["fake"]) == 130
  assert capsys.readouterr().err == "xnn fake: interrupted\n"
  module.main = raising(RuntimeError("a bug"))                  # not bad input: the traceback stays
  with pytest.raises(RuntimeError):
    cli.main(["fake"])
  module.main = raising(ValueError("bad"))
  monkeypatch.setenv("XNN_TRACEBACK", "1")
  with pytest.raises(ValueError):
    cli.main(["fake"])
  module.main = lambda argv: 0
  assert cli.main(["fake", "x"]) == 0


def test_unknown_command_and_help(capsys):
  assert cli.main(["nope"]) == 2
  err = capsys.readouterr().err
  assert err.startswith("xnn: error: unknown command 'nope'") and "models" in err
  assert cli.main(["--help"]) == 0 and "commands:" in capsys.readouterr().out
