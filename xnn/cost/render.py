"""Render a CostReport: totals, per-layer table (the lecture's AlexNet table / netscope), per-level table
(the design homework's), markdown, csv, json."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from xnn.cost.analysis import CostReport, Layer
from xnn.cost.roofline import Device, estimate
from xnn.cost.rules import Counts

COLUMNS = ("layer", "type", "input", "output", "kernel", "stride", "params", "MACs", "other ops",
           "in elems", "out elems", "param bytes", "act bytes", "RF")


def collapse(layers: list[Layer], depth: int) -> list[Layer]:
  """Merge consecutive rows whose module paths agree on the first `depth` components."""
  out: list[Layer] = []
  for L in layers:
    key = "/".join(L.name.split("/")[:depth])
    if out and out[-1].name == key:
      M = out[-1]
      M.counts = M.counts + L.counts
      M.params += L.params
      M.param_bytes += L.param_bytes
      M.output_shape = L.output_shape or M.output_shape
      M.output_elements, M.activation_bytes = L.output_elements, L.activation_bytes
      M.receptive_field = L.receptive_field or M.receptive_field
      M.primitives += [p for p in L.primitives if p not in M.primitives]
      if M.type != L.type:
        M.type = "block"
      M.kernel = M.stride = None
    else:
      out.append(Layer(key, L.type, L.input_shape, L.output_shape, L.kernel, L.stride, L.params,
                       L.param_bytes, Counts() + L.counts, L.input_elements, L.input_bytes,
                       L.output_elements, L.activation_bytes, L.receptive_field, list(L.primitives)))
  return out


def apply_roofline(rep: CostReport, layers: list[Layer], device: Device, dtype: str = "float32") -> float:
  total = 0.0
  for L in layers:
    L.time_s, L.bound = estimate(L.flops, L.input_bytes + L.activation_bytes + L.param_bytes, device, dtype)
    total += L.time_s
  return total


def _shape(s) -> str:
  return "x".join(map(str, s[1:])) if s else ""


def _pair(t) -> str:
  if not t:
    return ""
  return str(t[0]) if len(set(t)) == 1 else "x".join(map(str, t))


def _rf(rf) -> str:
  if not rf:
    return ""
  return str(rf["size"]) if not isinstance(rf["size"], list) else "x".join(map(str, rf["size"]))


def rows(rep: CostReport, layers: list[Layer]) -> list[list[Any]]:
  out = []
  for L in layers:
    out.append([L.name, L.type, _shape(L.input_shape), _shape(L.output_shape), _pair(L.kernel),
                _pair(L.stride), L.params, L.macs, L.other_ops, L.input_elements, L.output_elements,
                L.param_bytes, L.activation_bytes, _rf(L.receptive_field)]
               + ([f"{L.time_s * 1e6:.2f}us", L.bound] if L.time_s is not None else []))
  total = ["total", "", "", "", "", "", rep.params, rep.macs, rep.other_ops, "",
           rep.activation_elements, rep.param_bytes, rep.activation_bytes, _rf(rep.receptive_field)]
  if layers and layers[0].time_s is not None:
    total += [f"{sum(L.time_s for L in layers) * 1e6:.2f}us", ""]
  out.append(total)
  return out


def _fmt_cell(c: Any) -> str:
  return f"{c:,}" if isinstance(c, int) else str(c)


def _3digits(v: float) -> str:
  return f"{v:.{2 if abs(v) < 10 else 1 if abs(v) < 100 else 0}f}"


def magnitude(n: float) -> str:
  """3 significant digits with a decimal SI prefix: 4089184256 -> '4.09 G'."""
  for prefix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
    if abs(n) >= scale:
      return f"{_3digits(n / scale)} {prefix}"
  return f"{n:g}"


def binary(n: float) -> str:
  """Bytes with 3 significant digits and a binary prefix: 1078888 -> '1.03 MiB'."""
  for prefix, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
    if abs(n) >= scale:
      return f"{_3digits(n / scale)} {prefix}"
  return f"{n:g} bytes"


def count(n: int) -> str:
  """Exact count and magnitude: '4,089,184,256 (4.09 G)'."""
  return f"{n:,} ({magnitude(n)})" if abs(n) >= 1000 else f"{n:,}"


def nbytes(n: int) -> str:
  """Exact bytes and magnitude: '1,078,888 bytes (1.03 MiB)'."""
  return f"{n:,} bytes ({binary(n)})" if abs(n) >= 1024 else f"{n:,} bytes"


OP_NAMES = {"adds": "adds", "muls": "multiplies", "divs": "divides", "cmps": "compares", "exps": "exps",
            "other": "other"}


def _other_ops(rep: CostReport) -> str:
  ops = sorted(((n, OP_NAMES[k]) for k, n in rep.counts.to_dict().items() if k in OP_NAMES and n),
               key=lambda t: -t[0])
  return count(rep.other_ops) + (": " + ", ".join(f"{name} {n:,}" for n, name in ops) if ops else "")


def _field(v) -> str:
  return "x".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)


def summary_items(rep: CostReport) -> list[tuple[str, str]]:
  """(label, value) pairs: the totals of `rep`, each with its unit and magnitude."""
  dtypes = ", ".join(f"{k} {v:,} bytes" if len(rep.param_bytes_by_dtype) > 1 else k
                     for k, v in rep.param_bytes_by_dtype.items())
  items = [("parameters", f"{count(rep.params)}, {nbytes(rep.param_bytes)}" + (f" {dtypes}" if dtypes else ""))]
  if rep.train_only_params:
    items[0] = ("parameters", f"{count(rep.trained_params)} as trained, {count(rep.train_only_params)} of them only in "
                f"training (auxiliary classifiers); {count(rep.params)}, {nbytes(rep.param_bytes)}, in this "
                "forward pass")
  if rep.state_elements:
    items.append(("state", f"{count(rep.state_elements)} not trained (e.g. batch-norm statistics), "
                           f"{nbytes(rep.state_bytes)}"))
  items += [("MACs", f"{count(rep.macs)} multiply-accumulates, forward pass"),
            ("FLOPs", f"{count(rep.flops)} = 2 x MACs + other ops"),
            ("other ops", _other_ops(rep)),
            ("activations", f"{count(rep.activation_elements)} elements, {nbytes(rep.activation_bytes)}: "
                            "every layer's output"),
            ("peak memory", f"{nbytes(rep.peak_bytes)} live at once{', forward + backward' if rep.train else ''} "
                            f"({binary(rep.peak_activation_bytes)} of it intermediates)")]
  rf = rep.receptive_field
  items.append(("receptive field", f"{_field(rf.get('size'))} pixels at the head input (stride "
                                   f"{_field(rf.get('stride'))}, padding {_field(rf.get('padding'))})"
                if rf else "none (no spatial axes)"))
  if rep.train:
    items += [("backward MACs", count(rep.backward_macs)),
              ("training MACs", f"{count(rep.macs + rep.backward_macs)} = forward + backward, one step"),
              ("saved residuals", f"{nbytes(rep.saved_residual_bytes)} kept from the forward for the backward")]
  return items


def summary_lines(rep: CostReport, markdown: bool = False) -> list[str]:
  """The totals, one labelled line each, then unknown primitives, warnings and misalignments."""
  items = summary_items(rep)
  width = max(len(k) for k, _ in items)
  lines = [f"- **{k}** {v}" if markdown else f"{k:<{width}}  {v}" for k, v in items]
  if rep.unknown_primitives:
    lines.append(f"UNKNOWN primitives (not counted): {rep.unknown_primitives}")
  for w in rep.warnings:
    lines.append(f"warning: {w}")
  for m in rep.misaligned[:5]:
    lines.append(f"error: receptive field {m}")
  if len(rep.misaligned) > 5:
    lines.append(f"error: ... {len(rep.misaligned) - 5} more misaligned joins (see --format json)")
  return lines


def _device_line(device: Device, layers: list[Layer], total_t: float, rows: str = "layers") -> str:
  memory = sum(L.bound == "memory" for L in layers)
  return (f"estimated time on {device.name}: {total_t * 1e3:.3f} ms (sum of per-layer max(compute, memory); "
          f"{memory} of {len(layers)} {rows} memory-bound)")


def render(rep: CostReport, fmt: str = "table", per_layer: bool = True, depth: int | None = None,
           device: Device | None = None, title: str | None = None) -> str:
  """`rep` as text: 'table' (per-layer rows and the totals, or only the totals with
  per_layer=False, headed by `title`), 'markdown', 'csv' or 'json'."""
  layers = collapse(rep.layers, depth) if depth else [dataclass_copy(L) for L in rep.layers]
  total_t = apply_roofline(rep, layers, device) if device is not None else None
  if fmt == "json":
    d = rep.to_dict()
    d["layers"] = [L.to_dict() for L in layers]
    if device is not None:
      d["device"] = device.name
      d["estimated_time_s"] = total_t
    return json.dumps(d, indent=1)
  cols = list(COLUMNS) + (["est. time", "bound"] if device is not None else [])
  table = rows(rep, layers) if per_layer or fmt == "csv" else rows(rep, [])
  if fmt == "csv":
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(cols)
    w.writerows(table)
    return buf.getvalue()
  device_lines = [] if device is None else [_device_line(device, layers, total_t, "rows" if depth else "layers")]
  cells = [[_fmt_cell(c) for c in r] for r in table]
  if fmt == "markdown":
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(r) + " |" for r in cells]
    return "\n".join(lines + [""] + summary_lines(rep, markdown=True) + [f"- {t}" for t in device_lines])
  out = [title, ""] if title and not per_layer else []
  if per_layer:
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
    num = {6, 7, 8, 9, 10, 11, 12}

    def line(r):
      return "  ".join(x.rjust(w) if i in num else x.ljust(w) for i, (x, w) in enumerate(zip(r, widths))).rstrip()

    out += [line(cols), "  ".join("-" * w for w in widths)] + [line(r) for r in cells] + [""]
  return "\n".join(out + summary_lines(rep) + device_lines)


def dataclass_copy(L: Layer) -> Layer:
  import dataclasses
  return dataclasses.replace(L, counts=Counts() + L.counts, primitives=list(L.primitives))


LEVEL_COLUMNS = ("level", "blocks", "output", "params", "filter bytes", "fmap elems", "fmap bytes", "largest map",
                 "MACs", "RF", "RF growth", "repeat block", "its params", "its MACs", "its fmap elems",
                 "its RF growth")


def _size(field) -> str:
  if field is None:
    return ""
  return str(field[0]) if len(set(field)) == 1 else "x".join(map(str, field))


def _growth(field) -> str:
  return "" if field is None else "+" + _size(field)


def level_rows(table: list, total) -> list[list[Any]]:
  """``--by-level``'s rows (``xnn.cost.levels.Level``s) and the totals row."""
  from xnn.cost.levels import name_ranges
  out = []
  for lv in table:
    c, b = lv.cost, lv.repeat
    repeat = [lv.repeat_name, b.params, b.macs, b.activation_elements, _growth(b.field_growth)] if b else [""] * 5
    out.append([lv.name, f"{len(lv.blocks)}: {name_ranges(lv.blocks)}", _shape(lv.output_shape), c.params,
                c.param_bytes, c.activation_elements, c.activation_bytes, c.largest_map, c.macs,
                _size(c.field_out), _growth(c.field_growth), *repeat])
  out.append(["total", str(sum(len(lv.blocks) for lv in table)), "", total.params, total.param_bytes,
              total.activation_elements, total.activation_bytes, total.largest_map, total.macs,
              _size(total.field_out), "", "", "", "", "", ""])
  return out


