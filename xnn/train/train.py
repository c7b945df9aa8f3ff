"""``train_and_evaluate(config, workdir)``: the whole training job, in stages.

config -> workdir -> mesh -> input -> model -> state -> step -> checkpoint -> eval ->
loop -> final. ``train_and_evaluate`` reads top to bottom through them; each stage is
a small function below. docs/architecture.md describes what each one does.
"""

from __future__ import annotations

import dataclasses
import functools
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
from xnn.data import mixing
from xnn.data.datasets import DATASETS, Dataset, load_dataset
from xnn.ops import conv_setting, resolved_cpu_conv
from xnn.train import checkpoint as ckpt
from xnn.train import resume
from xnn.train import tasks as tasks_lib
from xnn.train.chrono import Chrono
from xnn.train.compilation import CompileTimer, check_cache_dir, enable_persistent_cache
from xnn.train.evaluate import Evaluator
from xnn.train.inputs import Plan, make_input
from xnn.train.metrics import MetricsWriter, atomic_write
from xnn.train.progress import Progress
from xnn.train.schedules import create_learning_rate_fn, create_optimizer
from xnn.train.workdir_lock import hold_workdir
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
  # train.ema_decay > 0: the moving average's test accuracy and loss at the last evaluation
  test_accuracy_ema: float | None = None
  test_loss_ema: float | None = None
  state: Any = None


def train_and_evaluate(config: Any, workdir: str, dataset: Dataset | None = None) -> Result:
  """Trains ``config.model`` on ``config.data`` (or ``dataset``), evaluating every epoch.

  Resumes from the newest verified checkpoint in ``workdir`` (``xnn.train.resume`` says
  when a run may resume); a finished run is left as it is. Returns the final metrics.
  """
  t_start = time.time()
  cfg = check_config(config, dataset)                                      # config
  done = resume.finished(workdir, cfg)
  if done is not None:
    return already_finished(workdir, done)
  ds = load_data(cfg, dataset)                                             # data
  model = build_model(cfg, ds)                                             # model
  ds.check_labels(model.num_classes, against=f"the model's {model.num_classes} classes (model.num_classes)")
  if cfg.train.compilation_cache != "workdir":
    check_cache_dir(cfg.train.compilation_cache, workdir)
  with conv_setting(cpu=cfg.train.cpu_conv), CompileTimer() as compile_timer, hold_workdir(workdir):
    previous = resume.check(workdir, cfg)                                  # workdir
    mesh = Mesh(np.array(jax.devices()), ("data",))                        # mesh
    inp = make_input(ds, resume.input_config(cfg, previous), mesh)         # input
    plan = make_plan(cfg, inp.steps_per_epoch)
    record = resume.run_record(cfg, inp.mode, jax.device_count(), jax.process_count())
    resume.check_run(previous, record, plan.total_steps, workdir)
    evaluator = Evaluator(ds, cfg.data, cfg.train.eval_batch_size, mesh)
    task = make_task(cfg, ds)
    example = task.inputs({k: v[:1] for k, v in evaluator.example.items()})
    num_params, abstract_variables = check_input(model, cfg.model.name, example)
    mix = make_mix(cfg, task, model.num_classes)
    weights = initial_weights(cfg, abstract_variables, previous)
    cache_dir = prepare_workdir(cfg, workdir, record)
    lr_fn = create_learning_rate_fn(cfg.schedule, cfg.optimizer.learning_rate, plan.steps_per_epoch,
                                    plan.total_steps)
    tx = create_optimizer(cfg.optimizer, lr_fn)
    streams = models.info(cfg.model.name).rng_streams
    state = init_state(model, tx, example, cfg.seed, mesh, streams, ema=cfg.train.ema_decay > 0)   # state
    rng = jax.random.fold_in(jax.random.key(cfg.seed), 1)                  # step
    inp.bind(make_train_step(model, task, lr_fn=lr_fn, rng_streams=streams, bn_groups=bn_groups(cfg),
                             group_sharding=group_sharding(cfg, mesh), mix=mix,
                             grad_accum_steps=cfg.train.grad_accum_steps, micro_sharding=micro_sharding(cfg, mesh),
                             ema_decay=cfg.train.ema_decay), rng, plan)
    manager = ckpt.create_manager(workdir, cfg.train.keep_checkpoints)     # checkpoint
    start_step, state, meta = restore(manager, state, inp, workdir)
    if start_step == 0 and weights is not None:
      state = with_weights(state, weights, mesh)
    writer = MetricsWriter(workdir, resume_step=start_step)
    writer.write("input", start_step, **inp.describe())
    eval_steps = make_eval_steps(model, task, cfg)                         # eval
    loop = Loop(cfg, plan, inp, evaluator, eval_steps, manager, writer, compile_timer, cache_dir, workdir,
                Bookkeeping.from_meta(meta, start_step, t_start))
    state, step, last_eval = loop.run(state, start_step)                   # loop
    final = final_evaluations(task, model, evaluator, state, writer, step)  # final
    return finish(cfg, workdir, state, step, last_eval, plan, writer, compile_timer, num_params, example,
                  model, final, loop.books)


