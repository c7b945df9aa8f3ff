"""Memory: parameter bytes per dtype and peak live bytes from a liveness pass.

Each value of the flattened jaxpr is live from the equation that produces it to
its last use (graph outputs to the end); reshapes alias their input. Arguments
(parameters, state, inputs) are live throughout. Control-flow nodes add the peak
of their sub-graphs as a transient.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from xnn.cost.trace import VIEWS, Graph


def peak_bytes(graph: Graph) -> tuple[int, int]:
  """(peak bytes of intermediates, bytes of arguments and constants) of `graph`."""
  n = len(graph.nodes)
  buf = list(range(len(graph.values)))   # value -> buffer owner
  for node in graph.nodes:
    if node.primitive in VIEWS and node.inputs:
      buf[node.outputs[0]] = buf[node.inputs[0]]
  last = defaultdict(lambda: -1)
  for node in graph.nodes:
    for i in node.inputs:
      b = buf[i]
      last[b] = max(last[b], node.index)
  for o in graph.outputs:
    last[buf[o]] = n
  delta = np.zeros(n + 2, dtype=np.int64)
  fixed = 0
  for v in graph.values:
    if buf[v.id] != v.id:
      continue
    if v.kind != "act":
      fixed += v.nbytes
      continue
    start = v.producer
    end = max(last[v.id], start)
    delta[start] += v.nbytes
    delta[end + 1] -= v.nbytes
  live = np.cumsum(delta)[:max(n, 1)]
  transient = np.zeros_like(live)
  for node in graph.nodes:
    if node.children:
      transient[node.index] = max(peak_bytes(sub)[0] for sub, _ in node.children)
  return int((live + transient).max()) if n else 0, int(fixed)


def bytes_by_dtype(values) -> dict[str, int]:
  out: dict[str, int] = defaultdict(int)
  for v in values:
    out[str(np.dtype(v.dtype))] += v.nbytes
  return dict(out)