def render_levels(rep: CostReport, fmt: str = "table", title: str | None = None) -> str:
  """The per-level table (``xnn.cost.levels``) of `rep` as 'table' (with the totals below), 'markdown',
  'csv' or 'json'. The ``its ...`` columns are the level's last repeatable block alone."""
  from xnn.cost.levels import levels, totals
  table = levels(rep)
  total = totals(table)
  if fmt == "json":
    return json.dumps({"levels": [lv.to_dict() for lv in table], "total": total.to_dict(),
                       "params": rep.params, "macs": rep.macs, "activation_elements": rep.activation_elements,
                       "activation_bytes": rep.activation_bytes, "param_bytes": rep.param_bytes,
                       "receptive_field": rep.receptive_field}, indent=1)
  cells = level_rows(table, total)
  if fmt == "csv":
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(LEVEL_COLUMNS)
    w.writerows(cells)
    return buf.getvalue()
  cells = [[_fmt_cell(c) for c in r] for r in cells]
  if fmt == "markdown":
    lines = ["| " + " | ".join(LEVEL_COLUMNS) + " |", "|" + "---|" * len(LEVEL_COLUMNS)]
    lines += ["| " + " | ".join(r) + " |" for r in cells]
    return "\n".join(lines + [""] + summary_lines(rep, markdown=True))
  widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(LEVEL_COLUMNS)]
  num = set(range(3, len(LEVEL_COLUMNS))) - {11}

  def line(r):
    return "  ".join(x.rjust(w) if i in num else x.ljust(w) for i, (x, w) in enumerate(zip(r, widths))).rstrip()

  out = [title, ""] if title else []
  out += [line(LEVEL_COLUMNS), "  ".join("-" * w for w in widths)] + [line(r) for r in cells] + [""]
  out += ["RF: receptive field at the level's end, in input pixels; repeat block: the level's last block whose "
          "input and output shapes agree (its ...: that block alone, the cost of one more copy)", ""]
  return "\n".join(out + summary_lines(rep))
