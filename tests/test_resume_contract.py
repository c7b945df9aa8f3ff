"""The resume contract (xnn/train/resume.py) and the run records of a resumed or finished run."""

import json
import os
import shutil

import pytest

from xnn.configs.default import get_config
from xnn.train import resume
from xnn.train.metrics import read_metrics


def small_config():
  c = get_config()
  c.train.num_epochs = 2
  c.train.progress_bar = False
  c.train.log_every_steps = 5
  return c


def _fake_run(tmp_path, cfg):
  """A workdir with a config.json and one complete (but empty) checkpoint folder: enough for resume.check."""
  os.makedirs(tmp_path / "checkpoints" / "22")
  (tmp_path / "checkpoints" / "22" / "xnn_manifest.json").write_text("{}")   # complete: its manifest is written
  (tmp_path / "config.json").write_text(cfg.to_json_best_effort(indent=2))
  return str(tmp_path)


def _changed(value):
  if isinstance(value, bool):
    return not value
  if isinstance(value, (int, float)):
    return abs(value) * 2 + 1          # -1 (a field's "the model's own") changes too
  if isinstance(value, str):
    return value + "x"
  if isinstance(value, (tuple, list)):
    return (*value, 7)
  raise TypeError(value)


IDENTITY = [k for k in resume.flatten(resume.as_plain(get_config())) if k not in resume.MAY_CHANGE]


@pytest.mark.parametrize("field", IDENTITY)
def test_changing_an_identity_field_refuses_to_resume(tmp_path, field):
  cfg = small_config()
  workdir = _fake_run(tmp_path, cfg)
  section, key = field.rsplit(".", 1) if "." in field else ("", field)
  target = cfg
  for part in filter(None, section.split(".")):
    target = target[part]
  old = target[key]
  new = _changed(old)
  with cfg.unlocked():
    target[key] = new
  with pytest.raises(ValueError) as e:
    resume.check(workdir, cfg)
  msg = str(e.value)
  assert "\n" not in msg and f"{field}: " in msg and "--init-from" in msg
  del old


@pytest.mark.parametrize("field", sorted(resume.MAY_CHANGE))
def test_changing_an_allowed_field_resumes(tmp_path, field):
  cfg = small_config()
  workdir = _fake_run(tmp_path, cfg)
  section, key = field.split(".")
  value = cfg[section][key]
  cfg[section][key] = ("on" if value == "auto" else "auto") if field == "train.device_resident" else _changed(value)
  previous = resume.check(workdir, cfg)
  assert previous is not None and previous.newest_step == 22


def test_model_kwargs_are_part_of_the_identity(tmp_path):
  cfg = small_config()
  workdir = _fake_run(tmp_path, cfg)
  cfg.model.kwargs.width = 2
  with pytest.raises(ValueError, match=r"model\.kwargs\.width: '\(unset\)' -> 2"):
    resume.check(workdir, cfg)


def _snapshot(folder):
  out = {}
  for root, _, files in os.walk(folder):
    for f in files:
      p = os.path.join(root, f)
      st = os.stat(p)
      out[os.path.relpath(p, folder)] = (open(p, "rb").read(), st.st_mtime_ns, st.st_mode)
  return out


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  from xnn.train import train_and_evaluate
  workdir = str(tmp_path_factory.mktemp("run"))
  result = train_and_evaluate(small_config(), workdir)
  return workdir, result


def test_a_finished_run_rerun_changes_no_file(finished_run, tmp_path, capsys):
  from xnn.train import train_and_evaluate
  src, first = finished_run
  workdir = str(tmp_path / "copy")
  shutil.copytree(src, workdir)
  before = _snapshot(workdir)
  cfg = small_config()
  cfg.train.progress_bar = True        # allowed to differ
  again = train_and_evaluate(cfg, workdir)
  assert f"already finished at step {first.step}" in capsys.readouterr().out
  assert again.step == first.step and again.test_accuracy == first.test_accuracy
  assert again.wall_time_s == first.wall_time_s
  assert _snapshot(workdir) == before


