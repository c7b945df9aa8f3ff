"""The training job end to end: outputs, resume, errors, data parallelism."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow_datasets as tfds

from conftest import REPO, run_python
from xnn.data.datasets import from_arrays
from xnn.train import train_and_evaluate
from xnn.configs.args import parse_arg, parse_value
from xnn.configs.schema import resolve
from xnn.train.metrics import read_metrics


def final_params(workdir):
  """Parameters of the newest checkpoint in ``workdir``, as NumPy arrays."""
  with ocp.CheckpointManager(os.path.join(workdir, "checkpoints"),
                             item_handlers={"state": ocp.StandardCheckpointHandler()}) as m:
    step = m.latest_step()
    meta = m.item_metadata(step)["state"]
    # Restore onto this process's first device, whatever topology saved it.
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=one), meta)
    state = m.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]
  return step, jax.tree.map(np.asarray, state["params"])


def assert_trees_equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(x, y)


def test_default_job_learns_and_writes_its_outputs(tiny_config, tmp_path):
  tiny_config.train.num_epochs = 5
  r = train_and_evaluate(tiny_config, str(tmp_path))
  assert r.test_accuracy >= 0.90, r      # 0.97 after 5 epochs when measured; chance is 0.10
  assert r.params == 62_958                # LeNet-5 at 32x32x3 (the LeNet-5 homework's network)
  files = set(os.listdir(tmp_path))
  assert {"config.json", "metrics.jsonl", "curves.png", "final.json", "tensorboard", "checkpoints"} <= files
  with open(tmp_path / "curves.png", "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert any(n.startswith("events.out.tfevents") for n in os.listdir(tmp_path / "tensorboard"))
  recs = read_metrics(str(tmp_path / "metrics.jsonl"))
  kinds = {r["type"] for r in recs}
  assert {"train", "eval", "epoch", "final", "compile"} <= kinds
  train = [r for r in recs if r["type"] == "train"]
  assert {"loss", "accuracy", "learning_rate", "grad_norm", "examples_per_sec"} <= set(train[0])
  assert [r["epoch"] for r in recs if r["type"] == "eval"] == [1.0, 2.0, 3.0, 4.0, 5.0]
  assert json.load(open(tmp_path / "config.json"))["model"]["name"] == "lenet5"
  # Re-running a finished job resumes at the end and changes nothing.
  r2 = train_and_evaluate(tiny_config, str(tmp_path))
  assert r2.step == r.step and r2.test_accuracy == r.test_accuracy


def test_kill_and_resume_is_bit_identical(tmp_path):
  """SIGTERM a real `xnn train` mid-run; re-running it ends on the uninterrupted run's parameters.

  The three processes share a fresh persistent compilation cache: the first compiles, the
  later ones load its programs (and still end bit-identical)."""
  args = ["--config.train.num_epochs=6", "--config.train.checkpoint_every_steps=7",
          "--config.train.progress_bar=False", "--config.data.augment=pad_crop_flip",
          "--config.data.flip=False", "--config.data.pad=2", "--config.train.compilation_cache_min_s=0"]
  cmd = [sys.executable, "-m", "xnn.cli", "train"]
  env = {**os.environ, "XNN_CACHE_DIR": str(tmp_path / "cache")}
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  a, b = str(tmp_path / "a"), str(tmp_path / "b")
  subprocess.run(cmd + [f"--workdir={a}"] + args, check=True, capture_output=True, timeout=600, cwd=REPO,
                 env=env)
  proc = subprocess.Popen(cmd + [f"--workdir={b}"] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          cwd=REPO, env=env)
  deadline = time.time() + 300
  while time.time() < deadline:
    recs = read_metrics(os.path.join(b, "metrics.jsonl"))
    if any(r["type"] == "train" and r["step"] >= 30 for r in recs):
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 128 + signal.SIGTERM, err.decode()[-2000:]
  assert b"stopped by SIGTERM" in err
  stopped_at, _ = final_params(b)
  assert 30 <= stopped_at < 132
  resumed = subprocess.run(cmd + [f"--workdir={b}"] + args, capture_output=True, timeout=600, cwd=REPO,
                           env=env)
  assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
  assert f"Resuming from the checkpoint at step {stopped_at}".encode() in resumed.stdout
  step_a, params_a = final_params(a)
  step_b, params_b = final_params(b)
  assert step_a == step_b == 132
  assert_trees_equal(params_a, params_b)
  # The resumed run's log has each step once.
  steps = [r["step"] for r in read_metrics(os.path.join(b, "metrics.jsonl")) if r["type"] == "train"]
  assert steps == sorted(set(steps))
  # Compile time is reported apart from step time; only the first process compiled the step.
  compiles = [r for d in (a, b) for r in read_metrics(os.path.join(d, "metrics.jsonl")) if r["type"] == "compile"]
  assert len(compiles) == 3 and all(r["compilation_cache"] == str(tmp_path / "cache" / "jax") for r in compiles)
  assert compiles[0]["cache_hits"] == 0 and compiles[0]["cache_misses"] >= 1 and compiles[0]["xla_compile_s"] > 0
  assert compiles[1]["cache_hits"] >= 1 and compiles[2]["cache_hits"] >= 1
  assert compiles[2]["cache_misses"] == 0
  fa, fb = (json.load(open(os.path.join(d, "final.json"))) for d in (a, b))
  assert fa["test_accuracy"] == fb["test_accuracy"] and fa["test_loss"] == fb["test_loss"]
  # Resumed mid-epoch (checkpoints every 7 of 22 steps per epoch): the epoch's train metrics kept
  # their pre-kill part, so every epoch and eval record equals the uninterrupted run's.
  for kind in ("epoch", "eval"):
    ra, rb = ([r for r in read_metrics(os.path.join(d, "metrics.jsonl")) if r["type"] == kind] for d in (a, b))
    assert ra == rb and len(ra) == 6, kind
  # The wall time adds up both segments.
  assert [s["from_step"] for s in fb["segments"]] == [0, stopped_at] and len(fa["segments"]) == 1
  assert fb["wall_time_s"] == pytest.approx(sum(s["wall_s"] for s in fb["segments"]))


def test_corrupt_latest_checkpoint_falls_back_with_a_warning(tiny_config, tmp_path, capsys):
  tiny_config.train.num_epochs = 3
  train_and_evaluate(tiny_config, str(tmp_path))
  _, good = final_params(str(tmp_path))
  # A run killed after its last checkpoint (no final.json), whose newest checkpoint (step 66) is then
  # corrupted: every file of its state truncated.
  os.unlink(tmp_path / "final.json")
  for root, _, files in os.walk(tmp_path / "checkpoints" / "66" / "state"):
    for f in files:
      open(os.path.join(root, f), "wb").close()
  r = train_and_evaluate(tiny_config, str(tmp_path))
  out = capsys.readouterr().out
  assert "checkpoint at step 66 does not verify" in out
  assert "Resuming from the checkpoint at step 44" in out
  assert r.step == 66
  _, again = final_params(str(tmp_path))
  assert_trees_equal(good, again)


def test_nan_loss_stops_with_a_clear_message(tiny_config, tmp_path):
  tiny_config.optimizer.name = "sgd"
  tiny_config.optimizer.learning_rate = 1e12
  tiny_config.schedule.name = "constant"
  with pytest.raises(FloatingPointError, match=r"loss became nan .* last good checkpoint"):
    train_and_evaluate(tiny_config, str(tmp_path))


def test_config_errors_name_the_bad_key_before_compiling(tiny_config, tmp_path):
  bad = tiny_config.to_dict()
  bad["train"]["batchsize"] = 3
  with pytest.raises(ValueError, match=r"unknown config key 'train.batchsize' \(did you mean train.batch_size\?\)"):
    resolve(bad)
  bad = tiny_config.to_dict()
  bad["train"]["batch_size"] = "64"
  with pytest.raises(ValueError, match=r"'train.batch_size' must be int .* got str '64'"):
    resolve(bad)
  tiny_config.model.name = "lenet6"
  with pytest.raises(KeyError, match=r"unknown model 'lenet6'.*Did you mean 'lenet5'.*Available models:.*resnet20"):
    train_and_evaluate(tiny_config, str(tmp_path))
  tiny_config.model.name = "lenet5"
  tiny_config.data.name = "cifar11"
  with pytest.raises(KeyError, match=r"unknown dataset 'cifar11'.*Available datasets:.*cifar10"):
    train_and_evaluate(tiny_config, str(tmp_path))
  assert not os.listdir(tmp_path)      # nothing written before the checks


def test_cli_rejects_unknown_keys_and_bad_types(tmp_path):
  cmd = [sys.executable, "-m", "xnn.cli", "train", f"--workdir={tmp_path}"]
  p = subprocess.run(cmd + ["--config.train.nope=1"], capture_output=True, text=True, cwd=REPO, timeout=120)
  assert p.returncode != 0 and "nope" in p.stderr
  p = subprocess.run(cmd + ["--config.train.batch_size=abc"], capture_output=True, text=True, cwd=REPO, timeout=120)
  assert p.returncode != 0 and "batch_size" in p.stderr and "abc" in p.stderr
  assert not (tmp_path / "metrics.jsonl").exists()


def test_input_shape_and_workdir_errors(tiny_config, tmp_path):
  tiny_config.data.image_size = 8          # LeNet-5's valid 5x5 convolutions need >= 16 pixels
  with pytest.raises(ValueError, match=r"model 'lenet5' cannot take input of shape \(8, 8, 3\) .*\(32, 32, 3\)"):
    train_and_evaluate(tiny_config, str(tmp_path / "w"))
  blocker = tmp_path / "file"
  blocker.write_text("x")
  with pytest.raises(ValueError, match="workdir .* is not writable"):
    train_and_evaluate(tiny_config, str(blocker / "sub"))
  tiny_config.data.image_size = 32
  tiny_config.train.batch_size = 5000
  with pytest.raises(ValueError, match="larger than the 1437 training examples"):
    train_and_evaluate(tiny_config, str(tmp_path / "w2"))


def test_config_arguments_parse_one_way():
  """FILE:ARG arguments and override values go through one parser (xnn.configs.args)."""
  assert parse_arg("shortcut='B', width=0.5, head=pixel", lazy=True) == {"shortcut": "B", "width": 0.5, "head": "pixel"}
  assert parse_arg("", lazy=True) == {}
  with pytest.raises(ValueError, match="config argument '1, 2': too many values"):
    parse_arg("1, 2")
  # positional values fill the options in order; a bare boolean option switches it on
  assert parse_arg("addition,rnn", task="reverse", model="transformer") == {"task": "addition", "model": "rnn"}
  assert parse_arg("quick,epochs=3", epochs=24, quick=False) == {"epochs": 3, "quick": True}
  assert parse_arg("train[:45000]", split="train") == {"split": "train[:45000]"}
  with pytest.raises(ValueError, match="epochs='x' must be int"):
    parse_arg("x", epochs=24)
  with pytest.raises(ValueError, match="unknown option 'epoch'; expected epochs"):
    parse_arg("epoch=3", epochs=24)
  assert [parse_value(v) for v in ("B", "0.5", "3", "(1, 2)", "true", "False", "'x y'")] == [
      "B", 0.5, 3, (1, 2), True, False, "x y"]


def test_model_kwargs_from_the_command_line(tmp_path):
  """--config.model.kwargs.NAME=VALUE adds a factory argument; a wrong one is named before any work."""
  from xnn.commands.train import parse
  config, _ = parse(["--config.model.kwargs.head=flatten_mlp", "--config.model.kwargs.head_kwargs.dropout=0.25",
                     "--config.train.num_epochs=3"])
  assert config.model.kwargs.to_dict() == {"head": "flatten_mlp", "head_kwargs": {"dropout": 0.25}}
  assert config.train.num_epochs == 3
  cmd = [sys.executable, "-m", "xnn.cli", "train", f"--workdir={tmp_path}/w", "--config.model.kwargs.widht=2"]
  p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
  assert p.returncode == 2 and "xnn train: error: model.kwargs {'widht': 2} do not fit model 'lenet5'" in p.stderr
  assert "Traceback" not in p.stderr and not (tmp_path / "w" / "metrics.jsonl").exists()


def test_recipes_by_name_and_unknown_choices(tiny_config):
  from xnn.configs import config_path
  assert config_path("cifar10_resnet:resnet56").endswith(os.path.join("xnn", "configs", "cifar10_resnet.py:resnet56"))
  with pytest.raises(ValueError, match="neither a file nor a recipe name; recipes: cifar10_course, cifar10_fast"):
    config_path("cifar10_resnt")
  tiny_config.train.cpu_conv = "fast"
  with pytest.raises(ValueError, match="'train.cpu_conv' must be one of 'auto', 'onednn', 'xnn', 'xla', got 'fast'"):
    resolve(tiny_config)


def test_mock_cifar10_resnet20_end_to_end(tiny_config, tmp_path):
  """TFDS mock_data stands in for CIFAR-10; the real builder, grain, orbax and optax paths run."""
  c = tiny_config
  c.data.name, c.data.image_size, c.data.channels, c.data.augment = "cifar10", 0, 0, "pad_crop_flip"
  c.data.data_dir = str(tmp_path / "tfds")
  c.model.name = "resnet20"
  c.optimizer.name, c.optimizer.learning_rate, c.optimizer.weight_decay = "sgd", 0.1, 1e-4
  c.schedule.name, c.schedule.boundaries = "piecewise", (2,)
  c.train.batch_size, c.train.num_steps, c.train.eval_batch_size = 8, 3, 16
  with tfds.testing.mock_data(num_examples=32, policy=tfds.testing.MockPolicy.USE_CODE):
    r = train_and_evaluate(c, str(tmp_path / "run"))
  assert r.step == 3 and r.params == 269_722
  recs = read_metrics(str(tmp_path / "run" / "metrics.jsonl"))
  lrs = [x["learning_rate"] for x in recs if x["type"] == "train"]
  # the three steps run as one device-resident dispatch; lr 0.1, then x0.1 from step 2 (boundary 2)
  assert lrs == pytest.approx([(0.1 + 0.1 + 0.01) / 3])
  assert np.isfinite(r.test_loss) and r.test_loss > 0
  assert [x["test_examples"] for x in recs if x["type"] == "eval"][-1] == 32


def test_bring_your_own_arrays_and_bf16(tiny_config, tmp_path):
  """In-memory arrays through the same pipeline; bf16 compute keeps float32 parameters."""
  rng = np.random.default_rng(0)
  # Two classes that differ in brightness: learnable in a few steps.
  y = rng.integers(0, 2, 256)
  x = (rng.random((256, 32, 32, 3)) * 100 + y[:, None, None, None] * 120).astype(np.uint8)
  ds = from_arrays(x[:192], y[:192], x[192:], y[192:])
  tiny_config.data.image_size, tiny_config.data.channels = 0, 0
  tiny_config.model.dtype = "bfloat16"
  tiny_config.train.num_epochs, tiny_config.train.batch_size = 4, 32
  r = train_and_evaluate(tiny_config, str(tmp_path), dataset=ds)
  assert r.test_accuracy > 0.9
  assert all(p.dtype == np.float32 for p in jax.tree.leaves(r.state.params))


DP_CHECK = r"""
import jax, jax.numpy as jnp, numpy as np, optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import xnn.models as models
from xnn.train.step import create_train_state, make_train_step
from xnn.train.tasks import ImageClassification
assert jax.device_count() == 8
model = models.build("resnet20", num_classes=10)
rng = np.random.default_rng(0)
batch = {"image": rng.standard_normal((64, 16, 16, 3)).astype(np.float32),
         "label": rng.integers(0, 10, 64).astype(np.int32)}
