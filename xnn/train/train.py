"""``train_and_evaluate(config, workdir)``: the whole training job, in stages.

config -> workdir -> mesh -> input -> model -> state -> shard -> steps ->
checkpoint (restore) -> loop (train, log, eval, checkpoint, preemption) -> final.
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
from xnn.data import pipeline
from xnn.data.datasets import Dataset, load_dataset
from xnn.train import checkpoint as ckpt
from xnn.train import resident as resident_lib
from xnn.train import config as config_lib
from xnn.train.metrics import MetricsWriter, atomic_write
from xnn.train.schedules import create_learning_rate_fn, create_optimizer
from xnn.train.compilation import CompileTimer, enable_persistent_cache
from xnn.train.step import create_train_state, make_eval_step, make_greedy_eval_step, make_train_step


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


def _check_workdir(workdir: str) -> None:
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".xnn_write_test.{os.getpid()}")   # one per process (multi-host)
    with open(probe, "w") as f:
      f.write("ok")
    os.unlink(probe)
  except OSError as e:
    raise ValueError(f"workdir {workdir!r} is not writable: {e.strerror or e}") from None


def _mesh() -> Mesh:
  return Mesh(np.array(jax.devices()), ("data",))


def _bn_groups(cfg: ml_collections.ConfigDict, num_devices: int) -> int:
  mode, batch = cfg.train.bn_stats, cfg.train.batch_size
  if mode == "global":
    return 1
  if mode == "per_device":
    return num_devices
  if mode == "groups":
    g = cfg.train.bn_group_size
    if g <= 0 or batch % g:
      raise ValueError(f"train.bn_group_size must divide train.batch_size={batch}, got {g}")
    return batch // g
  raise ValueError(f"train.bn_stats must be 'global', 'per_device' or 'groups', got {mode!r}")


def _build_model(cfg: ml_collections.ConfigDict, ds: Dataset):
  kwargs = config_lib.parse_kwargs(cfg.model.kwargs)
  kwargs.setdefault("num_classes", cfg.model.num_classes or ds.num_classes)
  if cfg.model.dtype not in ("float32", "bfloat16", "float16"):
    raise ValueError(f"model.dtype must be float32, bfloat16 or float16, got {cfg.model.dtype!r}")
  kwargs.setdefault("dtype", jnp.dtype(cfg.model.dtype))
  return models.build(cfg.model.name, **kwargs)


def _check_input(model, name: str, example: tuple[np.ndarray, ...]) -> Any:
  """Abstract init (no compute): a model that can't take the input fails here, clearly."""
  try:
    return jax.eval_shape(lambda: model.init({"params": jax.random.key(0), "dropout": jax.random.key(0)},
                                             *(jnp.asarray(x) for x in example), train=False))
  except Exception as e:  # noqa: BLE001 -- re-raised with the shapes named
    expected = models.info(name).input_shape if name in models.MODELS else "?"
    raise ValueError(
        f"model {name!r} cannot take input of shape {tuple(example[0].shape[1:])} "
        f"(its default input is {expected}); change data.image_size / data.crop_size / "
        f"data.channels or the model. Underlying error: {type(e).__name__}: {str(e).splitlines()[0]}") from e


def _resident_mode(cfg: ml_collections.ConfigDict, ds: Dataset, pre: pipeline.Preprocess) -> bool:
  """Whether the training set goes on the devices (``train.device_resident``)."""
  mode = cfg.train.device_resident
  if mode not in ("auto", "on", "off"):
    raise ValueError(f"train.device_resident must be 'auto', 'on' or 'off', got {mode!r}")
  if mode == "off":
    return False
  why = resident_lib.supported(ds, pre)
  if why is None:
    limit = cfg.train.device_resident_max_mb * 2**20
    size = resident_lib.host_bytes(ds, pre) / jax.device_count()
    why = None if size <= limit else f"{size / 2**20:.0f} MB per device > train.device_resident_max_mb"
  if why is not None and mode == "on":
    raise ValueError(f"train.device_resident='on' but the data cannot be device-resident: {why}")
  return why is None


def _auto_chunk(steps_per_epoch: int, eval_every: int, ckpt_every: int, cap: int = 100) -> int:
  """Steps per dispatch: the largest divisor of the epoch/eval/checkpoint periods up to ``cap``."""
  g = math.gcd(math.gcd(steps_per_epoch, eval_every), ckpt_every)
  return max(d for d in range(1, min(g, cap) + 1) if g % d == 0)


def _say(msg: str) -> None:
  """Prints on the main process only (every host runs the same program)."""
  if jax.process_index() == 0:
    print(msg, flush=True)