def already_finished(workdir: str, final: dict[str, Any]) -> Result:
  """The recorded result of a finished run (no file is touched)."""
  if jax.process_index() == 0:
    print(f"{workdir}: already finished at step {final['step']} (test accuracy "
          f"{_fmt(final.get('test_accuracy'))}); nothing to do", flush=True)
  fields = {f.name for f in dataclasses.fields(Result)} - {"state"}
  # final.json's numbers as written; a non-finite one as its name ("nan"), which float() reads back
  return Result(**{k: float(v) if k not in ("step", "params") and isinstance(v, (int, float, str)) else v
                   for k, v in final.items() if k in fields})


# --- config ---------------------------------------------------------------------------------


def check_config(config: Any, dataset: Dataset | None) -> ml_collections.ConfigDict:
  """The full, validated config; every check that needs no data or device runs here."""
  cfg = schema.resolve(config)
  models.MODELS.get(cfg.model.name)                # unknown names raise, listing the models
  if dataset is None:
    DATASETS.get(cfg.data.name)                    # ... and the datasets
  num_devices = jax.device_count()
  batch, k = cfg.train.batch_size, cfg.train.grad_accum_steps
  if batch <= 0 or batch % num_devices:
    raise ValueError(f"train.batch_size={batch} must be a positive multiple of the "
                     f"{num_devices} devices ({jax.process_count()} host(s))")
  if (batch // k) % num_devices:
    raise ValueError(f"train.grad_accum_steps={k} leaves micro-batches of {batch // k} examples, not a multiple "
                     f"of the {num_devices} devices: train.batch_size must be a multiple of {k * num_devices}")
  bn_groups(cfg)
  if not cfg.optimizer.learning_rate > 0:
    raise ValueError(f"optimizer.learning_rate must be > 0, got {cfg.optimizer.learning_rate}")
  return cfg


def bn_groups(cfg: ml_collections.ConfigDict) -> int:
  """How many BatchNorm groups each (micro-)batch is split into (``train.bn_stats``)."""
  mode, batch = cfg.train.bn_stats, cfg.train.batch_size // cfg.train.grad_accum_steps
  if mode == "global":
    return 1
  if mode == "per_device":
    return jax.device_count()
  g = cfg.train.bn_group_size
  if g <= 0 or batch % g:
    raise ValueError(f"train.bn_group_size must divide the (micro-)batch of {batch} examples, got {g}")
  return batch // g


def group_sharding(cfg: ml_collections.ConfigDict, mesh: Mesh) -> NamedSharding | None:
  """Per-device BN: each device's group stays on it."""
  return NamedSharding(mesh, P("data")) if cfg.train.bn_stats == "per_device" else None


def micro_sharding(cfg: ml_collections.ConfigDict, mesh: Mesh) -> NamedSharding | None:
  """Gradient accumulation: every micro-batch spread over all devices."""
  return NamedSharding(mesh, P(None, "data")) if cfg.train.grad_accum_steps > 1 else None


# --- data ---------------------------------------------------------------------------------


def load_data(cfg: ml_collections.ConfigDict, dataset: Dataset | None) -> Dataset:
  """The dataset, checked against the config (batch, crop) before the workdir is touched."""
  ds = dataset if dataset is not None else load_dataset(cfg.data)
  schema.check_against_data(cfg, num_train=len(ds.train), image_shape=ds.element_shape if ds.kind == "image" else None)
  return ds


# --- workdir --------------------------------------------------------------------------------


def prepare_workdir(cfg: ml_collections.ConfigDict, workdir: str, record: dict[str, Any]) -> str | None:
  """Points the compilation cache, writes ``config.json`` and ``run.json`` (after every check: a
  refused run writes nothing; ``hold_workdir`` has found the folder writable); returns the cache
  directory."""
  cache_dir = enable_persistent_cache(cfg.train.compilation_cache, workdir, cfg.train.compilation_cache_min_s,
                                      cfg.train.compilation_cache_max_gb)
  if jax.process_index() == 0:
    resume.write_records(workdir, cfg, record, atomic_write)
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


def model_kwargs(cfg: ml_collections.ConfigDict, num_classes: int) -> dict[str, Any]:
  """The model factory's arguments: ``model.kwargs``, the class count and the compute dtype."""
  kwargs = dict(cfg.model.kwargs.to_dict())
  kwargs.setdefault("num_classes", cfg.model.num_classes or num_classes)
  kwargs.setdefault("dtype", jnp.dtype(cfg.model.dtype))
  return kwargs


def build_model(cfg: ml_collections.ConfigDict, ds: Dataset):
  """The registered model with ``model.kwargs``; the dataset's classes and the compute dtype."""
  kwargs = model_kwargs(cfg, ds.num_classes)
  try:
    return models.build(cfg.model.name, **kwargs)
  except TypeError as e:
    raise ValueError(f"model.kwargs {dict(cfg.model.kwargs)} do not fit model {cfg.model.name!r}: {e}") from None


def make_task(cfg: ml_collections.ConfigDict, ds: Dataset) -> tasks_lib.Classification:
  """The task the data poses, with the config's label smoothing and auxiliary-loss weight."""
  weight = cfg.model.aux_loss_weight
  if weight < 0:
    weight = models.info(cfg.model.name).aux_loss_weight
  return tasks_lib.task_for(ds, cfg.data, cfg.train.label_smoothing, weight)


def make_mix(cfg: ml_collections.ConfigDict, task: tasks_lib.Classification, num_classes: int):
  """``data.mixup_alpha`` / ``data.cutmix_alpha``: the train step's batch mixing (None when both are 0);
  only image classification mixes (a one-line error otherwise, before anything is written)."""
  d = cfg.data
  if not (d.mixup_alpha or d.cutmix_alpha):
    return None
  if task.name != "image_classification":
    field = "data.mixup_alpha" if d.mixup_alpha else "data.cutmix_alpha"
    raise schema.ConfigError(f"config key {field!r} mixes images and their labels: it needs an image "
                             f"classification task, this run is {task.name} ({cfg.data.name}); set it to 0")
  return functools.partial(mixing.mix_batch, image_key=task.input_keys[0], label_key=task.label_key,
                           num_classes=num_classes, mixup_alpha=d.mixup_alpha, cutmix_alpha=d.cutmix_alpha)


def check_input(model, name: str, example: tuple[np.ndarray, ...]) -> tuple[int, Any]:
  """Abstract train-mode init (no compute; ``xnn.models.init_variables``): a model that can't take the
  input fails here, clearly.

  Returns the number of parameters (all that training updates, auxiliary heads included) and the
  abstract variables.
  """
  try:
    variables = jax.eval_shape(lambda: models.init_variables(model, tuple(jnp.asarray(x) for x in example),
                                                             jax.random.key(0), models.info(name).rng_streams))
  except Exception as e:  # re-raised with the shapes named
    expected = models.info(name).input_shape
    raise ValueError(
        f"model {name!r} cannot take input of shape {tuple(example[0].shape[1:])} "
        f"(its default input is {expected}); change data.image_size / data.crop_size / "
        f"data.channels or the model. Underlying error: {type(e).__name__}: {str(e).splitlines()[0]}") from e
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(variables["params"]))), variables


