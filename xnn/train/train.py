"""``train_and_evaluate(config, workdir)``: the whole training job, in stages.

config -> workdir -> mesh -> input -> model -> state -> step -> checkpoint -> eval ->
loop -> final. ``train_and_evaluate`` reads top to bottom through them; each stage is
a small function below. docs/architecture.md describes what each one does.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from xnn import models
from xnn.configs import schema
from xnn.data.datasets import DATASETS, Dataset, load_dataset
from xnn.ops import conv_setting, resolved_cpu_conv
from xnn.train import checkpoint as ckpt
from xnn.train import tasks as tasks_lib
from xnn.train.chrono import Chrono
from xnn.train.compilation import CompileTimer, enable_persistent_cache
from xnn.train.evaluate import Evaluator
from xnn.train.inputs import Plan, make_input
from xnn.train.metrics import MetricsWriter, atomic_write
from xnn.train.progress import Progress
from xnn.train.schedules import create_learning_rate_fn, create_optimizer
from xnn.train.step import create_train_state, make_eval_step, make_final_eval_step, make_train_step


class TrainingInterrupted(Exception):
  """Raised after a SIGTERM/SIGINT once the checkpoint is written."""

  def __init__(self, signum: int, step: int):
    super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}; "
                     "a checkpoint was saved and re-running the same command resumes")
    self.signum, self.step = signum, step


@dataclasses.dataclass
class Result:
  """What ``train_and_evaluate`` returns (also written to ``workdir/final.json``)."""
  step: int
  epoch: float
  test_accuracy: float
  test_loss: float
  train_accuracy: float
  wall_time_s: float
  params: int
  # sequence-to-sequence models: accuracy of greedy decoding (no teacher forcing)
  greedy_token_accuracy: float | None = None
  greedy_sequence_accuracy: float | None = None
  state: Any = None


def train_and_evaluate(config: Any, workdir: str, dataset: Dataset | None = None) -> Result:
  """Trains ``config.model`` on ``config.data`` (or ``dataset``), evaluating every epoch.

  Resumes from the newest checkpoint in ``workdir``. Returns the final metrics.
  """
  t_start = time.time()
  cfg = check_config(config, dataset)                                      # config
  with conv_setting(cpu=cfg.train.cpu_conv), CompileTimer() as compile_timer:
    cache_dir = prepare_workdir(cfg, workdir)                              # workdir
    mesh = Mesh(np.array(jax.devices()), ("data",))                        # mesh
    ds = dataset if dataset is not None else load_dataset(cfg.data)        # input
    inp = make_input(ds, cfg, mesh)
    plan = make_plan(cfg, inp.steps_per_epoch)
    evaluator = Evaluator(ds, cfg.data, cfg.train.eval_batch_size, mesh)
    task = tasks_lib.task_for(ds, cfg.data, cfg.train.label_smoothing)     # model
    model = build_model(cfg, ds)
    example = task.inputs({k: v[:1] for k, v in evaluator.example.items()})
    num_params = check_input(model, cfg.model.name, example)
    lr_fn = create_learning_rate_fn(cfg.schedule, cfg.optimizer.learning_rate, plan.steps_per_epoch,
                                    plan.total_steps)
    tx = create_optimizer(cfg.optimizer, lr_fn)
    state = init_state(model, tx, example, cfg.seed, mesh)                 # state
    rng = jax.random.fold_in(jax.random.key(cfg.seed), 1)                  # step
    inp.bind(make_train_step(model, task, lr_fn=lr_fn, rng_streams=models.info(cfg.model.name).rng_streams,
                             bn_groups=bn_groups(cfg), group_sharding=group_sharding(cfg, mesh)), rng, plan)
    manager = ckpt.create_manager(workdir, cfg.train.keep_checkpoints)     # checkpoint
    start_step, state = restore(manager, state, inp, workdir)
    writer = MetricsWriter(workdir, resume_step=start_step)
    writer.write("input", start_step, **inp.describe())
    eval_step = make_eval_step(model, task)                                # eval
    loop = Loop(cfg, plan, inp, evaluator, eval_step, manager, writer, compile_timer, cache_dir, workdir)
    state, step, last_eval = loop.run(state, start_step)                   # loop
    final = final_evaluations(task, model, evaluator, state, writer, step)  # final
    return finish(cfg, workdir, state, step, last_eval, plan, writer, compile_timer, num_params, example,
                  model, final, t_start)


# --- config ---------------------------------------------------------------------------------


def check_config(config: Any, dataset: Dataset | None) -> ml_collections.ConfigDict:
  """The full, validated config; every check that needs no data or device runs here."""
  cfg = schema.resolve(config)
  models.MODELS.get(cfg.model.name)                # unknown names raise, listing the models
  if dataset is None:
    DATASETS.get(cfg.data.name)                    # ... and the datasets
  num_devices = jax.device_count()
  batch = cfg.train.batch_size
  if batch <= 0 or batch % num_devices:
    raise ValueError(f"train.batch_size={batch} must be a positive multiple of the "
                     f"{num_devices} devices ({jax.process_count()} host(s))")
  bn_groups(cfg)
  if not cfg.optimizer.learning_rate > 0:
    raise ValueError(f"optimizer.learning_rate must be > 0, got {cfg.optimizer.learning_rate}")
  return cfg


def bn_groups(cfg: ml_collections.ConfigDict) -> int:
  """How many BatchNorm groups the global batch is split into (``train.bn_stats``)."""
  mode, batch = cfg.train.bn_stats, cfg.train.batch_size
  if mode == "global":
    return 1
  if mode == "per_device":
    return jax.device_count()
  g = cfg.train.bn_group_size
  if g <= 0 or batch % g:
    raise ValueError(f"train.bn_group_size must divide train.batch_size={batch}, got {g}")
  return batch // g


def group_sharding(cfg: ml_collections.ConfigDict, mesh: Mesh) -> NamedSharding | None:
  """Per-device BN: each device's group stays on it."""
  return NamedSharding(mesh, P("data")) if cfg.train.bn_stats == "per_device" else None