def _macs(cfg: ml_collections.ConfigDict, input_shape: tuple[int, ...], num_classes: int) -> int | None:
  """Forward MACs per example from ``xnn.cost`` (None where it cannot say)."""
  try:
    from xnn.cost import analyze_model
    kwargs = {**config_lib.parse_kwargs(cfg.model.kwargs), "num_classes": num_classes}
    return int(analyze_model(cfg.model.name, input_shape=input_shape, batch=1, **kwargs).macs)
  except Exception:  # noqa: BLE001 -- cost analysis is informative only
    return None


def _count(tree: Any) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def train_and_evaluate(config: Any, workdir: str, dataset: Dataset | None = None) -> Result:
  """Trains ``config.model`` on ``config.data`` (or ``dataset``), evaluating every epoch.

  Resumes from the newest checkpoint in ``workdir``. Returns the final metrics.
  """
  with CompileTimer() as timer:
    return _train_and_evaluate(config, workdir, dataset, timer)


def _train_and_evaluate(config: Any, workdir: str, dataset: Dataset | None, timer: CompileTimer) -> Result:
  t_start = time.time()
  # --- config ---------------------------------------------------------------
  cfg = config_lib.resolve(config)
  if cfg.model.name not in models.MODELS:
    models.MODELS.get(cfg.model.name)            # raises, listing the models
  if dataset is None:
    from xnn.data.datasets import DATASETS
    DATASETS.get(cfg.data.name)                  # raises, listing the datasets
  num_devices = jax.device_count()
  batch = cfg.train.batch_size
  if batch <= 0 or batch % num_devices:
    raise ValueError(f"train.batch_size={batch} must be a positive multiple of the "
                     f"{num_devices} devices ({jax.process_count()} host(s))")
  bn_groups = _bn_groups(cfg, num_devices)
  for key in ("learning_rate",):
    if not cfg.optimizer[key] > 0:
      raise ValueError(f"optimizer.{key} must be > 0, got {cfg.optimizer[key]}")

  # --- workdir, compilation cache ---------------------------------------------
  _check_workdir(workdir)
  cache_dir = enable_persistent_cache(cfg.train.compilation_cache, workdir, cfg.train.compilation_cache_min_s,
                                      cfg.train.compilation_cache_max_gb)
  if jax.process_index() == 0:
    atomic_write(os.path.join(workdir, "config.json"), cfg.to_json_best_effort(indent=2))

  # --- mesh -----------------------------------------------------------------
  mesh = _mesh()
  replicated = NamedSharding(mesh, P())
  batch_sharding = NamedSharding(mesh, P("data"))

  # --- input ----------------------------------------------------------------
  ds = dataset if dataset is not None else load_dataset(cfg.data)
  train_pre = pipeline.make_preprocess(ds, cfg.data, train=True)
  if batch > len(ds.train):
    raise ValueError(f"train.batch_size={batch} is larger than the {len(ds.train)} training examples")
  resident = _resident_mode(cfg, ds, train_pre)
  if resident:
    rdata = resident_lib.load(ds, train_pre, mesh, batch)
    steps_per_epoch = rdata.steps_per_epoch
  else:
    steps_per_epoch = len(ds.train) // batch
  if steps_per_epoch == 0:
    raise ValueError(f"train.batch_size={batch} is larger than the {len(ds.train)} training examples")
  total_steps = cfg.train.num_steps or cfg.train.num_epochs * steps_per_epoch
  eval_local = max(num_devices, -(-cfg.train.eval_batch_size // num_devices) * num_devices) // jax.process_count()
  eval_data = list(pipeline.eval_batches(ds, cfg.data, eval_local))

  # --- model ----------------------------------------------------------------
  model = _build_model(cfg, ds)
  example = tuple(eval_data[0][k][:1] for k in ds.input_keys)
  abstract_vars = _check_input(model, cfg.model.name, example)
  num_params = _count(abstract_vars["params"])
  lr_fn = create_learning_rate_fn(cfg.schedule, cfg.optimizer.learning_rate, steps_per_epoch, total_steps)
  tx = create_optimizer(cfg.optimizer, lr_fn)

  # --- state, sharded (replicated parameters) -------------------------------
  init_fn = jax.jit(lambda rng: create_train_state(model, tx, rng, tuple(map(jnp.asarray, example))),
                    out_shardings=replicated)
  state = init_fn(jax.random.key(cfg.seed))
  rng = jax.random.fold_in(jax.random.key(cfg.seed), 1)

  # --- steps ----------------------------------------------------------------
  group_sharding = NamedSharding(mesh, P("data")) if cfg.train.bn_stats == "per_device" else None
  train_step = jax.jit(
      make_train_step(model, input_keys=ds.input_keys, label_key=ds.label_key, mask_key=ds.mask_key,
                      lr_fn=lr_fn, bn_groups=bn_groups, label_smoothing=cfg.train.label_smoothing,
                      group_sharding=group_sharding),
      in_shardings=(replicated, batch_sharding, replicated), out_shardings=(replicated, replicated),
      donate_argnums=0)
  eval_step = jax.jit(make_eval_step(model, input_keys=ds.input_keys, label_key=ds.label_key,
                                     mask_key=ds.mask_key),
                      in_shardings=(replicated, batch_sharding), out_shardings=replicated)

  def to_global(local: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    return {k: jax.make_array_from_process_local_data(batch_sharding, v) for k, v in local.items()}

  eval_every = max(1, round(cfg.train.eval_every_epochs * steps_per_epoch))
  ckpt_every = cfg.train.checkpoint_every_steps or eval_every
  if resident:
    chunk_len = cfg.train.steps_per_dispatch or _auto_chunk(steps_per_epoch, eval_every, ckpt_every)
    chunk_fns: dict[int, Any] = {}

    def run_chunk(state, n):
      if n not in chunk_fns:     # one compilation per chunk length (at most two: full and last)
        chunk = resident_lib.make_chunk_fn(
            make_train_step(model, input_keys=ds.input_keys, label_key=ds.label_key, mask_key=ds.mask_key,
                            lr_fn=lr_fn, bn_groups=bn_groups, label_smoothing=cfg.train.label_smoothing,
                            group_sharding=group_sharding),
            resident_lib.make_batch_fn(mesh, train_pre, rdata, cfg.seed, ds.input_keys[0], ds.label_key), n)
        chunk_fns[n] = jax.jit(chunk, in_shardings=(replicated, batch_sharding, batch_sharding, replicated),
                               out_shardings=(replicated, replicated), donate_argnums=0)
      return chunk_fns[n](state, rdata.images, rdata.labels, rng)

  # --- checkpoint -----------------------------------------------------------
  manager = ckpt.create_manager(workdir, cfg.train.keep_checkpoints)
  data_iter = None if resident else iter(pipeline.train_loader(ds, cfg.data, batch, cfg.seed))
  abstract_state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
  restored = ckpt.restore_latest(manager, abstract_state, data_iter)
  start_step = 0
  if restored is not None:
    start_step, state = restored
    _say(f"Resuming from the checkpoint at step {start_step} in {workdir}")
  writer = MetricsWriter(workdir, resume_step=start_step)

  writer.write("input", start_step, mode="device_resident" if resident else "streaming",
               steps_per_epoch=steps_per_epoch, **({"steps_per_dispatch": chunk_len} if resident else {}))

  # --- evaluation -----------------------------------------------------------
  def evaluate(state, step):
    sums = None
    for b in eval_data:
      out = eval_step(state, to_global(b))
      sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
    sums = jax.device_get(sums)
    n = max(float(sums["count"]), 1.0)
    return writer.write("eval", step, epoch=step / steps_per_epoch, test_loss=sums["loss_sum"] / n,
                        test_accuracy=sums["correct"] / n, test_examples=int(n))

  def evaluate_greedy(state, step):
    """Sequence-to-sequence: token and whole-sequence accuracy of greedy decoding."""
    greedy_step = jax.jit(make_greedy_eval_step(model, max_len=eval_data[0][ds.label_key].shape[1],
                                                label_key=ds.label_key, mask_key=ds.mask_key),
                          in_shardings=(replicated, batch_sharding), out_shardings=replicated)
    sums = None
    for b in eval_data:
      out = greedy_step(state, to_global(b))
      sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
    sums = jax.device_get(sums)
    acc = {"greedy_token_accuracy": float(sums["token_correct"]) / max(float(sums["token_count"]), 1.0),
           "greedy_sequence_accuracy": float(sums["sequence_correct"]) / max(float(sums["sequence_count"]), 1.0)}
    writer.write("eval_greedy", step, **acc)
    return acc

  # --- loop -----------------------------------------------------------------
  from tqdm.auto import tqdm
  bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
             disable=not cfg.train.progress_bar or jax.process_index() != 0)
  pending: list[dict[str, jax.Array]] = []
  epoch_acc: dict[str, list[float]] = {"loss": [], "accuracy": []}
  last = {"loss": float("nan"), "accuracy": float("nan")}
  t_log, n_log, compile_s = time.time(), 0, None
  step = start_step
  last_eval = None

  def flush(step: int) -> None:
    """Reads back pending step metrics (one device sync), logs their mean, checks for NaN."""
    nonlocal t_log, n_log, pending, last
    if not pending:
      return
    host = jax.device_get(pending)
    pending = []
    dt = time.time() - t_log
    values = {k: np.concatenate([np.atleast_1d(h[k]) for h in host]) for k in host[0]}
    mean = {k: float(np.mean(v)) for k, v in values.items()}
    if not all(math.isfinite(mean[k]) for k in ("loss", "grad_norm")):
      good = manager.latest_step()
      raise FloatingPointError(
          f"loss became {mean['loss']} (gradient norm {mean['grad_norm']}) by step {step}; "
          f"stopping. The last good checkpoint is step {good} in {workdir}/checkpoints "
          "(lower the learning rate or check the data).")
    epoch_acc["loss"].extend(values["loss"])
    epoch_acc["accuracy"].extend(values["accuracy"])
    last = mean
    writer.write("train", step, epoch=step / steps_per_epoch, **mean,
                 examples_per_sec=n_log * batch / max(dt, 1e-9))
    bar.set_postfix(loss=f"{mean['loss']:.4f}", acc=f"{mean['accuracy']:.3f}")
    t_log, n_log = time.time(), 0

  def advance(state, step):
    """Runs the next step (streaming) or chunk of steps (device-resident): (state, metrics, n)."""
    if resident:
      n = min(chunk_len - step % chunk_len, total_steps - step)
      state, metrics = run_chunk(state, n)
      return state, metrics, n
    state, metrics = train_step(state, to_global(next(data_iter)), rng)
    return state, metrics, 1

  def crossed(every: int, before: int, after: int) -> bool:
    return after // every > before // every

  with _Preemption() as preempt:
    while step < total_steps:
      t0 = time.time()
      state, metrics, n = advance(state, step)
      if compile_s is None:
        jax.block_until_ready(metrics)
        compile_s = time.time() - t0
        writer.write("compile", step + n, train_step_compile_and_first_step_s=compile_s,
                     compilation_cache=cache_dir, **timer.totals())
        t_log = time.time()
      else:
        n_log += n
      pending.append(metrics)
      before, step = step, step + n
      bar.update(n)
      if resident or crossed(cfg.train.log_every_steps, before, step):
        flush(step)
      if crossed(steps_per_epoch, before, step):
        flush(step)
        if epoch_acc["loss"]:
          writer.write("epoch", step, epoch=step / steps_per_epoch,
                       train_loss=float(np.mean(epoch_acc["loss"])),
                       train_accuracy=float(np.mean(epoch_acc["accuracy"])))
        epoch_acc = {"loss": [], "accuracy": []}
      if crossed(eval_every, before, step) or step == total_steps:
        flush(step)
        last_eval = evaluate(state, step)
        writer.plot()
        t_log = time.time()      # evaluation is not training time
        if jax.process_index() == 0:
          bar.write(f"step {step}/{total_steps} epoch {step / steps_per_epoch:.1f}: "
                    f"train loss {last['loss']:.4f} acc {last['accuracy']:.4f} | "
                    f"test loss {last_eval['test_loss']:.4f} acc {last_eval['test_accuracy']:.4f}")
      if crossed(ckpt_every, before, step) or step == total_steps:
        flush(step)
        ckpt.save(manager, step, state, data_iter)
        t_log = time.time()      # nor is checkpointing
      if preempt.signum is not None:
        flush(step)
        if manager.latest_step() != step:
          ckpt.save(manager, step, state, data_iter)
        bar.close()
        writer.close()
        raise TrainingInterrupted(preempt.signum, step)
  bar.close()
  flush(step)
  if last_eval is None or last_eval["step"] != step:
    last_eval = evaluate(state, step)
    writer.plot()
  if manager.latest_step() != step:
    ckpt.save(manager, step, state, data_iter)
  greedy = evaluate_greedy(state, step) if "decoder_inputs" in ds.input_keys and hasattr(model, "decode") else {}
  train_acc = [r for r in writer.records if r["type"] == "epoch"] if writer.enabled else []
  result = Result(step=step, epoch=step / steps_per_epoch, test_accuracy=float(last_eval["test_accuracy"]),
                  test_loss=float(last_eval["test_loss"]),
                  train_accuracy=float(train_acc[-1]["train_accuracy"]) if train_acc else float("nan"),
                  wall_time_s=time.time() - t_start, params=num_params, state=state, **greedy)
  writer.write("final", step, **{k: v for k, v in dataclasses.asdict(result).items() if k not in ("state", "step")},
               **{f"total_{k}": v for k, v in timer.totals().items()})
  writer.close()
  if jax.process_index() == 0:
    summary = {k: v for k, v in dataclasses.asdict(result).items() if k != "state"}
    summary["input_shape"] = list(example[0].shape[1:])
    summary["macs"] = _macs(cfg, tuple(example[0].shape[1:]), model.num_classes)
    atomic_write(os.path.join(workdir, "final.json"), json.dumps(summary, indent=2))
  return result