tx = optax.sgd(0.1, momentum=0.9)

def run(devices, bn_groups, group_sharding=False):
  mesh = Mesh(np.array(devices), ("data",))
  rep, shard = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
  state = jax.jit(lambda k: create_train_state(model, tx, k, (jnp.zeros((1, 16, 16, 3)),)),
                  out_shardings=rep)(jax.random.key(0))
  step = jax.jit(make_train_step(model, ImageClassification(("image",), "label"),
                                 lr_fn=lambda s: 0.1, bn_groups=bn_groups,
                                 group_sharding=shard if group_sharding else None),
                 in_shardings=(rep, shard, rep), out_shardings=(rep, rep))
  b = {k: jax.device_put(v, shard) for k, v in batch.items()}
  state, metrics = step(state, b, jax.random.key(1))
  # accuracy is left out: a near-tie argmax may flip under a different reduction order
  return jax.device_get((state.params, state.batch_stats, metrics["loss"], metrics["grad_norm"]))

def close(a, b, tol):
  # max |a - b| of each array within tol * max(1, largest |b|). Not relative per element:
  # BN-bias gradients are sums of 64x256 terms that nearly cancel, so their relative
  # error is large while their absolute error is float32 rounding.
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    err = float(np.max(np.abs(x - y))) / max(float(np.max(np.abs(y))), 1.0)
    assert err <= tol, (jax.tree_util.keystr(path), err, tol)