# --- workdir --------------------------------------------------------------------------------


def prepare_workdir(cfg: ml_collections.ConfigDict, workdir: str) -> str | None:
  """Creates ``workdir`` (an error if it cannot be written), points the compilation cache, writes
  ``config.json``; returns the compilation cache directory."""
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".xnn_write_test.{os.getpid()}")   # one per process (multi-host)
    with open(probe, "w") as f:
      f.write("ok")
    os.unlink(probe)
  except OSError as e:
    raise ValueError(f"workdir {workdir!r} is not writable: {e.strerror or e}") from None
  cache_dir = enable_persistent_cache(cfg.train.compilation_cache, workdir, cfg.train.compilation_cache_min_s,
                                      cfg.train.compilation_cache_max_gb)
  if jax.process_index() == 0:
    atomic_write(os.path.join(workdir, "config.json"), cfg.to_json_best_effort(indent=2))
  return cache_dir


# --- input ----------------------------------------------------------------------------------


def make_plan(cfg: ml_collections.ConfigDict, steps_per_epoch: int) -> Plan:
  if steps_per_epoch == 0:
    raise ValueError(f"train.batch_size={cfg.train.batch_size} is larger than the training set")
  eval_every = max(1, round(cfg.train.eval_every_epochs * steps_per_epoch))
  return Plan(steps_per_epoch=steps_per_epoch,
              total_steps=cfg.train.num_steps or cfg.train.num_epochs * steps_per_epoch,
              eval_every=eval_every, checkpoint_every=cfg.train.checkpoint_every_steps or eval_every)


# --- model ----------------------------------------------------------------------------------


def build_model(cfg: ml_collections.ConfigDict, ds: Dataset):
  """The registered model with ``model.kwargs``; the dataset's classes and the compute dtype."""
  kwargs = dict(cfg.model.kwargs.to_dict())
  kwargs.setdefault("num_classes", cfg.model.num_classes or ds.num_classes)
  kwargs.setdefault("dtype", jnp.dtype(cfg.model.dtype))
  try:
    return models.build(cfg.model.name, **kwargs)
  except TypeError as e:
    raise ValueError(f"model.kwargs {dict(cfg.model.kwargs)} do not fit model {cfg.model.name!r}: {e}") from None