def test_a_changed_config_is_refused_before_anything_is_written(finished_run, tmp_path):
  from xnn.train import train_and_evaluate
  src, _ = finished_run
  workdir = str(tmp_path / "copy")
  shutil.copytree(src, workdir)
  before = _snapshot(workdir)
  cfg = small_config()
  cfg.train.batch_size = 32
  with pytest.raises(ValueError, match=r"train\.batch_size: 64 -> 32"):
    train_and_evaluate(cfg, workdir)
  cfg = small_config()
  cfg.model.name = "resnet20"
  with pytest.raises(ValueError, match=r"model\.name: 'lenet5' -> "):
    train_and_evaluate(cfg, workdir)
  after = _snapshot(workdir)
  assert {k: v for k, v in after.items() if not k.startswith(".lock")} == \
      {k: v for k, v in before.items() if not k.startswith(".lock")}


def test_extending_a_finished_run_trains_on_and_keeps_its_records(finished_run, tmp_path):
  from xnn.train import train_and_evaluate
  src, first = finished_run
  workdir = str(tmp_path / "copy")
  shutil.copytree(src, workdir)
  cfg = small_config()
  cfg.train.num_epochs = 3
  cfg.train.log_every_steps = 11         # allowed to differ as well
  r = train_and_evaluate(cfg, workdir)
  assert r.step == first.step * 3 // 2
  recs = read_metrics(os.path.join(workdir, "metrics.jsonl"))
  for kind in ("eval", "epoch", "final", "input"):
    steps = [x["step"] for x in recs if x["type"] == kind]
    assert len(steps) == len(set(steps)), (kind, steps)
  assert [x["epoch"] for x in recs if x["type"] == "eval"] == [1.0, 2.0, 3.0]
  final = json.load(open(os.path.join(workdir, "final.json")))
  assert len(final["segments"]) == 2 and final["segments"][1]["from_step"] == first.step
  assert final["wall_time_s"] == pytest.approx(sum(s["wall_s"] for s in final["segments"]))
  assert final["wall_time_s"] > first.wall_time_s
  # the earlier config is kept beside the new one
  assert json.load(open(os.path.join(workdir, "config.1.json")))["train"]["num_epochs"] == 2
  assert json.load(open(os.path.join(workdir, "config.json")))["train"]["num_epochs"] == 3
  # shortening below the newest checkpoint is refused
  cfg.train.num_epochs = 1
  with pytest.raises(ValueError, match="not shortened"):
    train_and_evaluate(cfg, workdir)


def test_run_json_pins_the_input_mode_of_auto(finished_run, tmp_path):
  src, _ = finished_run
  record = json.load(open(os.path.join(src, "run.json")))
  assert record["input_mode"] == "device_resident" and record["num_devices"] == 1
  cfg = small_config()
  previous = resume.check(src, cfg)
  assert resume.input_config(cfg, previous).train.device_resident == "on"
  with pytest.raises(ValueError, match="device_resident to on"):
    resume.check_run(previous, {**record, "input_mode": "streaming"}, 10**6, src)
  per_device = {**record, "bn_stats": "per_device", "num_devices": 8}
  with pytest.raises(ValueError, match="trained on 1 devices"):
    resume.check_run(previous, per_device, 10**6, src)
  resume.check_run(previous, {**record, "num_devices": 8}, 10**6, src)     # global BN: fine


def test_files_follow_the_umask(finished_run):
  src, _ = finished_run
  mask = os.umask(0)
  os.umask(mask)
  for name in ("config.json", "final.json", "run.json", "metrics.jsonl", "curves.png"):
    assert os.stat(os.path.join(src, name)).st_mode & 0o777 == 0o666 & ~mask, name


def test_init_from_starts_a_new_run_from_the_old_runs_weights(finished_run, tmp_path, capsys):
  from test_train import assert_trees_equal, final_params
  from xnn.train import train_and_evaluate
  src, first = finished_run
  cfg = small_config()
  cfg.train.init_from = src
  cfg.train.num_epochs = 1
  cfg.optimizer.learning_rate = 1e-30         # updates far below float32 resolution: the weights stay
  cfg.schedule.name = "constant"
  r = train_and_evaluate(cfg, str(tmp_path / "new"))
  assert f"Starting from the weights of {src} at step {first.step}" in capsys.readouterr().out
  assert r.step == first.step // 2 and r.test_accuracy == first.test_accuracy
  assert_trees_equal(final_params(src)[1], final_params(str(tmp_path / "new"))[1])
  # weights that do not fit the model: refused, naming the first parameter, before anything is written
  cfg.model.name = "resnet20"
  with pytest.raises(ValueError, match=r"do not fit model 'resnet20': \['conv1'\]\['bias'\] is not in this model"):
    train_and_evaluate(cfg, str(tmp_path / "other"))
  assert not (tmp_path / "other").exists()
