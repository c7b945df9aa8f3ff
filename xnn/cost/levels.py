"""Cost per resolution level: the design homework's per-level tables (``xnn cost --by-level``).

The lecture notes "Design" build a CNN body as *levels*: building blocks repeated at one
resolution, separated by down-sampling ("Building block level 4: repeat many times (good
balance of compute and memory, good receptive field)"). The design homework tabulates,
for MobileNet V2 at 28x28, the feature-map memory, filter memory and MACs of a block at
each level and asks which level is best to repeat blocks in.

Here a *block* is a top-level module of the network: the first component of a row's
module path (``conv1``, ``stage2_block1``, ``head``; the rows a model computes outside any
module are ``(top)``). Its level is the spatial size (H x W) of its last output; the
blocks after global pooling form the level ``head``. Consecutive blocks of one size form
one level, so a level's totals are sums of whole rows of the per-layer table and the
levels add up to its totals. For each level: its blocks, output, parameters, filter memory
(parameter bytes), feature-map memory (every row's output, as ``activation_bytes``; and
the largest single map), MACs and the receptive field at its end with its growth over the
level; and the same for the level's last *repeatable* block -- the last one whose input and
output have the same shape, which another copy could follow.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from xnn.cost.analysis import CostReport, Layer

HEAD = "head"


@dataclasses.dataclass
class Cost:
  """What a block or a level costs: sums over its rows."""
  params: int = 0
  param_bytes: int = 0
  macs: int = 0
  activation_elements: int = 0
  activation_bytes: int = 0
  largest_map: int = 0                     # elements of the largest single output of a row
  field_in: tuple[int, ...] | None = None   # receptive field (pixels per axis) before it ...
  field_out: tuple[int, ...] | None = None  # ... and after it

  def add(self, layer: Layer) -> None:
    self.params += layer.params
    self.param_bytes += layer.param_bytes
    self.macs += layer.macs
    self.activation_elements += layer.output_elements
    self.activation_bytes += layer.activation_bytes
    self.largest_map = max(self.largest_map, layer.output_elements)
    field = _field(layer)
    if field is not None:
      self.field_out = field

  @property
  def field_growth(self) -> tuple[int, ...] | None:
    if self.field_out is None:
      return None
    before = self.field_in or (1,) * len(self.field_out)
    return tuple(o - i for o, i in zip(self.field_out, before))

  def to_dict(self) -> dict[str, Any]:
    d = {k: v for k, v in dataclasses.asdict(self).items() if not k.startswith("field")}
    d.update(receptive_field=_plain(self.field_out), receptive_field_growth=_plain(self.field_growth))
    return d


@dataclasses.dataclass
class Level:
  """One row of ``--by-level``: consecutive blocks whose outputs have one spatial size."""
  name: str                                  # "14x14", or "head" without spatial axes
  blocks: list[str]
  output_shape: tuple | None
  cost: Cost
  repeat: Cost | None = None                 # the level's last repeatable block alone (None: it has none)
  repeat_name: str = ""

  def to_dict(self) -> dict[str, Any]:
    return {"level": self.name, "blocks": self.blocks, "output_shape": list(self.output_shape or ()),
            **self.cost.to_dict(),
            "repeat_block": {"name": self.repeat_name, **self.repeat.to_dict()} if self.repeat else None}


def _field(layer: Layer) -> tuple[int, ...] | None:
  rf = layer.receptive_field
  if not rf:
    return None
  size = rf["size"]
  return tuple(int(s) for s in size) if isinstance(size, list) else (int(size), int(size))


def _plain(field: tuple[int, ...] | None) -> Any:
  """A field as JSON: one number when every axis agrees, else one per axis."""
  if field is None:
    return None
  return field[0] if len(set(field)) == 1 else list(field)


def block_of(layer: Layer) -> str:
  """The top-level module a row belongs to."""
  return layer.name.split("/")[0]


def _level_name(shape: tuple | None) -> str:
  return f"{shape[1]}x{shape[2]}" if shape is not None and len(shape) == 4 else HEAD


def blocks(rep: CostReport) -> list[tuple[str, list[Layer]]]:
  """(block name, its rows) for each maximal run of rows of one top-level module, in order."""
  out: list[tuple[str, list[Layer]]] = []
  for layer in rep.layers:
    name = block_of(layer)
    if out and out[-1][0] == name:
      out[-1][1].append(layer)
    else:
      out.append((name, [layer]))
  return out


def levels(rep: CostReport) -> list[Level]:
  """The per-level table of a network costed on an (N, H, W, C) image; ValueError for other inputs."""
  first = next((L for L in rep.layers if L.input_shape is not None), None)
  if rep.receptive_field is None or first is None or len(first.input_shape) != 4:
    raise ValueError("the per-level table needs a network on images (N, H, W, C) with spatial feature maps; "
                     "this one has none")
  out: list[Level] = []
  field = None
  for name, rows in blocks(rep):
    shape = next((L.output_shape for L in reversed(rows) if L.output_shape is not None), None)
    level = _level_name(shape)
    block = Cost(field_in=field)
    for row in rows:
      block.add(row)
    if not out or out[-1].name != level:
      out.append(Level(level, [], shape, Cost(field_in=field)))
    current = out[-1]
    for row in rows:
      current.cost.add(row)
    current.blocks.append(name)
    if shape is not None and rows[0].input_shape is not None and tuple(rows[0].input_shape) == tuple(shape):
      current.repeat, current.repeat_name = block, name
    current.output_shape = shape or current.output_shape
    field = block.field_out or field
  return out


def totals(table: list[Level]) -> Cost:
  """The sums over every level (they equal the per-layer totals)."""
  total = Cost()
  for level in table:
    for f in ("params", "param_bytes", "macs", "activation_elements", "activation_bytes"):
      setattr(total, f, getattr(total, f) + getattr(level.cost, f))
    total.largest_map = max(total.largest_map, level.cost.largest_map)
  fields = [level.cost.field_out for level in table if level.cost.field_out is not None]
  total.field_out = fields[-1] if fields else None
  return total


def name_ranges(names: list[str]) -> str:
  """``conv1, stage1_block1..4``: runs of names that differ only in a trailing count, shortened."""
  parts: list[list] = []
  for name in names:
    m = re.fullmatch(r"(.*?)(\d+)", name)
    prefix, number = (m.group(1), int(m.group(2))) if m else (name, None)
    last = parts[-1] if parts else None
    if last and number is not None and last[0] == prefix and last[2] == number - 1:
      last[2] = number
    else:
      parts.append([prefix, number, number])
  text = []
  for prefix, lo, hi in parts:
    text.append(prefix if lo is None else f"{prefix}{lo}" if lo == hi else f"{prefix}{lo}..{hi}")
  return ", ".join(text)
