"""Render a CostReport: table (the lecture's AlexNet table / netscope), markdown, csv, json."""

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


def summary_lines(rep: CostReport) -> list[str]:
  rf = rep.receptive_field or {}
  lines = [f"params {rep.params:,} ({rep.param_bytes:,} bytes: {rep.param_bytes_by_dtype}); "
           f"state {rep.state_elements:,} ({rep.state_bytes:,} bytes)",
           f"MACs {rep.macs:,} ({rep.macs / 1e9:.3f} G); other ops {rep.other_ops:,} {rep.counts.to_dict()}; "
           f"FLOPs {rep.flops:,}",
           f"activations {rep.activation_elements:,} elements ({rep.activation_bytes:,} bytes); "
           f"peak live {rep.peak_bytes:,} bytes ({rep.peak_activation_bytes:,} intermediates)",
           f"receptive field at the head input: size {rf.get('size')}, stride {rf.get('stride')}, "
           f"padding {rf.get('padding')}"]
  if rep.train:
    lines.append(f"training: backward MACs {rep.backward_macs:,}; saved residuals "
                 f"{rep.saved_residual_bytes:,} bytes; value-and-grad peak {rep.peak_bytes:,} bytes")
  if rep.unknown_primitives:
    lines.append(f"UNKNOWN primitives (not counted): {rep.unknown_primitives}")
  for w in rep.warnings:
    lines.append(f"warning: {w}")
  for m in rep.misaligned[:5]:
    lines.append(f"error: receptive field {m}")
  if len(rep.misaligned) > 5:
    lines.append(f"error: ... {len(rep.misaligned) - 5} more misaligned joins (see --format json)")
  return lines


def render(rep: CostReport, fmt: str = "table", per_layer: bool = True, depth: int | None = None,
           device: Device | None = None) -> str:
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
  cells = [[_fmt_cell(c) for c in r] for r in table]
  if fmt == "markdown":
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(r) + " |" for r in cells]
    return "\n".join(lines + [""] + summary_lines(rep) + ([f"estimated time on {device.name}: {total_t * 1e3:.3f} ms"] if device else []))
  widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
  num = {6, 7, 8, 9, 10, 11, 12}
  def line(r):
    return "  ".join(x.rjust(w) if i in num else x.ljust(w) for i, (x, w) in enumerate(zip(r, widths)))
  out = [line(cols), "  ".join("-" * w for w in widths)] + [line(r) for r in cells]
  out += [""] + summary_lines(rep)
  if device is not None:
    out.append(f"estimated time on {device.name}: {total_t * 1e3:.3f} ms (sum of per-layer max(compute, memory))")
  return "\n".join(out)


def dataclass_copy(L: Layer) -> Layer:
  import dataclasses
  return dataclasses.replace(L, counts=Counts() + L.counts, primitives=list(L.primitives))
