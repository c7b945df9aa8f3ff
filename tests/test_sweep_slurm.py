"""Slurm sweeps through submitit: one job array; a preempted run requeues itself and ends bit-identical.

The array runs on submitit's local executor (real processes, the submission code of
``xnn.sweeps.slurm.submit``); the preemption is the USR2 that Slurm sends
(``#SBATCH --signal=USR2@S``), sent to the array task's process. ``sbatch`` and
``srun`` are replaced by stand-ins on PATH only to check that the dry run prints the
file submitit submits.
"""

import json
import os
import signal
import stat
import sys
import time

import psutil
import pytest

from conftest import REPO, TWIN_RUNS_SWEEP
from test_train import assert_trees_equal, final_params
from xnn import sweeps as s
from xnn.sweeps import launchers, slurm
from xnn.sweeps.status import sweep_status
from xnn.train.checkpoint import MANIFEST, checkpoint_steps
from xnn.train.metrics import read_metrics


def _trained_to(workdir, step):
  recs = read_metrics(os.path.join(workdir, "metrics.jsonl"))
  return any(r["type"] == "train" and r["step"] >= step for r in recs) and _saved(workdir)


def _saved(workdir):
  """Whether a checkpoint has been written to the end (its manifest comes last)."""
  return any(os.path.exists(os.path.join(workdir, "checkpoints", str(step), MANIFEST))
             for step in checkpoint_steps(workdir))


def _wait(pred, what, timeout=240):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if pred():
      return
    time.sleep(0.05)
  raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_a_preempted_array_task_is_requeued_and_ends_bit_identical(tmp_path):
  cfg = tmp_path / "sweep_cfg.py"
  cfg.write_text(TWIN_RUNS_SWEEP)       # one run preempted and requeued, one not
  sweep_dir = str(tmp_path / "sweep")
  specs = launchers.run_specs(s.load_sweep(str(cfg)), sweep_dir)
  opt = slurm.SlurmOptions(time="10", gpus_per_node=0, setup=(), executor="local", signal_delay_s=30)
  (run_a, job_a), (run_b, job_b) = slurm.submit(sweep_dir, specs, str(cfg), opt)
  a, b = specs[0].workdir, specs[1].workdir
  assert run_a.workdir == a
  try:
    _wait(lambda: _trained_to(a, 16), "the first run to train 16 steps and checkpoint")
    controller = psutil.Process(job_a._process.pid)
    task = next(p for p in controller.children() if "submitit.core._submit" in " ".join(p.cmdline()))
    train = task.children()[0]
    train.suspend()              # held mid-run, so that the preemption surely lands before its end
    assert not os.path.exists(os.path.join(a, "final.json"))
    task.send_signal(signal.SIGUSR2)                     # what Slurm sends before a time-out / at preemption
    time.sleep(0.5)              # the task's handler SIGTERMs the held run ...
    train.resume()               # ... which checkpoints at its next step boundary and exits
    _wait(lambda: job_a.done() and job_b.done(), "both array tasks to end", timeout=300)
  finally:
    for job in (job_a, job_b):
      if not job.done():
        job.cancel()
  assert job_a.result()["step"] == job_b.result()["step"] == 32, (job_a.stdout(), job_b.stdout())
  assert "Requeued job" in job_a.stdout() and "Requeued job" not in job_b.stdout()
  log = open(os.path.join(a, "launcher.log")).read()
  assert log.count(launchers.START_MARK) == 2 and "(requeued)" in log and "stopped by SIGTERM" in log, log[-3000:]
  assert "Resuming from the checkpoint at step" in log
  (step_a, params_a), (step_b, params_b) = final_params(a), final_params(b)
  assert step_a == step_b == 32
  assert_trees_equal(params_a, params_b)
  fa, fb = (json.load(open(os.path.join(d, "final.json"))) for d in (a, b))
  timing = ("wall_time_s", "segments")
  assert {k: v for k, v in fa.items() if k not in timing} == {k: v for k, v in fb.items() if k not in timing}
  assert len(fa["segments"]) == 2 and len(fb["segments"]) == 1
  assert [r.state for r in sweep_status(sweep_dir)] == ["finished", "finished"]
  assert os.listdir(os.path.join(sweep_dir, slurm.LOG_FOLDER))          # submitit's logs in the sweep folder


def _stand_in(folder, name, code):
  path = folder / name
  path.write_text(f"#!{sys.executable}\n{code}")
  path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_the_dry_run_prints_the_job_array_submitit_submits(tmp_path, monkeypatch, capsys):
  """``sbatch``/``srun`` stand-ins record what ``SlurmExecutor`` submits; the dry run printed the same file."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  _stand_in(bin_dir, "srun", "")
  _stand_in(bin_dir, "sbatch", f"""
import shutil, sys
shutil.copy(sys.argv[1], {str(tmp_path / 'submitted.sh')!r})
print("Submitted batch job 4242")
""")
  monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
  sweep_dir = str(tmp_path / "sweep")
  config = os.path.join(REPO, "experiments", "residual_vs_plain", "config.py") + ":quick"
  specs = launchers.run_specs(s.load_sweep(config), sweep_dir)
  opt = slurm.SlurmOptions(partition="gpu", account="lab", time="2-00:00:00", nodes=2, gpus_per_node=4,
                           cpus_per_task=8, mem="64G", signal_delay_s=300, array_parallelism=2)
  slurm.dry_run(sweep_dir, specs, config, opt, name="rvp")
  printed = capsys.readouterr().out
  assert not os.path.exists(sweep_dir)                                   # a dry run writes nothing
  submitted = slurm.submit(sweep_dir, specs, config, opt, name="rvp")
  text = (tmp_path / "submitted.sh").read_text()
  assert text in printed
  for line in ("#SBATCH --array=0-11%2", "#SBATCH --partition=gpu", "#SBATCH --account=lab", "#SBATCH --time=2880",
               "#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=4",
               "#SBATCH --cpus-per-task=8", "#SBATCH --mem=64G", "#SBATCH --signal=USR2@300",
               f"#SBATCH --output={sweep_dir}/slurm/%A_%a/%A_%a_0_log.out", "source .venv/bin/activate"):
    assert line in text.splitlines(), line
  assert [job.job_id for _, job in submitted] == [f"4242_{i}" for i in range(12)]    # 4 networks x 3 seeds
  assert [run.name for run, _ in submitted] == [sp.name for sp in specs]
  assert "# array task 9: model.name-resnet56__seed-0" in printed
  assert "# array task 11: model.name-resnet56__seed-2" in printed


@pytest.mark.parametrize("field,value,message", [
    ("time", "1:2:3:4", "--time '1:2:3:4': expected minutes, HH:MM:SS"),
    ("mem", "lots", "--mem 'lots': expected a size such as 64G"),
    ("signal_delay_s", 900, "--signal-delay 900 s: must be shorter than --time 10"),
])
def test_bad_slurm_options_are_one_line(field, value, message):
  opt = slurm.SlurmOptions(time="10")
  setattr(opt, field, value)
  with pytest.raises(ValueError, match=message.replace("(", r"\(")):
    slurm.check_options(opt)
  assert slurm.minutes("90") == 90 and slurm.minutes("1:30:00") == 90 and slurm.minutes("1-0") == 1440
  assert slurm.minutes("2-03:04:05") == 2 * 1440 + 3 * 60 + 5