def check_input(model, name: str, example: tuple[np.ndarray, ...]) -> int:
  """Abstract init (no compute): a model that can't take the input fails here, clearly.

  Returns the number of parameters.
  """
  try:
    variables = jax.eval_shape(lambda: model.init({"params": jax.random.key(0), "dropout": jax.random.key(0)},
                                                  *(jnp.asarray(x) for x in example), train=False))
  except Exception as e:  # re-raised with the shapes named
    expected = models.info(name).input_shape
    raise ValueError(
        f"model {name!r} cannot take input of shape {tuple(example[0].shape[1:])} "
        f"(its default input is {expected}); change data.image_size / data.crop_size / "
        f"data.channels or the model. Underlying error: {type(e).__name__}: {str(e).splitlines()[0]}") from e
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(variables["params"])))


# --- state ----------------------------------------------------------------------------------


def init_state(model, tx, example: tuple[np.ndarray, ...], seed: int, mesh: Mesh):
  """Parameters and optimiser state, replicated over the mesh."""
  init_fn = jax.jit(lambda rng: create_train_state(model, tx, rng, tuple(map(jnp.asarray, example))),
                    out_shardings=NamedSharding(mesh, P()))
  return init_fn(jax.random.key(seed))


# --- checkpoint -----------------------------------------------------------------------------


def restore(manager, state, inp, workdir: str) -> tuple[int, Any]:
  """(step, state) of the newest good checkpoint, the input rewound to it; (0, state) if none."""
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
  restored = ckpt.restore_latest(manager, abstract, inp.restore_args)
  if restored is None:
    return 0, state
  if jax.process_index() == 0:
    print(f"Resuming from the checkpoint at step {restored[0]} in {workdir}", flush=True)
  return restored


# --- loop -----------------------------------------------------------------------------------


class _Preemption:
  """Turns SIGTERM/SIGINT into a flag the loop checks at step boundaries."""

  def __init__(self):
    self.signum: int | None = None
    self._old = {}

  def __enter__(self):
    for s in (signal.SIGTERM, signal.SIGINT):
      try:
        self._old[s] = signal.signal(s, self._handle)
      except ValueError:   # not the main thread: leave signals alone
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    self.signum = signum

  def __exit__(self, *exc):
    for s, h in self._old.items():
      signal.signal(s, h)


def _crossed(every: int, before: int, after: int) -> bool:
  return after // every > before // every