devs = jax.devices()
one_sync = run(devs[:1], 1)
eight_sync = run(devs, 1)
# Synchronised BN: 8 devices == 1 device on the same global batch (float32 reduction order only).
close(one_sync, eight_sync, 1e-4)
# Per-device BN on 8 devices == groups of 8 on one device (what pmap computed).
eight_pd = run(devs, 8, group_sharding=True)
one_groups = run(devs[:1], 8)
close(eight_pd, one_groups, 1e-4)
# ... and it is a different computation from synchronised BN.
diff = max(float(np.max(np.abs(x - y))) for x, y in zip(jax.tree.leaves(eight_pd[0]), jax.tree.leaves(eight_sync[0])))
assert diff > 1e-3, diff
print("ok")
"""


def test_data_parallel_step_equals_single_device_step():
  """8 simulated CPU devices vs 1: the same state after a step (|diff| <= 1e-4 * max(1, |array|))."""
  assert "ok" in run_python(DP_CHECK, devices=8).stdout


def test_batch_not_divisible_by_devices(tmp_path):
  code = f"""
from xnn.configs.default import get_config
from xnn.train import train_and_evaluate
c = get_config(); c.train.batch_size = 60
try:
  train_and_evaluate(c, {str(tmp_path)!r})
except ValueError as e:
  assert "train.batch_size=60 must be a positive multiple of the 8 devices" in str(e), e
  print("ok")
