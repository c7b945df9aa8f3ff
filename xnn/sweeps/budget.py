"""What a sweep will cost before it runs: training MACs per run and device-hours on a roofline preset.

For each run: its resolved config (the sweep's overrides applied as ``xnn train``
parses them), its step count (``train.num_steps``, or epochs x the training split's
examples // batch, from the dataset's ``DataFacts``: nothing is read), and the
model's ``xnn cost --train`` analysis at the run's input shape and global batch
(``xnn.cost.analyze_model(..., train=True)``, on abstract shapes: nothing is
allocated or compiled). Training MACs = (forward + backward MACs per step) x steps.

Device-hours: the roofline of ``xnn cost --device`` (``xnn.cost.render.apply_roofline``:
the sum over layers of max(FLOPs / peak, bytes / bandwidth), Williams et al. 2009)
for the training forward pass, scaled by (forward + backward FLOPs) / forward FLOPs
(the backward pass of a layer does about twice its forward work over the same
tensors), times the steps. Like every roofline it ignores launch overheads, fusion
and small-kernel inefficiency, so it is a lower bound on the time a device needs;
measured rates are in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from xnn.sweeps.launchers import RunSpec
from xnn.sweeps.spec import overrides


@dataclasses.dataclass
class RunCost:
  name: str
  model: str
  input_shape: tuple[int, ...] | None = None
  batch: int = 0
  steps: int = 0
  macs_per_step: int | None = None     # forward + backward, global batch
  step_s: float | None = None          # roofline lower bound, one device
  why_unknown: str | None = None

  @property
  def macs(self) -> int | None:
    return None if self.macs_per_step is None else self.macs_per_step * self.steps

  @property
  def device_hours(self) -> float | None:
    return None if self.step_s is None else self.step_s * self.steps / 3600


def run_config(config: str, spec: RunSpec, extra: Sequence[str] = ()):
  """The run's resolved config, parsed as its ``xnn train`` command line would be."""
  from xnn.commands.train import parse
  from xnn.train.train import check_config
  cfg, _ = parse([f"--config={config}", *overrides(spec.run), *extra])
  return check_config(cfg, None)


def input_shape(cfg, facts) -> tuple[int, ...]:
  """The model's input: one example of the dataset's shape through the eval preprocessing (resize, channels,
  crop, sequence reading) that ``config.data`` asks for."""
  import numpy as np
  from xnn.data.pipeline import Preprocess
  d = cfg.data
  crop = (d.crop_size, d.crop_size) if d.crop_size else None
  pre = Preprocess(("image", "label"), image_key="image", size=(d.image_size,) * 2 if d.image_size else None,
                   channels=d.channels, augment=d.augment, pad=d.pad, crop=crop, as_sequence=d.as_sequence)
  one = {"image": np.zeros((1, *facts.shape), np.uint8), "label": np.zeros((1,), np.int64)}
  return tuple(pre(one)["image"].shape[1:])


def _model_cost(name: str, shape: tuple[int, ...], batch: int, dtype: str, device, kwargs: dict[str, Any]):
  """(forward + backward MACs per step, roofline seconds per step) of one model at one input and batch."""
  from xnn.cost import analyze_model
  from xnn.cost.render import apply_roofline
  rep = analyze_model(name, input_shape=shape, batch=batch, train=True, **kwargs)
  forward_s = apply_roofline(rep, rep.layers, device, dtype)
  return rep.macs + rep.backward_macs, forward_s * (rep.flops + rep.backward_flops) / max(rep.flops, 1)


def sweep_costs(config: str, specs: Sequence[RunSpec], device, extra: Sequence[str] = ()) -> list[RunCost]:
  """A ``RunCost`` per run; models analysed once per (model, arguments, input, batch)."""
  from xnn.data.datasets import DATASETS
  from xnn.train.train import make_plan, model_kwargs
  cache: dict[str, tuple[int, float]] = {}
  out = []
  for s in specs:
    cfg = run_config(config, s, extra)
    cost = RunCost(s.name, cfg.model.name, batch=cfg.train.batch_size)
    facts = DATASETS.get(cfg.data.name).facts
    if facts is None:
      cost.why_unknown = f"dataset {cfg.data.name!r} is known only once loaded"
      cost.steps = cfg.train.num_steps
      out.append(cost)
      continue
    cost.steps = make_plan(cfg, facts.examples(cfg.data.train_split) // cfg.train.batch_size).total_steps
    cost.input_shape = input_shape(cfg, facts)
    kwargs = model_kwargs(cfg, facts.num_classes)
    key = repr((cfg.model.name, sorted(kwargs.items(), key=str), cost.input_shape, cost.batch, cfg.model.dtype))
    if key not in cache:
      cache[key] = _model_cost(cfg.model.name, cost.input_shape, cost.batch, cfg.model.dtype, device, kwargs)
    cost.macs_per_step, cost.step_s = cache[key]
    out.append(cost)
  return out


def _hours(h: float | None) -> str:
  return "?" if h is None else f"{h:,.2f}" if h >= 0.01 else f"{h:.2e}"


def render(costs: Sequence[RunCost], device) -> None:
  """The per-run table and the totals (rich)."""
  from rich.console import Console
  from rich.table import Table
  unit = f"{device.name}-hours"
  table = Table(title=f"training cost (xnn cost --train x steps; roofline on {device.name}, a lower bound)")
  for col in ("run", "model", "input", "batch", "steps", "MACs / step", "training MACs", unit):
    table.add_column(col, justify="left" if col in ("run", "model") else "right", overflow="fold")
  for c in costs:
    table.add_row(c.name, c.model, "x".join(map(str, c.input_shape or ())) or "?", str(c.batch), f"{c.steps:,}",
                  "?" if c.macs_per_step is None else f"{c.macs_per_step:.3e}",
                  "?" if c.macs is None else f"{c.macs:.3e}", _hours(c.device_hours))
  known = [c for c in costs if c.macs is not None]
  table.add_row("total", "", "", "", f"{sum(c.steps for c in costs):,}", "",
                f"{sum(c.macs for c in known):.3e}", _hours(sum(c.device_hours for c in known)), end_section=True)
  console = Console(width=max(140, Console().width))
  console.print(table)
  for c in costs:
    if c.why_unknown:
      console.print(f"{c.name}: no cost estimate ({c.why_unknown})")
