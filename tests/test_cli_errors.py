"""Every user error of ``xnn train/cost/sweep/report/models``: one ``xnn <cmd>: error:`` line, status 2.

Table-driven through ``xnn.cli.main`` in-process (a bad train config fails before any
compilation); one subprocess test checks the real exit status and ``--debug``.
"""

import json
import os
import subprocess
import sys

import pytest

from xnn import cli
from xnn.commands import CommandError
from xnn.configs import ConfigError, check_override, load_config
from xnn.train.compilation import check_cache_dir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONFIGS = {   # file name -> source of a broken config file
    "noget.py": "x = 1\n",
    "none.py": "def get_config(arg=None):\n  return None\n",
    "number.py": "def get_config(arg=None):\n  return 3\n",
    "boom.py": "def get_config(arg=None):\n  raise RuntimeError('boom in get_config')\n",
    "syntax.py": "def get_config(:\n",
    "importerr.py": "import xnn_no_such_module\n",
    "partial.py": "def get_config(arg=None):\n  return {'model': {'name': 'lenet5'}}\n",
    "sweep_boom.py": ("def get_config(arg=None):\n  from xnn.configs.default import get_config as g\n  return g()\n"
                      "def get_sweep(arg=None):\n  return {}['nope']\n"),
    "sweep_none.py": "def get_config(arg=None):\n  from xnn.configs.default import get_config as g\n  return g()\n",
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  d = tmp_path_factory.mktemp("cli_errors")
  for name, text in CONFIGS.items():
    (d / name).write_text(text)
  (d / "folder").mkdir()
  (d / "plain_file").write_text("not a folder")
  return d


def _check(capsys, rc, cmd, expected):
  """Exit status 2; stderr exactly one error line (plus at most one hint line); no traceback."""
  err = capsys.readouterr().err
  lines = err.splitlines()
  assert rc == 2, (rc, err)
  assert "Traceback" not in err, err
  assert 1 <= len(lines) <= 2, err
  assert lines[0].startswith(f"xnn {cmd}: error: "), err
  assert len(lines) == 1 or lines[1].startswith(f"xnn {cmd}: hint: "), err
  for text in expected:
    assert text in lines[0], (text, lines[0])
  return lines


def _main(argv):
  return cli.main([str(a) for a in argv])


TRAIN = [
    (["--config.train.batchsize=64"], ["unknown config key 'train.batchsize'", "did you mean train.batch_size?"]),
    (["--config.trian.batch_size=64"], ["unknown config key 'trian'", "did you mean train?"]),
    (["--config.train.batch_size.x=1"], ["'train.batch_size' is a value", "'x'"]),
    (["--config.train.batch_size=abc"], ["train.batch_size", "'abc'"]),
    (["--config={d}/missing.py"], ["config file '{d}/missing.py' does not exist"]),
    (["--config", "cifar10_resnt"], ["'cifar10_resnt' is neither a file nor a recipe name", "cifar10_resnet"]),
    (["--config={d}/folder"], ["'{d}/folder' is a folder", "get_config"]),
    (["--config={d}/noget.py"], ["'{d}/noget.py' defines no get_config"]),
    (["--config={d}/none.py"], ["'{d}/none.py': get_config() returned NoneType", "ConfigDict"]),
    (["--config={d}/number.py:x"], ["'{d}/number.py': get_config('x') returned int 3"]),
    (["--config={d}/boom.py"], ["'{d}/boom.py': get_config() failed: RuntimeError: boom in get_config"]),
    (["--config={d}/syntax.py"], ["'{d}/syntax.py' cannot be loaded: SyntaxError", "line 1"]),
    (["--config={d}/importerr.py"], ["'{d}/importerr.py' cannot be loaded: ModuleNotFoundError", "xnn_no_such"]),
    (["--config"], ["--config needs a value"]),
    (["positional"], ["unexpected argument 'positional'"]),
    (["--workdirr=x"], ["workdirr"]),
    (["--config.model.kwargs.nope=3"], ["model.kwargs {'nope': 3} do not fit model 'lenet5'"]),
    (["--config.train.compilation_cache=/proc/xnn_cache"],
     ["train.compilation_cache='/proc/xnn_cache' cannot be used", "writable folder"]),
]


@pytest.mark.parametrize("args, expected", TRAIN, ids=[" ".join(a) for a, _ in TRAIN])
def test_train_errors(args, expected, files, tmp_path, capsys, monkeypatch):
  monkeypatch.delenv("XNN_TRACEBACK", raising=False)
  fmt = lambda s: s.replace("{d}", str(files))
  rc = _main(["train", *map(fmt, args), f"--workdir={tmp_path / 'w'}", "--config.train.progress_bar=false"])
  _check(capsys, rc, "train", map(fmt, expected))
  w = tmp_path / "w"
  assert not (w / "metrics.jsonl").exists() and not (w / "checkpoints").exists()     # nothing trained


COST = [
    (["lenet5", "--batch", "-3"], ["--batch", "'-3'", "positive integer"]),
    (["lenet5", "--batch", "0"], ["--batch", "'0'", "positive integer"]),
    (["lenet5", "--input", "8,8,3"], ["cannot analyse lenet5 at input 8,8,3", "too small", "32,32,3"]),
    (["lenet5", "--input", "32,32"], ["cannot analyse lenet5 at input 32,32", "3 dimensions", "32,32,3"]),
    (["lenet5", "--input", "0,8,3"], ["--input", "'0,8,3'", "positive integers"]),
    (["lenet5", "--input=-1,8,3"], ["--input", "'-1,8,3'", "positive integers"]),
    (["lenet5", "--depth", "0"], ["--depth", "'0'", "positive integer"]),
    (["lenet5", "--format", "xml"], ["--format", "'xml'"]),
    (["lenet5", "--erf", "{d}/plain_file/erf.png"], ["--erf {d}/plain_file/erf.png", "does not exist"]),
    (["lenet_5"], ["unknown model 'lenet_5'", "lenet5"]),
    ([], ["give a registered MODEL", "--config"]),
    (["transformer_classifier", "--by-level"], ["--by-level", "needs a network on images"]),
]


@pytest.mark.parametrize("args, expected", COST, ids=[" ".join(a) or "none" for a, _ in COST])
def test_cost_errors(args, expected, files, capsys):
  fmt = lambda s: s.replace("{d}", str(files))
  _check(capsys, _main(["cost", *map(fmt, args)]), "cost", map(fmt, expected))


SWEEP = [
    (["{d}/missing.py"], ["config file '{d}/missing.py' does not exist"]),
    (["{d}/folder"], ["'{d}/folder' is a folder"]),
    (["{d}/noget.py"], ["'{d}/noget.py' defines no get_config"]),
    (["{d}/boom.py"], ["get_config() failed: RuntimeError: boom in get_config"]),
    (["{d}/sweep_none.py"], ["'{d}/sweep_none.py'", "defines no get_sweep"]),
    (["{d}/sweep_boom.py"], ["'{d}/sweep_boom.py': get_sweep failed: KeyError: 'nope'"]),
    (["{d}/sweep_none.py", "--parallel", "0"], ["--parallel", "'0'", "positive integer"]),
    (["{d}/sweep_none.py", "--launcher", "gpu"], ["--launcher", "'gpu'"]),
    (["{d}/sweep_none.py", "--launcher", "slurm", "--time", "soon"], ["--time 'soon': expected minutes"]),
    (["{d}/sweep_none.py", "--launcher", "slurm", "--mem", "lots"], ["--mem 'lots': expected a size"]),
    (["{d}/sweep_none.py", "--launcher", "slurm", "--slurm-executor", "local", "--nodes", "2"],
     ["--nodes 2: submitit's local executor runs on this one machine"]),
    (["{d}/sweep_none.py", "--launcher", "tpu", "--tpu-name", "x"], ["--launcher tpu needs --tpu-name and --zone"]),
    (["{d}/sweep_none.py", "--launcher", "tpu", "--tpu-name", "x", "--zone", "z", "--spot", "--best-effort"],
     ["--spot and --best-effort exclude each other"]),
    (["{d}/sweep_none.py", "--device", "a100"], ["unknown device 'a100'", "h100"]),
]


@pytest.mark.parametrize("args, expected", SWEEP, ids=[" ".join(a) for a, _ in SWEEP])
def test_sweep_errors(args, expected, files, tmp_path, capsys):
  fmt = lambda s: s.replace("{d}", str(files))
  rc = _main(["sweep", *map(fmt, args), "--workdir", tmp_path / "sweep", "--dry-run"])
  _check(capsys, rc, "sweep", map(fmt, expected))


@pytest.mark.parametrize("argv, expected", [
    (["models", "--family", "nope"], ["'nope'", "families:"]),
    (["models", "--bogus"], ["unrecognized arguments: --bogus"]),
    (["report"], ["expected one sweep folder"]),
    (["report", "{d}/missing"], ["'{d}/missing' does not exist"]),
    (["report", "{d}/plain_file"], ["'{d}/plain_file' is not a folder"]),
    (["report", "{d}/folder"], ["no runs", "'{d}/folder'"]),
], ids=lambda v: " ".join(v) if isinstance(v, list) and v and v[0] in ("models", "report") else None)
def test_models_and_report_errors(argv, expected, files, capsys):
  fmt = lambda s: s.replace("{d}", str(files))
  _check(capsys, _main(map(fmt, argv)), argv[0], map(fmt, expected))


def test_unknown_command(capsys):
  assert cli.main(["tran"]) == 2
  lines = capsys.readouterr().err.splitlines()
  assert len(lines) == 1 and lines[0].startswith("xnn: error: unknown command 'tran'") and "train" in lines[0]


# --- --debug, XNN_TRACEBACK, exit statuses ------------------------------------------------------------------


def test_debug_and_environment_show_the_traceback(files, monkeypatch):
  monkeypatch.delenv("XNN_TRACEBACK", raising=False)
  with pytest.raises(ConfigError, match="unknown config key 'train.batchsize'"):
    cli.main(["train", "--config.train.batchsize=64", "--debug"])
  with pytest.raises(ConfigError, match="RuntimeError: boom") as e:
    cli.main(["--debug", "train", f"--config={files}/boom.py"])
  assert isinstance(e.value.__cause__, RuntimeError)       # the user's own error is chained
  monkeypatch.setenv("XNN_TRACEBACK", "1")
  with pytest.raises(CommandError, match="too small"):
    cli.main(["cost", "lenet5", "--input", "8,8,3"])
  # after a lone `--` the flag belongs to the sweep's runs
  assert cli.split_debug(["a", "--debug", "--", "--debug"]) == (True, ["a", "--", "--debug"])
  assert cli.split_debug(["a", "--", "--debug"]) == (False, ["a", "--", "--debug"])


class _Failed(Exception):
  exit_code = 1
  hint = "re-run to resume from the last checkpoint"


@pytest.mark.parametrize("exc, code, lines", [
    (FloatingPointError("loss became nan at step 3"), 1, ["xnn fake: error: loss became nan at step 3"]),
    (_Failed("run failed"), 1, ["xnn fake: error: run failed",
                                "xnn fake: hint: re-run to resume from the last checkpoint"]),
    (ConfigError("bad\nconfig", hint="--debug shows\nthe traceback"), 2,
     ["xnn fake: error: bad config", "xnn fake: hint: --debug shows the traceback"]),
    (FileNotFoundError(2, "No such file or directory", "runs/x"), 2,
     ["xnn fake: error: No such file or directory: runs/x"]),
    (PermissionError(13, "Permission denied", "/root/x"), 2, ["xnn fake: error: Permission denied: /root/x"]),
])
def test_exit_status_and_hint(exc, code, lines, monkeypatch, capsys):
  """Bad input: 2; a run that failed while running (a NaN, an error with exit_code=1): 1; a bug: traceback."""
  import types
  monkeypatch.delenv("XNN_TRACEBACK", raising=False)
  module = types.SimpleNamespace()
  monkeypatch.setitem(sys.modules, "xnn_fake_command", module)
  monkeypatch.setitem(cli.COMMANDS, "fake", ("xnn_fake_command", "a test command"))

  def main(argv):
    raise exc
  module.main = main
  assert cli.main(["fake"]) == code
  assert capsys.readouterr().err.splitlines() == lines
  module.main = lambda argv: 1 / 0                  # a bug keeps its traceback
  with pytest.raises(ZeroDivisionError):
    cli.main(["fake"])


# --- config loading and overrides ---------------------------------------------------------------------------


def test_partial_config_and_overrides_of_default_fields(files):
  """A config that leaves a section out still takes overrides of its schema fields (resolve merges them)."""
  from xnn.commands.train import parse
  config, workdir = parse([f"--config={files}/partial.py", "--config.train.num_epochs=3", "--workdir=w"])
  assert config.model.name == "lenet5" and config.train.num_epochs == 3 and workdir == "w"
  config = load_config(f"{files}/partial.py")
  with pytest.raises(ConfigError, match=r"unknown config key 'model.nme' in --config.model.nme \(did you mean "
                                        r"model.name\?\); known keys under model: .*dtype"):
    check_override(config, "model.nme")


def test_compilation_cache_that_cannot_be_written(files, tmp_path):
  with pytest.raises(ValueError, match=r"train.compilation_cache='.*plain_file/c' cannot be used: Not a directory"):
    check_cache_dir(f"{files}/plain_file/c", str(tmp_path))
  with pytest.raises(ValueError, match=r"train.compilation_cache='workdir' \(folder '.*plain_file/jax_cache'\)"):
    check_cache_dir("workdir", f"{files}/plain_file")
  assert check_cache_dir("off", str(tmp_path)) is None
  assert check_cache_dir("workdir", str(tmp_path)) == str(tmp_path / "jax_cache")
  assert os.listdir(tmp_path / "jax_cache") == []          # the write probe is gone


# --- xnn report on corrupt runs -----------------------------------------------------------------------------


def _run(d, seed, acc=0.9):
  d.mkdir(parents=True)
  recs = [{"type": "epoch", "step": 10, "epoch": 1.0, "train_loss": 0.5, "train_accuracy": acc},
          {"type": "eval", "step": 10, "epoch": 1.0, "test_loss": 0.4, "test_accuracy": acc}]
  (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
  (d / "config.json").write_text(json.dumps({"seed": seed, "model": {"name": "lenet5"}}))
  (d / "final.json").write_text(json.dumps({"test_accuracy": acc, "wall_time_s": 1.0, "params": 100, "macs": 1000}))


CORRUPT = {   # name: (file, bytes written over it, what the warning says)
    "metrics_garbage": ("metrics.jsonl", b'{"type": "epoch"}\n\x00\xff\x13garbage\n{"type": "eval"}\n', "line 2"),
    "metrics_not_record": ("metrics.jsonl", b'[1, 2]\n', "line 1 is not a record"),
    "metrics_bad_eval": ("metrics.jsonl", b'{"type": "eval", "epoch": 1.0}\n', "line 1: an eval record"),
    "metrics_binary": ("metrics.jsonl", b'\xff\xfe\x00\x01\n\n', "line 1 is not a JSON record"),
    "final_truncated": ("final.json", b'{"test_accuracy": 0.9, "wall', "not valid JSON"),
    "final_list": ("final.json", b'[0.9]', "expected a JSON object"),
    "final_no_params": ("final.json", b'{"test_accuracy": 0.9, "wall_time_s": 1.0}', "expected numbers for params"),
    "config_garbage": ("config.json", b'\x89PNG\r\n', "not valid JSON"),
    "config_string": ("config.json", b'"lenet5"', "expected a JSON object"),
}


@pytest.mark.parametrize("name", list(CORRUPT))
def test_collect_skips_a_corrupt_run_naming_the_file(name, tmp_path):
  from xnn.sweeps.report import collect
  file, data, problem = CORRUPT[name]
  _run(tmp_path / "good", 0)
  _run(tmp_path / name, 1)
  (tmp_path / name / file).write_bytes(data)
  warnings = []
  runs = collect(str(tmp_path), warnings.append)
  assert [r.name for r in runs] == ["good"]
  assert len(warnings) == 1 and f"skipping run {name}: {tmp_path / name / file}: " in warnings[0], warnings
  assert problem in warnings[0], warnings


def test_report_is_written_without_the_corrupt_runs(tmp_path, capsys):
  """`xnn report` on a sweep with a corrupt run of each kind: one warning per run, naming the file."""
  _run(tmp_path / "seed-0", 0, 0.9)
  _run(tmp_path / "seed-1", 1, 0.8)
  (tmp_path / "seed-1" / "metrics.jsonl").open("a").write('{"type": "train", "st')   # a torn last line is fine
  for name, (file, data, _) in CORRUPT.items():
    _run(tmp_path / name, 2)
    (tmp_path / name / file).write_bytes(data)
  assert cli.main(["report", str(tmp_path)]) == 0
  out, err = capsys.readouterr()
  warnings = err.splitlines()
  assert len(warnings) == len(CORRUPT) and "Traceback" not in err
  for name, (file, _, _) in CORRUPT.items():
    assert sum(w.startswith(f"xnn report: warning: skipping run {name}: {tmp_path / name / file}: ")
               for w in warnings) == 1, (name, warnings)
  md = (tmp_path / "report.md").read_text()
  assert out.strip() == md.strip()
  assert "| lenet5 | 2/2 | 0.8500 (0.8000–0.9000) |" in md and f"Left out, {len(CORRUPT)} unreadable runs" in md
  assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "pareto.png").exists()


# --- the real process ---------------------------------------------------------------------------------------


def test_process_exit_status_and_debug(files):
  env = {k: v for k, v in os.environ.items() if k != "XNN_TRACEBACK"}
  cmd = [sys.executable, "-m", "xnn.cli", "train", f"--config={files}/boom.py", "--workdir", str(files / "w")]
  p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
  assert p.returncode == 2 and p.stdout == "" and "Traceback" not in p.stderr, p.stderr
  assert p.stderr.splitlines() == [f"xnn train: error: config '{files}/boom.py': get_config() failed: "
                                   "RuntimeError: boom in get_config", "xnn train: hint: --debug shows the traceback"]
  p = subprocess.run([*cmd, "--debug"], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
  assert p.returncode == 1 and "Traceback" in p.stderr and "raise RuntimeError('boom in get_config')" in p.stderr
  assert not (files / "w").exists()