# --- state ----------------------------------------------------------------------------------


def init_state(model, tx, example: tuple[np.ndarray, ...], seed: int, mesh: Mesh,
               rng_streams: tuple[str, ...] = ("dropout",), ema: bool = False):
  """Parameters and optimiser state (and the moving averages with ``ema``), replicated over the mesh."""
  init_fn = jax.jit(lambda rng: create_train_state(model, tx, rng, tuple(map(jnp.asarray, example)), rng_streams,
                                                   ema), out_shardings=NamedSharding(mesh, P()))
  return init_fn(jax.random.key(seed))


def initial_weights(cfg: ml_collections.ConfigDict, abstract_variables: Any, previous) -> dict | None:
  """``train.init_from``: the newest verified weights of another run, checked against this model
  (before anything is written). None for a fresh initialisation or a run that resumes."""
  source = cfg.train.init_from
  if not source or previous is not None:
    return None
  try:
    step, weights = ckpt.restore_weights(source)
  except ckpt.CheckpointError as e:
    raise ckpt.CheckpointError(f"train.init_from={source!r}: {e}") from None
  for name in ("params", "batch_stats"):
    want = abstract_variables.get(name)
    got = weights.get(name)
    if want is None and got is None:
      continue
    mismatch = _first_mismatch(want, got)
    if mismatch:
      raise ValueError(f"train.init_from={source!r}: its {name} (step {step}) do not fit model "
                       f"{cfg.model.name!r}: {mismatch}")
  if jax.process_index() == 0:
    print(f"Starting from the weights of {source} at step {step}", flush=True)
  return weights


