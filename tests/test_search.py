"""xnn search: the space, constraints before training, the pruner, kill and relaunch, the Pareto front, outputs.

One small real search (LeNet-5 heads on 16x16 digits, 2 epochs) is killed with SIGKILL
while a candidate trains and launched again; the tests read what it left: the study,
the candidates' run folders, the table, pareto.png and best.py.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO
from xnn import cli
from xnn import search as s
from xnn.search import results
from xnn.search.study import open_study, optuna
from xnn.train.metrics import read_metrics

SEARCH_CONFIG = '''
from xnn import search as s
from xnn.configs.default import get_config as _default

def get_config(arg=None):
  c = _default()                          # LeNet-5 on the digits
  c.data.image_size = 16
  c.train.num_epochs = 2
  c.train.progress_bar = False
  c.schedule.name = "constant"
  return c

def get_search_space(arg=None):
  return s.SearchSpace(
      s.choice("model.kwargs.head", ["gap_linear", "spatial_gap", "flatten_mlp"]),
      s.choice("optimizer.learning_rate", [3e-3, 1e-7]),
      constraints=s.Constraints(max_params=10_000),       # flatten_mlp: 16,878 parameters at 16x16
      start=[{"model.kwargs.head": "gap_linear", "optimizer.learning_rate": 3e-3},    # trained to the end
             {"model.kwargs.head": "flatten_mlp", "optimizer.learning_rate": 3e-3},   # over budget: never trained
             {"model.kwargs.head": "spatial_gap", "optimizer.learning_rate": 1e-7}],  # hopeless: pruned early
      sampler="tpe", pruner="successive_halving", reduction_factor=2, trials=2, parallel=1)
'''
GOOD = "model.kwargs.head-gap_linear__optimizer.learning_rate-0.003"
OVER = "model.kwargs.head-flatten_mlp__optimizer.learning_rate-0.003"
HOPELESS = "model.kwargs.head-spatial_gap__optimizer.learning_rate-1e-07"


def _study(search_dir):
  og = optuna()
  return og.load_study(study_name="xnn_search", storage=f"sqlite:///{search_dir}/study.db")


def _starts(workdir) -> int:
  with open(os.path.join(workdir, "launcher.log"), "rb") as f:
    return f.read().count(b"== xnn sweep: start ")


@pytest.fixture(scope="module")
def search(tmp_path_factory):
  """The test search, SIGKILLed while its hopeless candidate trains, then launched again to the end."""
  d = tmp_path_factory.mktemp("search")
  cfg = d / "search_cfg.py"
  cfg.write_text(SEARCH_CONFIG)
  out = d / "search"
  cmd = [sys.executable, "-m", "xnn.cli", "search", str(cfg), f"--workdir={out}"]
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO)
  hopeless = out / "candidates" / HOPELESS
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:    # kill once the hopeless candidate compiles
    if any(r["type"] == "compile" for r in read_metrics(str(hopeless / "metrics.jsonl"))):
      break
    time.sleep(0.1)
  proc.send_signal(signal.SIGKILL)
  first = proc.communicate(timeout=60)[0].decode()
  assert (out / "candidates" / GOOD / "final.json").exists(), first[-3000:]
  again = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
  assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
  return {"dir": out, "config": cfg, "first": first, "again": again.stdout}


def test_over_budget_candidate_is_never_trained_and_counted(search):
  out = search["dir"]
  assert not (out / "candidates" / OVER).exists()               # no run folder: nothing was trained
  trials = _study(out).get_trials()
  over = [t for t in trials if t.user_attrs.get("candidate") == OVER]
  assert [t.state.name for t in over] == ["PRUNED"]
  assert over[0].user_attrs["over_budget"] == ["parameters 16.9 K > 10.0 K"]
  assert over[0].constraints == {"max_params": pytest.approx(16_878 / 10_000 - 1)}
  for t in trials:                                                # every candidate that trained is inside
    if (out / "candidates" / t.user_attrs.get("candidate", "-")).exists():
      assert t.user_attrs["cost"]["params"] <= 10_000 and max(t.user_attrs["violations"]) <= 0
  assert "over the budget, not trained: " + OVER + ": parameters 16.9 K > 10.0 K" in search["first"]
  assert "1 over the budget and never trained (1 x parameters)" in search["again"]
  md = (out / "candidates.md").read_text()
  assert "2 trials within the budget" in md and "1 over the budget, never trained (1 x parameters)" in md


def test_relaunch_continues_without_training_a_finished_candidate_again(search):
  out = search["dir"]
  good, hopeless = out / "candidates" / GOOD, out / "candidates" / HOPELESS
  assert _starts(good) == 1                                       # trained once, before the kill
  assert sum(r["type"] == "final" for r in read_metrics(str(good / "metrics.jsonl"))) == 1
  assert _starts(hopeless) == 2                                   # interrupted by the kill, resumed after it
  steps = [r["step"] for r in read_metrics(str(hopeless / "metrics.jsonl")) if r["type"] == "train"]
  assert steps == sorted(set(steps))
  states = {t.number: (t.state.name, t.user_attrs.get("candidate"), t.user_attrs.get("retry_of"))
            for t in _study(out).get_trials()}
  assert states == {0: ("COMPLETE", GOOD, None), 1: ("PRUNED", OVER, None), 2: ("FAIL", HOPELESS, None),
                    3: ("PRUNED", HOPELESS, 2)}
  assert "trial 2 (" + HOPELESS + ") was left running" in search["again"]
  assert not os.listdir(out / "controllers")                      # every controller released its lock


def test_pruner_stops_a_hopeless_candidate_after_its_first_epoch(search):
  out = search["dir"]
  t = _study(out).trials[3]
  assert t.user_attrs["stopped_at"] == 1 and list(t.intermediate_values) == [1]
  good = _study(out).trials[0]
  assert t.intermediate_values[1] < good.intermediate_values[1]   # successive halving keeps the top 1/2 of rung 0
  recs = read_metrics(str(out / "candidates" / HOPELESS / "metrics.jsonl"))
  assert not any(r["type"] == "final" for r in recs)
  assert max(r["epoch"] for r in recs if r["type"] == "eval") < 2  # stopped before its 2 epochs
  assert f"{HOPELESS} stopped by the pruner after epoch 1" in search["again"]


def test_outputs_table_pareto_and_best_config(search):
  out = search["dir"]
  table = json.loads((out / "candidates.json").read_text())
  assert [r["outcome"] for r in table["trials"]] == ["trained", "over budget, not trained", "interrupted",
                                                      "stopped by the pruner after epoch 1"]
  assert table["front"] == [0]
  row = table["trials"][0]
  assert row["macs"] == 99_360 and row["params"] == 3_994 and row["peak_train_bytes"] > 0 and row["wall_s"] > 0
  assert row["rf_ratio"] == 1.0 and row["epochs"] == 2
  assert (out / "pareto.png").stat().st_size > 10_000
  from xnn.commands.train import parse
  from xnn.train.train import check_config
  cfg, _ = parse([f"--config={out / 'best.py'}"])
  cfg = check_config(cfg, None)                                   # what xnn train accepts
  assert cfg.model.name == "lenet5" and cfg.model.kwargs.head == "gap_linear"
  assert cfg.optimizer.learning_rate == 3e-3 and cfg.data.image_size == 16 and cfg.schedule.name == "constant"
  with pytest.raises(ValueError, match="candidate='trial9': expected one of trial0"):
    parse([f"--config={out / 'best.py'}:candidate=trial9"])


def test_pareto_front_of_hand_made_points_matches_optunas():
  """Candidates as (MACs, accuracy): the front by hand, and Optuna's own front of the same points as a
  two-objective study (``study.best_trials``, optuna/study/_multi_objective.py)."""
  points = [(100, 0.90), (50, 0.85), (50, 0.80), (200, 0.95), (150, 0.90), (300, 0.95), (20, 0.50), (400, 0.99)]
  table = [{"trial": i, "state": "complete", "outcome": "trained", "macs": m, "accuracy": a}
           for i, (m, a) in enumerate(points)]
  table.append({"trial": 8, "state": "pruned", "outcome": "stopped by the pruner after epoch 1", "macs": 10,
                "accuracy": 0.99})                               # an early stop is no point of the front
  assert [r["trial"] for r in results.front(table)] == [6, 1, 0, 3, 7]
  og = optuna()
  study = og.create_study(directions=["minimize", "maximize"])
  for m, a in points:
    study.add_trial(og.trial.create_trial(values=[m, a]))
  assert sorted(t.number for t in study.best_trials) == [0, 1, 3, 6, 7]


def test_space_samples_branches_and_derived_fields_and_names_candidates():
  def expands(v):
    return tuple(v["expansion"] * w for w in v["model.kwargs.outputs"])

  space = s.SearchSpace(
      s.branch("block", {"basic": [s.fixed("model.name", "resnet20"), s.choice("model.kwargs.widths", [(8, 16, 32)])],
                         "inverted": [s.fixed("model.name", "mobilenet_v2_28"), s.choice("expansion", [2, 4]),
                                      s.fixed("model.kwargs.outputs", (8, 16, 32)),
                                      s.derived("model.kwargs.expands", expands)]}),
      s.integer("train.num_epochs", 1, 3), trials=3)
  og = optuna()
  study = og.create_study(sampler=og.samplers.RandomSampler(seed=1))
  from xnn.search.loop import default_fields, is_field_of
  is_field = is_field_of(default_fields())
  seen = {}
  for _ in range(30):
    trial = study.ask()
    v = space.sample(trial)
    ov = space.overrides(v, is_field)
    assert "block" not in ov and "expansion" not in ov            # search variables are not config fields
    if v["block"] == "inverted":
      assert ov["model.kwargs.expands"] == tuple(v["expansion"] * w for w in (8, 16, 32))
      assert trial.params["block"] == "inverted" and "model.kwargs.widths" not in trial.params
    else:
      assert trial.params["model.kwargs.widths"] == "(8, 16, 32)" and ov["model.kwargs.widths"] == (8, 16, 32)
    seen[s.candidate_name(ov)] = ov
    study.tell(trial, 0.0)
  assert len(seen) == 2 * 3 + 3                                   # every candidate once, by its config diff
  assert s.candidate_name({"model.name": "resnet20", "model.kwargs.widths": (8, 16, 32)}) == \
      "model.kwargs.widths-8_16_32__model.name-resnet20"
  long = s.candidate_name({f"model.kwargs.a{i}": "x" * 20 for i in range(10)})
  assert len(long) <= 160 and long != s.candidate_name({f"model.kwargs.a{i}": "x" * 20 for i in range(11)})
  assert space.start_params({"block": "basic", "model.kwargs.widths": (8, 16, 32)}) == {
      "block": "basic", "model.kwargs.widths": "(8, 16, 32)"}


@pytest.mark.parametrize("make, message", [
    (lambda: s.SearchSpace(), "has no parameters"),
    (lambda: s.SearchSpace(s.choice("a.b", [])), "choice 'a.b' has no values"),
    (lambda: s.SearchSpace(s.choice("a.b", [1, 1])), "lists a value twice"),
    (lambda: s.SearchSpace(s.integer("a.b", 3, 1)), "expected integers low <= high"),
    (lambda: s.SearchSpace(s.real("a.b", 0, 1, log=True)), "low > 0 on a log scale"),
    (lambda: s.SearchSpace(s.choice("a.b", [1]), sampler="cmaes"), "sampler='cmaes': expected one of tpe"),
    (lambda: s.SearchSpace(s.choice("a.b", [1]), objectives=("accuracy", "macs")), "needs a single objective"),
    (lambda: s.SearchSpace(s.choice("a.b", [1]), start=[{"a.b": 2}]), "a.b=2 is not one of the choices [1]"),
    (lambda: s.SearchSpace(s.choice("a.b", [1]), start=[{"c": 2}]), "sets ['c'], which the space does not sample"),
    (lambda: s.SearchSpace(s.branch("k", {"x": [s.choice("a.b", [1])], "y": [s.choice("a.b", [2])]})),
     "'a.b' is sampled two different ways"),
    (lambda: s.Constraints(max_macs=-1), "Constraints(max_macs=-1): expected a positive number"),
])
def test_space_errors_are_one_line(make, message):
  with pytest.raises(s.SpaceError) as e:
    make()
  assert message in str(e.value) and "\n" not in str(e.value)


def test_digits_and_cifar_recipes_declare_valid_spaces():
  from xnn.configs import load_config
  from xnn.configs.schema import resolve
  from xnn.search.loop import default_fields, is_field_of
  is_field = is_field_of(default_fields())
  for spec in ("search_digits:tiny", "search_digits:quick", "search_cifar", "search_cifar:nsga2"):
    space = s.load_search_space(spec)
    space.check_fields(is_field)
    resolve(load_config(spec))
  assert s.load_search_space("configs/search_cifar.py:nsga2").sampler == "nsga2"   # the path form


@pytest.fixture
def bad_configs(tmp_path):
  base = "from xnn.configs.default import get_config\nfrom xnn import search as s\n"
  space = base + "def get_search_space(arg=None):\n  return "
  files = {"nospace.py": base,
           "boom.py": base + "def get_search_space(arg=None):\n  raise RuntimeError('boom')\n",
           "dict.py": space + "{}\n",
           "unknown.py": space + "s.SearchSpace(s.choice('train.bach', [1]))\n",
           "space.py": space + "s.SearchSpace(s.choice('train.batch_size', []))\n"}
  for name, text in files.items():
    (tmp_path / name).write_text(text)
  return tmp_path


@pytest.mark.parametrize("args, expected", [
    (["nospace.py"], ["defines no get_search_space(arg)"]),
    (["boom.py"], ["get_search_space failed: RuntimeError: boom"]),
    (["dict.py"], ["get_search_space returned dict; expected an xnn.search.SearchSpace"]),
    (["unknown.py"], ["search parameter 'train.bach' is not a config field"]),
    (["space.py"], ["choice 'train.batch_size' has no values"]),
    (["search_digits:tiny", "--storage=mysql"], ["--storage 'mysql': expected sqlite, journal or an Optuna"]),
    (["search_digits:tiny", "--workdir=gs://bucket/s"], ["not a URL"]),
    (["search_digits:tiny", "--pruner=hyperband", "--sampler=nsga2", "--parallel=0"], ["--parallel"]),
    (["search_cifar:nsga2", "--pruner=hyperband"], ["the options contradict the search space", "single objective"]),
])
def test_search_errors_are_one_line_before_anything_is_written(args, expected, bad_configs, tmp_path, capsys):
  work = tmp_path / "w"
  argv = [str(bad_configs / args[0]) if args[0].endswith(".py") else args[0], *args[1:]]
  if not any(a.startswith("--workdir") for a in argv):
    argv.append(f"--workdir={work}")
  rc = cli.main(["search", *argv])
  err = capsys.readouterr().err
  lines = err.splitlines()
  assert rc == 2 and "Traceback" not in err and 1 <= len(lines) <= 2, err
  assert lines[0].startswith("xnn search: error: "), err
  for text in expected:
    assert text in lines[0], (text, lines[0])
  assert not work.exists()


def test_a_study_of_another_search_is_refused(tmp_path):
  space = s.SearchSpace(s.choice("model.kwargs.head", ["gap_linear"]), trials=1)
  open_study(space, str(tmp_path), "journal", {"train": {"num_epochs": 3}}, 3)
  assert (tmp_path / "study.journal").exists()
  other = s.SearchSpace(s.choice("model.kwargs.head", ["gap_linear", "pixel"]), trials=1)
  with pytest.raises(ValueError, match=r"holds another search \(space.params"):
    open_study(other, str(tmp_path), "journal", {"train": {"num_epochs": 3}}, 3)
  with pytest.raises(ValueError, match=r"base_config.train.num_epochs: 3 -> 5"):
    open_study(space, str(tmp_path), "journal", {"train": {"num_epochs": 5}}, 5)
  # what only says how runs are watched may change (xnn.train.resume.MAY_CHANGE)
  open_study(space, str(tmp_path), "journal", {"train": {"num_epochs": 3, "progress_bar": False}}, 3)


@pytest.mark.slow
def test_tiny_recipe_end_to_end_and_its_best_config_trains(tmp_path):
  """``xnn search search_digits:tiny`` to the end, then ``xnn train --config W/best.py`` for one epoch."""
  work = tmp_path / "tiny"
  done = subprocess.run([sys.executable, "-m", "xnn.cli", "search", "configs/search_digits.py:tiny",
                         f"--workdir={work}"], capture_output=True, text=True, cwd=REPO, timeout=900)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  table = json.loads((work / "candidates.json").read_text())
  assert table["counts"]["within"] == 5 and table["counts"]["over"] >= 1     # the start ResNet-20 is over budget
  for r in table["trials"]:
    trained = (work / "candidates" / (r["candidate"] or "-")).exists()
    assert not trained or r["macs"] <= 0.4e6, r
  for name in ("candidates.md", "pareto.png", "best.py"):
    assert (work / name).exists()
  run = subprocess.run([sys.executable, "-m", "xnn.cli", "train", f"--config={work}/best.py", f"--workdir={work}/best",
                        "--config.train.num_epochs=1", "--config.train.progress_bar=false"],
                       capture_output=True, text=True, cwd=REPO, timeout=600)
  assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
  final = json.loads((work / "best" / "final.json").read_text())
  config = json.loads((work / "best" / "config.json").read_text())
  assert config["data"]["train_split"] == "train" and config["data"]["test_split"] == "test"   # the final fields
  assert final["step"] == 1437 // 64 and 0.0 <= final["test_accuracy"] <= 1.0


def test_slurm_runs_through_submitits_local_executor(search, tmp_path):
  """``--launcher slurm``'s ``SlurmRuns`` on submitit's local executor: a job per candidate, its exit status
  read from the run's log (here ``xnn train`` on the finished good candidate: it says so and exits 0)."""
  from xnn.sweeps.launchers import RunSpec
  from xnn.sweeps.slurm import SlurmOptions, SlurmRuns
  runs = SlurmRuns(str(tmp_path), str(search["config"]), SlurmOptions(executor="local", gpus_per_node=0, time="10"))
  good = search["dir"] / "candidates" / GOOD
  assert runs.start(RunSpec(GOOD, {"model.kwargs.head": "gap_linear", "optimizer.learning_rate": 3e-3},
                            str(good))) is None
  assert len(runs) == 1 and not runs.has_room and runs.pid(GOOD)
  deadline, ended = time.time() + 300, []
  while not ended and time.time() < deadline:
    ended = runs.poll()
    time.sleep(0.5)
  assert [(spec.name, code, text) for spec, code, text in ended] == [(GOOD, 0, "done")]
  assert _starts(good) == 2 and "already finished" in (good / "launcher.log").read_text()
