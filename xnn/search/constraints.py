"""What a candidate costs before it trains, and whether that is inside the search's budget.

``candidate_cost`` analyses the candidate's model with ``xnn.cost`` on abstract
shapes (nothing is allocated, compiled or read): at the run's input shape (the
dataset's ``DataFacts`` through the config's preprocessing, as ``xnn sweep
--dry-run`` does) it counts the forward MACs per example, the parameters and the
receptive field of the last feature map (``analyze_model`` at batch 1); the peak
live memory of a training step at the global batch on one device
(``analyze_model(..., train=True)``: forward, backward and the saved residuals);
and, when a latency limit is set, the roofline time of the forward pass at
``latency_batch`` on a device preset (Williams et al. 2009; ``xnn.cost.roofline``).

``violations`` compares that with ``Constraints``: one line per limit exceeded, and
``amounts``, one number per limit (> 0: by how much, relatively, it is exceeded),
which the search gives its trials as Optuna constraint values (``Trial.set_constraint``:
TPE then ranks an infeasible candidate below every feasible one, the farther out the
worse; NSGA-II's constrained domination puts it behind every feasible one).

``Analyst`` does this, and the parsing of a candidate's config, in one process of its
own, started with ``spawn``: JAX (whose threads make forking unsafe) never starts in
the search itself, which forks its candidates' ``xnn train`` processes.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Sequence

from xnn.cost.render import binary, magnitude
from xnn.search.space import Constraints

MIB = 2 ** 20


@dataclasses.dataclass
class CandidateCost:
  macs: int                    # forward MACs per example
  params: int
  peak_train_bytes: int        # one training step at the global batch, one device
  receptive_field: float       # of the last feature map, the smallest over the spatial axes (pixels)
  input_side: int              # the smallest spatial side of the input
  latency_s: float | None = None

  @property
  def rf_ratio(self) -> float:
    return self.receptive_field / max(self.input_side, 1)

  def value(self, limit: str) -> float:
    """The quantity a limit of ``Constraints`` bounds."""
    return {"max_macs": self.macs, "max_params": self.params, "max_peak_memory_mib": self.peak_train_bytes / MIB,
            "min_receptive_field": self.rf_ratio,
            "max_latency_ms": None if self.latency_s is None else self.latency_s * 1e3}[limit]

  def to_dict(self) -> dict[str, Any]:
    return {**dataclasses.asdict(self), "rf_ratio": self.rf_ratio}

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "CandidateCost":
    return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


def _rf_size(rf: dict | None, sides: tuple[int, ...]) -> float:
  """The receptive field's smallest size over the spatial axes; none traced (no spatial input): the input."""
  if not rf:
    return float(min(sides)) if sides else 0.0
  size = rf["size"]
  return float(min(size) if isinstance(size, list) else size)


def candidate_cost(cfg, constraints: Constraints) -> CandidateCost:
  """The cost of the run ``cfg`` (a resolved config) would train; ValueError where it cannot be told.

  Needs the dataset's ``DataFacts`` (the built-in datasets have them).
  """
  from xnn.cost import analyze_model, get_device
  from xnn.cost.render import apply_roofline
  from xnn.data.datasets import DATASETS
  from xnn.sweeps.budget import input_shape
  from xnn.train.train import model_kwargs
  facts = DATASETS.get(cfg.data.name).facts
  if facts is None:
    raise ValueError(f"dataset {cfg.data.name!r} is known only once loaded: xnn search needs its shape before "
                     "training (a built-in dataset)")
  shape = input_shape(cfg, facts)
  kwargs = model_kwargs(cfg, facts.num_classes)
  kwargs.pop("dtype")
  dtype = cfg.model.dtype
  try:
    rep = analyze_model(cfg.model.name, input_shape=shape, batch=1, **kwargs)
    train = analyze_model(cfg.model.name, input_shape=shape, batch=cfg.train.batch_size, train=True, **kwargs)
    latency = None
    if constraints.max_latency_ms is not None:
      device = get_device(constraints.device)
      lat = rep if constraints.latency_batch == 1 else analyze_model(
          cfg.model.name, input_shape=shape, batch=constraints.latency_batch, **kwargs)
      latency = apply_roofline(lat, lat.layers, device, dtype)
  except (TypeError, ValueError) as e:
    text = " ".join(str(e).split())
    raise ValueError(f"model {cfg.model.name!r} with model.kwargs {dict(cfg.model.kwargs)} does not build at input "
                     f"{'x'.join(map(str, shape))}: {text}") from None
  sides = tuple(shape[:2]) if len(shape) == 3 else ()
  return CandidateCost(macs=int(rep.macs), params=int(rep.params), peak_train_bytes=int(train.peak_bytes),
                       receptive_field=_rf_size(rep.receptive_field, sides), input_side=min(sides) if sides else 0,
                       latency_s=latency)