def _first_mismatch(want: Any, got: Any) -> str | None:
  """The first path where two variable trees differ in presence, shape or dtype."""
  flat_want = {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_leaves_with_path(want or {})}
  flat_got = {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_leaves_with_path(got or {})}
  for key in sorted(set(flat_want) | set(flat_got)):
    if key not in flat_got:
      return f"{key} is missing"
    if key not in flat_want:
      return f"{key} is not in this model"
    a, b = flat_want[key], flat_got[key]
    if tuple(a.shape) != tuple(b.shape) or np.dtype(a.dtype) != np.dtype(b.dtype):
      return (f"{key} is {np.dtype(b.dtype).name}{tuple(b.shape)}, "
              f"this model has {np.dtype(a.dtype).name}{tuple(a.shape)}")
  return None


def with_weights(state, weights: dict, mesh: Mesh):
  """``state`` with its parameters (and BatchNorm statistics) replaced by ``weights``, replicated."""
  replicated = NamedSharding(mesh, P())
  put = lambda tree: jax.tree.map(lambda x: jax.device_put(np.asarray(x), replicated), tree)  # noqa: E731
  state = state.replace(params=jax.tree_util.tree_unflatten(jax.tree.structure(state.params),
                                                            jax.tree.leaves(put(weights["params"]))))
  if state.batch_stats is not None:
    state = state.replace(batch_stats=jax.tree_util.tree_unflatten(jax.tree.structure(state.batch_stats),
                                                                   jax.tree.leaves(put(weights["batch_stats"]))))
  if state.ema_params is not None:         # the moving average starts from the same weights (its own buffers:
    copy = lambda tree: jax.tree.map(jnp.copy, tree)  # noqa: E731 -- the train step donates the state)
    state = state.replace(ema_params=copy(state.params), ema_batch_stats=copy(state.batch_stats))
  return state


# --- eval -----------------------------------------------------------------------------------


def make_eval_steps(model, task, cfg: ml_collections.ConfigDict) -> dict[str, Any]:
  """Every epoch's evaluations, by the suffix of their metrics: the weights (``test_accuracy``) and, with
  ``train.ema_decay``, their moving average (``test_accuracy_ema``)."""
  steps = {"": make_eval_step(model, task)}
  if cfg.train.ema_decay:
    steps["_ema"] = make_eval_step(model, task, ema=True)
  return steps


# --- checkpoint -----------------------------------------------------------------------------


def restore(manager, state, inp, workdir: str) -> tuple[int, Any, dict[str, Any]]:
  """(step, state, bookkeeping) of the newest verified checkpoint, the input rewound to it;
  (0, state, {}) if there is none."""
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
  restored = ckpt.restore_latest(manager, abstract, inp.restore_args)
  if restored is None:
    return 0, state, {}
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