class Loop:
  """Train, log, evaluate, checkpoint; stops at ``plan.total_steps`` or at a preemption signal."""

  def __init__(self, cfg, plan: Plan, inp, evaluator: Evaluator, eval_step, manager, writer: MetricsWriter,
               compile_timer: CompileTimer, cache_dir: str | None, workdir: str):
    self.cfg, self.plan, self.inp, self.evaluator, self.eval_step = cfg, plan, inp, evaluator, eval_step
    self.manager, self.writer, self.compile_timer = manager, writer, compile_timer
    self.cache_dir, self.workdir = cache_dir, workdir
    self.chrono = Chrono()
    self.pending: list[Any] = []                                   # step metrics not read back yet
    self.epoch_values: dict[str, list[float]] = {"loss": [], "accuracy": []}
    self.last = {"loss": float("nan"), "accuracy": float("nan")}
    self.last_eval: dict[str, Any] | None = None
    self.progress: Progress | None = None

  def run(self, state, step: int):
    """Runs from ``step`` to the end; returns (state, step, the last evaluation record)."""
    self.progress = Progress(self.plan.total_steps, step, self.cfg.train.progress_bar,
                             self.cfg.train.progress_every_s)
    first = True
    try:
      with _Preemption() as preempt:
        while step < self.plan.total_steps:
          before = step
          state, step = self.first_chunk(state, step) if first else self.chunk(state, step)
          first = False
          self.after_chunk(state, before, step)
          if preempt.signum is not None:
            self.flush(step)
            if self.manager.latest_step() != step:
              self.save(state, step)
            self.writer.close()
            raise TrainingInterrupted(preempt.signum, step)
    finally:
      self.progress.close()
    return self.finish(state, step)

  def first_chunk(self, state, step: int):
    """The first chunk compiles the step: announced, timed apart from training, recorded."""
    self.progress.say("compiling the train step (or loading it from the compilation cache)")
    t0, before = time.time(), self.compile_timer.totals()
    with self.chrono.paused():
      state, metrics, n = self.inp.advance(state, step)
      jax.block_until_ready(metrics)
    compile_s = time.time() - t0
    totals = self.compile_timer.totals()
    self.writer.write("compile", step + n, train_step_compile_and_first_step_s=compile_s,
                      compilation_cache=self.cache_dir, cpu_conv=self.cfg.train.cpu_conv,
                      cpu_conv_resolved=_resolved_conv(), **totals)
    xla_s = totals["xla_compile_s"] - before["xla_compile_s"]
    hits = totals["cache_hits"] - before["cache_hits"]
    self.progress.say(f"train step ready after {compile_s:.1f} s ({xla_s:.1f} s in XLA, {hits} programs "
                      "from the compilation cache); training")
    self.pending.append(metrics)
    self.progress.update(n)
    return state, step + n

  def chunk(self, state, step: int):
    state, metrics, n = self.inp.advance(state, step)
    self.chrono.count(n)
    self.pending.append(metrics)
    self.progress.update(n)
    return state, step + n

  def after_chunk(self, state, before: int, step: int) -> None:
    """Logging, epoch summaries, evaluation and checkpoints due at ``step``."""
    plan = self.plan
    if _crossed(self.inp.log_every, before, step):
      self.flush(step)
    if _crossed(plan.steps_per_epoch, before, step):
      self.flush(step)
      self.end_epoch(step)
    if _crossed(plan.eval_every, before, step) or step == plan.total_steps:
      self.flush(step)
      self.evaluate(state, step)
    if _crossed(plan.checkpoint_every, before, step) or step == plan.total_steps:
      self.flush(step)
      self.save(state, step)

  def flush(self, step: int) -> None:
    """Reads back pending step metrics (one device sync), logs their mean, checks for NaN."""
    if not self.pending:
      return
    host = jax.device_get(self.pending)
    self.pending = []
    rate = self.chrono.rate()
    values = {k: np.concatenate([np.atleast_1d(h[k]) for h in host]) for k in host[0]}
    mean = {k: float(np.mean(v)) for k, v in values.items()}
    if not all(math.isfinite(mean[k]) for k in ("loss", "grad_norm")):
      raise FloatingPointError(
          f"loss became {mean['loss']} (gradient norm {mean['grad_norm']}) by step {step}; "
          f"stopping. The last good checkpoint is step {self.manager.latest_step()} in {self.workdir}/checkpoints "
          "(lower the learning rate or check the data).")
    self.epoch_values["loss"].extend(values["loss"])
    self.epoch_values["accuracy"].extend(values["accuracy"])
    self.last = mean
    self.writer.write("train", step, epoch=step / self.plan.steps_per_epoch, **mean,
                      examples_per_sec=rate * self.cfg.train.batch_size)
    self.progress.update(0, loss=f"{mean['loss']:.4f}", acc=f"{mean['accuracy']:.3f}")

  def end_epoch(self, step: int) -> None:
    if self.epoch_values["loss"]:
      self.writer.write("epoch", step, epoch=step / self.plan.steps_per_epoch,
                        train_loss=float(np.mean(self.epoch_values["loss"])),
                        train_accuracy=float(np.mean(self.epoch_values["accuracy"])))
    self.epoch_values = {"loss": [], "accuracy": []}

  def evaluate(self, state, step: int) -> None:
    with self.chrono.paused():
      sums = self.evaluator.sums(self.eval_step, state)
      n = max(float(sums["count"]), 1.0)
      self.last_eval = self.writer.write("eval", step, epoch=step / self.plan.steps_per_epoch,
                                         test_loss=sums["loss_sum"] / n, test_accuracy=sums["correct"] / n,
                                         test_examples=int(n))
      self.writer.plot(self.title, force=step == self.plan.total_steps)
    self.progress.say(f"step {step}/{self.plan.total_steps} epoch {step / self.plan.steps_per_epoch:.1f}: "
                      f"train loss {self.last['loss']:.4f} acc {self.last['accuracy']:.4f} | "
                      f"test loss {self.last_eval['test_loss']:.4f} acc {self.last_eval['test_accuracy']:.4f}")

  @property
  def title(self) -> str:
    return f"{self.cfg.model.name} on {self.cfg.data.name}"

  def save(self, state, step: int) -> None:
    with self.chrono.paused():
      ckpt.save(self.manager, step, state, self.inp.save_args(step))

  def finish(self, state, step: int):
    """A run resumed at its end still ends with an evaluation and a checkpoint of the last step."""
    self.flush(step)
    if self.last_eval is None or self.last_eval["step"] != step:
      self.evaluate(state, step)
    if self.manager.latest_step() != step:
      self.save(state, step)
    return state, step, self.last_eval