def _show(limit: str, v: float) -> str:
  if limit == "max_peak_memory_mib":
    return binary(v * MIB)
  if limit == "min_receptive_field":
    return f"{v:.2f} x the input"
  if limit == "max_latency_ms":
    return f"{v:.3g} ms"
  return magnitude(v)


NAMES = {"max_macs": "MACs", "max_params": "parameters", "max_peak_memory_mib": "peak training memory",
         "min_receptive_field": "receptive field", "max_latency_ms": "latency"}


def violations(cost: CandidateCost, constraints: Constraints) -> list[str]:
  """One line per limit the candidate exceeds, e.g. ``MACs 3.21 M > 2.00 M``."""
  out = []
  for limit, bound in constraints.limits.items():
    v = cost.value(limit)
    if v is None or (v >= bound if limit.startswith("min_") else v <= bound):
      continue
    shown = _show(limit, v), _show(limit, bound)
    if shown[0] == shown[1]:               # close to the limit: the digits that tell them apart
      exact = "{:,.0f}" if limit in ("max_macs", "max_params") else "{:.5g}"
      shown = exact.format(v), exact.format(bound)
    out.append(f"{NAMES[limit]} {shown[0]} {'<' if limit.startswith('min_') else '>'} {shown[1]}")
  return out


def amounts(cost: CandidateCost | None, constraints: Constraints) -> list[float]:
  """Optuna's constraint values, one per set limit: value / limit - 1 for a maximum, 1 - value / limit for a
  minimum (<= 0: satisfied). A candidate whose cost cannot be told (it does not build) violates each by 1."""
  out = []
  for limit, bound in constraints.limits.items():
    v = None if cost is None else cost.value(limit)
    if cost is None:
      out.append(1.0)
    elif v is None:
      out.append(0.0)
    else:
      out.append(float(v / bound - 1 if limit.startswith("max_") else 1 - v / bound))
  return out


# --- in a process of its own -----------------------------------------------------------------------


def resolve(config: str, overrides: dict[str, Any], extra: Sequence[str] = ()):
  """The config ``xnn train`` runs for ``config`` with these overrides and ``extra`` (same parser and checks)."""
  from xnn.sweeps.budget import run_config
  from xnn.sweeps.launchers import RunSpec
  return run_config(config, RunSpec("candidate", overrides, ""), extra)


def _resolve_plain(config: str, overrides: dict[str, Any], extra: Sequence[str]) -> dict[str, Any]:
  from xnn.train.resume import as_plain
  return as_plain(resolve(config, overrides, extra))


def _cost(config: str, overrides: dict[str, Any], extra: Sequence[str], constraints: Constraints) -> dict[str, Any]:
  return candidate_cost(resolve(config, overrides, extra), constraints).to_dict()


def _worker_init(parent_pid: int) -> None:
  """The worker ends with the search, even a SIGKILLed one (``launchers._die_with``), and leaves Ctrl-C to it."""
  import signal
  from xnn.sweeps.launchers import _die_with
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  preexec = _die_with(parent_pid)
  if preexec is not None:
    preexec()


class Analyst:
  """Parses and costs candidates of ``config`` in a spawned process (one, reused); ``close()`` ends it."""

  def __init__(self, config: str, extra: Sequence[str] = ()):
    import os
    self.config, self.extra = config, list(extra)
    self.pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                    initializer=_worker_init, initargs=(os.getpid(),))

  def resolve(self, overrides: dict[str, Any]) -> dict[str, Any]:
    """The candidate's resolved config as JSON types (``xnn.train.resume.as_plain``); ValueError if refused."""
    return self.pool.submit(_resolve_plain, self.config, overrides, self.extra).result()

  def cost(self, overrides: dict[str, Any], constraints: Constraints) -> CandidateCost:
    """``candidate_cost`` of the candidate; ValueError where it cannot be told (it does not build)."""
    return CandidateCost.from_dict(self.pool.submit(_cost, self.config, overrides, self.extra, constraints).result())

  def close(self) -> None:
    self.pool.shutdown(wait=True, cancel_futures=True)