def agreed(signum: int | None) -> int | None:
  """The signal every process of the run stops for at this step boundary: any process's (a multi-process
  run stops together, at the same step, whichever of its processes a preemption signalled first)."""
  if jax.process_count() == 1:
    return signum
  from jax.experimental import multihost_utils
  flags = multihost_utils.process_allgather(np.int32(signum or 0))
  return int(np.max(flags)) or None


def _crossed(every: int, before: int, after: int) -> bool:
  return after // every > before // every


@dataclasses.dataclass
class Bookkeeping:
  """What the loop carries across a resume besides the train state (the checkpoint's ``meta``):
  the current epoch's per-step train metrics, the last evaluation, and the wall time of every
  earlier segment of the run (each ``xnn train`` invocation, up to its last checkpoint)."""
  epoch_values: dict[str, list[Any]]
  last_eval: dict[str, Any] | None
  segments: list[dict[str, Any]]
  start_step: int
  t_start: float

  @classmethod
  def from_meta(cls, meta: dict[str, Any], start_step: int, t_start: float) -> "Bookkeeping":
    values = meta.get("epoch_values", {})
    return cls(epoch_values={k: list(np.asarray(values.get(k, []), np.float32)) for k in ("loss", "accuracy")},
               last_eval=meta.get("last_eval"), segments=list(meta.get("segments", [])),
               start_step=start_step, t_start=t_start)

  def segment(self, step: int) -> dict[str, Any]:
    return {"from_step": self.start_step, "to_step": int(step), "wall_s": time.time() - self.t_start}

  def to_meta(self, step: int) -> dict[str, Any]:
    return {"epoch_values": {k: [float(x) for x in v] for k, v in self.epoch_values.items()},
            "last_eval": self.last_eval, "segments": self.all_segments(step)}

  def all_segments(self, step: int) -> list[dict[str, Any]]:
    return [*self.segments, self.segment(step)]


class Loop:
  """Train, log, evaluate, checkpoint; stops at ``plan.total_steps`` or at a preemption signal."""

  def __init__(self, cfg, plan: Plan, inp, evaluator: Evaluator, eval_steps: dict[str, Any], manager,
               writer: MetricsWriter, compile_timer: CompileTimer, cache_dir: str | None, workdir: str,
               books: Bookkeeping):
    self.cfg, self.plan, self.inp, self.evaluator, self.eval_steps = cfg, plan, inp, evaluator, eval_steps
    self.manager, self.writer, self.compile_timer = manager, writer, compile_timer
    self.cache_dir, self.workdir = cache_dir, workdir
    self.chrono = Chrono()
    self.pending: list[Any] = []                                   # step metrics not read back yet
    self.books = books
    self.last = {"loss": float("nan"), "accuracy": float("nan")}
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
          signum = agreed(preempt.signum)
          if signum is not None:
            self.flush(step)
            if self.manager.latest_step() != step:
              self.save(state, step)
            self.writer.close()
            raise TrainingInterrupted(signum, step)
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
    self.books.epoch_values["loss"].extend(values["loss"])
    self.books.epoch_values["accuracy"].extend(values["accuracy"])
    self.last = mean
    self.writer.write("train", step, epoch=step / self.plan.steps_per_epoch, **mean,
                      examples_per_sec=rate * self.cfg.train.batch_size)
    self.progress.update(0, loss=f"{mean['loss']:.4f}", acc=f"{mean['accuracy']:.3f}")

  def end_epoch(self, step: int) -> None:
    values = self.books.epoch_values
    if values["loss"]:
      self.writer.write("epoch", step, epoch=step / self.plan.steps_per_epoch,
                        train_loss=float(np.mean(values["loss"])), train_accuracy=float(np.mean(values["accuracy"])))
    self.books.epoch_values = {"loss": [], "accuracy": []}

  def evaluate(self, state, step: int) -> None:
    with self.chrono.paused():
      numbers = {}
      for suffix, eval_step in self.eval_steps.items():
        sums = self.evaluator.sums(eval_step, state)
        n = max(float(sums["count"]), 1.0)
        numbers[f"test_loss{suffix}"] = float(sums["loss_sum"]) / n
        numbers[f"test_accuracy{suffix}"] = float(sums["correct"]) / n
      self.books.last_eval = self.writer.write("eval", step, epoch=step / self.plan.steps_per_epoch, **numbers,
                                               test_examples=int(n))
      self.writer.plot(self.title, force=step == self.plan.total_steps)
    loss, acc = numbers["test_loss"], numbers["test_accuracy"]
    warn = "" if math.isfinite(loss) else " (the test loss is not finite: some test examples get a non-finite loss)"
    ema = f" | moving average: test acc {_fmt(numbers['test_accuracy_ema'])}" if "test_accuracy_ema" in numbers else ""
    self.progress.say(f"step {step}/{self.plan.total_steps} epoch {step / self.plan.steps_per_epoch:.1f}: "
                      f"train loss {_fmt(self.last['loss'])} acc {_fmt(self.last['accuracy'])} | "
                      f"test loss {_fmt(loss)} acc {_fmt(acc)}{warn}{ema}")

  @property
  def title(self) -> str:
    return f"{self.cfg.model.name} on {self.cfg.data.name}"

  def save(self, state, step: int) -> None:
    with self.chrono.paused():
      ckpt.save(self.manager, step, state, self.inp.save_args(step), meta=self.books.to_meta(step))

  def finish(self, state, step: int):
    """A run resumed at its end still ends with an evaluation and a checkpoint of the last step."""
    self.flush(step)
    if self.books.last_eval is None or self.books.last_eval["step"] != step:
      self.evaluate(state, step)
    if self.manager.latest_step() != step:
      self.save(state, step)
    return state, step, self.books.last_eval