"""
  assert "ok" in run_python(code, devices=8).stdout


def test_two_processes_train_like_one_process_with_the_same_devices(tmp_path):
  """2 processes x 4 CPU devices joined by jax.distributed == 1 process x 8 devices, even when a preemption
  signals only one of the processes.

  Per-host input sharding gives each host its slice of the same global batches, and
  the gradient all-reduce crosses processes (gloo); the final parameters agree to
  float32 reduction-order noise (1e-5 of each array's scale). SIGTERM to process 1 alone
  stops both at the same step boundary with one checkpoint (they agree on it); the
  resumed pair ends on the same parameters.
  """
  args = ["--config.train.num_steps=12", "--config.train.progress_bar=False", "--config.train.log_every_steps=1",
          "--config.train.device_resident=off", "--config.train.checkpoint_every_steps=100",
          "--config.data.augment=pad_crop_flip", "--config.data.pad=2", "--config.data.flip=False"]
  one = str(tmp_path / "one")
  two = str(tmp_path / "two")
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  subprocess.run([sys.executable, "-m", "xnn.cli", "train", f"--workdir={one}", *args], check=True,
                 capture_output=True, timeout=600, cwd=REPO, env=env)
  train = [sys.executable, "-m", "xnn.cli", "train", f"--workdir={two}", *args]
  with socket.socket() as sock:           # a free port for the coordinator, as launch/local_multihost.py finds one
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
  procs = [subprocess.Popen(train, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={
      **os.environ, "XNN_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "XNN_NUM_PROCESSES": "2",
      "XNN_PROCESS_ID": str(i), "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}) for i in range(2)]
  deadline = time.time() + 300
  while time.time() < deadline and not any(r["type"] == "train" and r["step"] >= 3
                                           for r in read_metrics(os.path.join(two, "metrics.jsonl"))):
    time.sleep(0.05)
  procs[1].send_signal(signal.SIGTERM)
  outs = [p.communicate(timeout=300) for p in procs]
  assert [p.returncode for p in procs] == [128 + signal.SIGTERM] * 2, outs[0][1].decode()[-2000:]
  stopped = [int(d) for d in os.listdir(os.path.join(two, "checkpoints")) if d.isdigit()]
  assert len(stopped) == 1 and 3 <= stopped[0] < 12
  p = subprocess.run([sys.executable, "launch/local_multihost.py", "--processes", "2", "--devices-per-process", "4",
                      "--", *train], capture_output=True, text=True, timeout=600, cwd=REPO)
  assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
  assert p.stdout.count("done: step 12") == 1          # only the main process reports
  assert f"Resuming from the checkpoint at step {stopped[0]}" in p.stdout
  s1, p1 = final_params(one)
  s2, p2 = final_params(two)
  assert s1 == s2 == 12
  for x, y in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):
    assert np.max(np.abs(x - y)) <= 1e-5 * max(1.0, float(np.max(np.abs(x))))


def test_cifar10_fast_config_runs_pages_recipe_on_mock_cifar10(tmp_path):
  """xnn/configs/cifar10_fast.py end to end (ResNet-9 recipe, bf16, device-resident) on TFDS mock data."""
  from xnn.configs import cifar10_fast as mod
  c = resolve(mod.get_config())
  assert (c.model.name, c.train.batch_size, c.train.num_epochs) == ("resnet9", 512, 24)
  assert (c.optimizer.name, c.optimizer.nesterov, c.optimizer.learning_rate, c.optimizer.weight_decay) == (
      "sgd", True, 0.4, 5e-4)
  assert (c.schedule.name, c.schedule.warmup) == ("warmup_linear", 5.0)
  c = mod.get_config("2")                    # a 2-epoch run: the peak moves to 5/24 of it
  assert c.schedule.warmup == 5.0 * 2 / 24
  with pytest.raises(ValueError, match="EPOCHS >= 1"):
    mod.get_config("0")
  c.model.name = "resnet9_tiny"
  c.data.data_dir = str(tmp_path / "tfds")
  c.train.batch_size, c.train.eval_batch_size, c.train.progress_bar = 16, 16, False
  c.train.compilation_cache = "off"
  with tfds.testing.mock_data(num_examples=32, policy=tfds.testing.MockPolicy.USE_CODE):
    r = train_and_evaluate(c, str(tmp_path / "run"))
  recs = read_metrics(str(tmp_path / "run" / "metrics.jsonl"))
  assert [x["mode"] for x in recs if x["type"] == "input"] == ["device_resident"]
  assert r.step == 4 and np.isfinite(r.test_loss)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(r.state.params))
  # Logged once per dispatch of 2 steps: the mean rate of the one-cycle over steps 0-1 and 2-3
  # (2 steps an epoch; peak 0.4 at 5/24 x 2 epochs x 2 steps = step 0.83; 0 at step 4).
  lr = np.interp(np.arange(4), [0, 5 / 24 * 4, 4], [0, 0.4, 0])
  np.testing.assert_allclose([x["learning_rate"] for x in recs if x["type"] == "train"],
                             [lr[:2].mean(), lr[2:].mean()], rtol=1e-5)
