"""Where the training batches come from, behind one interface: "run the next chunk of steps".

* ``StreamingInput``: grain reads this host's share of every global batch
  (``xnn.data.pipeline.train_loader``); each call runs one jitted train step. The
  iterator's position is saved in every checkpoint.
* ``ResidentInput``: the training set lives on the devices (``xnn.train.resident``);
  each call runs up to ``steps_per_dispatch`` steps in one ``lax.scan``. The input
  position is a function of the step.

Both are built from the data alone (so that ``steps_per_epoch`` is known before the
schedule is), then given the train step with ``bind(step_fn, rng, plan)``. Then
``advance(state, step) -> (state, metrics, n)`` runs the next chunk; they also give
their checkpoint items (``save_args``/``restore_args``), ``log_every`` (metrics are
read back and logged when a chunk crosses a multiple of it) and the ``describe()``
record written to ``metrics.jsonl``. ``make_input`` chooses between them
(``train.device_resident``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from xnn.data import pipeline
from xnn.data.datasets import Dataset
from xnn.train import checkpoint as ckpt
from xnn.train import resident as resident_lib


@dataclasses.dataclass(frozen=True)
class Plan:
  """The run's length and periods, in steps."""
  steps_per_epoch: int
  total_steps: int
  eval_every: int
  checkpoint_every: int


class StreamingInput:
  mode = "streaming"

  def __init__(self, ds: Dataset, cfg: Any, mesh: Mesh):
    batch = cfg.train.batch_size
    self.steps_per_epoch = len(ds.train) // batch
    self.log_every = cfg.train.log_every_steps
    self._mesh = mesh
    self._sharding = NamedSharding(mesh, P("data"))
    self.data_iter = iter(pipeline.train_loader(ds, cfg.data, batch, cfg.seed))

  def bind(self, step_fn: Callable, rng: jax.Array, plan: Plan) -> None:
    del plan
    replicated = NamedSharding(self._mesh, P())
    self._rng = rng
    self._step = jax.jit(step_fn, in_shardings=(replicated, self._sharding, replicated),
                         out_shardings=(replicated, replicated), donate_argnums=0)

  def advance(self, state: Any, step: int):
    del step
    local = next(self.data_iter)
    batch = {k: jax.make_array_from_process_local_data(self._sharding, v) for k, v in local.items()}
    state, metrics = self._step(state, batch, self._rng)
    return state, metrics, 1

  def save_args(self, step: int) -> Any:
    return ckpt.iterator_save_args(self.data_iter)

  def restore_args(self) -> Any:
    return ckpt.iterator_restore_args(self.data_iter)

  def describe(self) -> dict[str, Any]:
    return {"mode": self.mode, "steps_per_epoch": self.steps_per_epoch}


def auto_chunk(steps_per_epoch: int, eval_every: int, ckpt_every: int, cap: int = 100) -> int:
  """Steps per dispatch: the largest divisor of the epoch/eval/checkpoint periods up to ``cap``."""
  g = math.gcd(math.gcd(steps_per_epoch, eval_every), ckpt_every)
  return max(d for d in range(1, min(g, cap) + 1) if g % d == 0)


class ResidentInput:
  mode = "device_resident"

  def __init__(self, ds: Dataset, cfg: Any, mesh: Mesh, preprocess: pipeline.Preprocess):
    self._data = resident_lib.load(ds, preprocess, mesh, cfg.train.batch_size)
    self.steps_per_epoch = self._data.steps_per_epoch
    self._steps_per_dispatch = cfg.train.steps_per_dispatch
    self._batch_fn = resident_lib.make_batch_fn(mesh, preprocess, self._data, ds.input_keys[0], ds.label_key)
    self._data_key = jax.random.key(cfg.seed)
    replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    self._shardings = dict(in_shardings=(replicated, sharded, sharded, replicated, replicated),
                           out_shardings=(replicated, replicated), donate_argnums=0)
    self._chunks: dict[int, Callable] = {}   # one program per chunk length (at most two: full and last)

  def bind(self, step_fn: Callable, rng: jax.Array, plan: Plan) -> None:
    self.chunk_len = self._steps_per_dispatch or auto_chunk(plan.steps_per_epoch, plan.eval_every,
                                                            plan.checkpoint_every)
    self.log_every = self.chunk_len
    self._step_fn, self._rng, self._total = step_fn, rng, plan.total_steps

  def advance(self, state: Any, step: int):
    n = min(self.chunk_len - step % self.chunk_len, self._total - step)
    if n not in self._chunks:
      chunk = resident_lib.make_chunk_fn(self._step_fn, self._batch_fn, n)
      self._chunks[n] = jax.jit(chunk, **self._shardings)
    state, metrics = self._chunks[n](state, self._data.images, self._data.labels, self._rng, self._data_key)
    return state, metrics, n

  def save_args(self, step: int) -> Any:
    return ckpt.position_save_args(step)

  def restore_args(self) -> Any:
    return ckpt.position_restore_args()

  def describe(self) -> dict[str, Any]:
    return {"mode": self.mode, "steps_per_epoch": self.steps_per_epoch, "steps_per_dispatch": self.chunk_len}


def resident_mode(cfg: Any, ds: Dataset, pre: pipeline.Preprocess) -> bool:
  """Whether the training set goes on the devices (``train.device_resident``: auto, on, off)."""
  mode = cfg.train.device_resident
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


def make_input(ds: Dataset, cfg: Any, mesh: Mesh) -> StreamingInput | ResidentInput:
  """The training input ``train.device_resident`` asks for (not yet bound to a train step)."""
  pre = pipeline.make_preprocess(ds, cfg.data, train=True)
  if cfg.train.batch_size > len(ds.train):
    raise ValueError(f"train.batch_size={cfg.train.batch_size} is larger than the {len(ds.train)} training examples")
  if resident_mode(cfg, ds, pre):
    return ResidentInput(ds, cfg, mesh, pre)
  return StreamingInput(ds, cfg, mesh)