def _resolved_conv() -> str:
  """What the zoo's convolutions ran as: the CPU formulation, or the accelerator's (XLA's)."""
  if jax.default_backend() != "cpu":
    return f"xla ({jax.default_backend()})"
  return resolved_cpu_conv()


# --- final ----------------------------------------------------------------------------------


def final_evaluations(task, model, evaluator: Evaluator, state, writer: MetricsWriter, step: int) -> dict:
  """The task's own end-of-training evaluations (greedy decoding for sequence-to-sequence)."""
  out: dict[str, float] = {}
  for name, fn in task.final_evals(model, evaluator.example).items():
    numbers = task.summarize(name, evaluator.sums(make_final_eval_step(fn), state))
    writer.write(f"eval_{name}", step, **numbers)
    out.update(numbers)
  return out


def finish(cfg, workdir: str, state, step: int, last_eval, plan: Plan, writer: MetricsWriter,
           compile_timer: CompileTimer, num_params: int, example, model, final: dict, t_start: float) -> Result:
  """The ``final`` record, ``final.json`` and the returned :class:`Result`."""
  epochs = [r for r in writer.records if r["type"] == "epoch"] if writer.enabled else []
  result = Result(step=step, epoch=step / plan.steps_per_epoch, test_accuracy=float(last_eval["test_accuracy"]),
                  test_loss=float(last_eval["test_loss"]),
                  train_accuracy=float(epochs[-1]["train_accuracy"]) if epochs else float("nan"),
                  wall_time_s=time.time() - t_start, params=num_params, state=state, **final)
  writer.write("final", step, **{k: v for k, v in dataclasses.asdict(result).items() if k not in ("state", "step")},
               **{f"total_{k}": v for k, v in compile_timer.totals().items()})
  writer.close()
  if jax.process_index() == 0:
    summary = {k: v for k, v in dataclasses.asdict(result).items() if k != "state"}
    summary["input_shape"] = list(example[0].shape[1:])
    summary["macs"] = _macs(cfg, tuple(example[0].shape[1:]), model.num_classes)
    atomic_write(os.path.join(workdir, "final.json"), json.dumps(summary, indent=2))
  return result


def _macs(cfg: ml_collections.ConfigDict, input_shape: tuple[int, ...], num_classes: int) -> int | None:
  """Forward MACs per example from ``xnn.cost`` (None where it cannot say)."""
  try:
    from xnn.cost import analyze_model
    kwargs = {**cfg.model.kwargs.to_dict(), "num_classes": num_classes}
    return int(analyze_model(cfg.model.name, input_shape=input_shape, batch=1, **kwargs).macs)
  except Exception:  # noqa: BLE001 -- cost analysis is informative only
    return None