def _fmt(v: Any) -> str:
  """A metric for a log line: 4 decimals, or what it is when not a finite number."""
  try:
    return f"{float(v):.4f}"
  except (TypeError, ValueError):
    return str(v)


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
           compile_timer: CompileTimer, num_params: int, example, model, final: dict,
           books: Bookkeeping) -> Result:
  """The ``final`` record, ``final.json`` and the returned :class:`Result`; the wall time is the sum of
  the run's segments (listed in ``final.json``)."""
  epochs = [r for r in writer.records if r["type"] == "epoch"] if writer.enabled else []
  segments = books.all_segments(step)
  result = Result(step=step, epoch=step / plan.steps_per_epoch, test_accuracy=float(last_eval["test_accuracy"]),
                  test_loss=float(last_eval["test_loss"]),
                  train_accuracy=float(epochs[-1]["train_accuracy"]) if epochs else float("nan"),
                  wall_time_s=sum(s["wall_s"] for s in segments), params=num_params, state=state,
                  test_accuracy_ema=last_eval.get("test_accuracy_ema"), test_loss_ema=last_eval.get("test_loss_ema"),
                  **final)
  writer.write("final", step, **{k: v for k, v in dataclasses.asdict(result).items() if k not in ("state", "step")},
               **{f"total_{k}": v for k, v in compile_timer.totals().items()})
  writer.close()
  if jax.process_index() == 0:
    summary = {k: _json_number(v) for k, v in dataclasses.asdict(result).items() if k != "state"}
    summary["input_shape"] = list(example[0].shape[1:])
    summary["macs"] = _macs(cfg, tuple(example[0].shape[1:]), model.num_classes)
    summary["segments"] = segments
    atomic_write(os.path.join(workdir, "final.json"), json.dumps(summary, indent=2))
  return result


def _json_number(v: Any) -> Any:
  """``v`` for ``final.json``: a non-finite float as its name (strict JSON has no NaN)."""
  return str(v) if isinstance(v, float) and not math.isfinite(v) else v


def _macs(cfg: ml_collections.ConfigDict, input_shape: tuple[int, ...], num_classes: int) -> int | None:
  """Forward MACs per example from ``xnn.cost`` (None where it cannot say)."""
  try:
    from xnn.cost import analyze_model
    kwargs = {**cfg.model.kwargs.to_dict(), "num_classes": num_classes}
    return int(analyze_model(cfg.model.name, input_shape=input_shape, batch=1, **kwargs).macs)
  except Exception:  # noqa: BLE001 -- cost analysis is informative only
    return None
