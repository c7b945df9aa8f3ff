"""Trace a function to a jaxpr on abstract shapes and flatten it to a dataflow graph.

Calls (``pjit``, ``closed_call``, ``custom_jvp_call``, ``custom_vjp_call``,
``checkpoint``/remat) are inlined, so their equations keep their Flax module path
(``eqn.source_info.name_stack``) and take part in liveness and receptive-field
propagation. Control flow stays one node whose cost comes from its sub-graphs:
``cond`` (every branch analysed, the costliest counted), ``scan`` (body x length),
``while`` (body + cond x trip count when it can be read off the jaxpr: an integer
counter compared with a constant and incremented by a constant).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections import Counter
from typing import Any

import jax
import numpy as np
from jax.extend import core as jcore

from xnn.cost import rules as R

INLINE = {"pjit", "jit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call",
          "custom_vjp_call_jaxpr", "checkpoint", "remat", "remat2", "custom_lin", "shard_map"}
VIEWS = {"reshape", "squeeze", "expand_dims"}   # alias their input buffer (liveness)


@dataclasses.dataclass
class Value:
  id: int
  shape: tuple[int, ...]
  dtype: Any
  kind: str                  # input | param | state | const | literal | carry (sub-graph input) | act
  producer: int | None = None

  @property
  def size(self) -> int:
    return int(math.prod(self.shape))

  @property
  def nbytes(self) -> int:
    try:
      return self.size * np.dtype(self.dtype).itemsize
    except TypeError:   # extended dtypes (PRNG keys)
      return self.size * 8


@dataclasses.dataclass
class Node:
  index: int
  primitive: str
  path: str
  inputs: list[int]
  outputs: list[int]
  params: dict
  counts: R.Counts
  children: list[tuple["Graph", int]] = dataclasses.field(default_factory=list)  # (sub-graph, multiplier)
  branches: list[R.Counts] | None = None
  trip_count: int | None = None


@dataclasses.dataclass
class Graph:
  values: list[Value] = dataclasses.field(default_factory=list)
  nodes: list[Node] = dataclasses.field(default_factory=list)
  inputs: list[int] = dataclasses.field(default_factory=list)
  outputs: list[int] = dataclasses.field(default_factory=list)
  unknown: Counter = dataclasses.field(default_factory=Counter)
  warnings: list[str] = dataclasses.field(default_factory=list)

  def new(self, aval: Any, kind: str, producer: int | None = None) -> int:
    v = Value(len(self.values), tuple(getattr(aval, "shape", ())), getattr(aval, "dtype", None), kind, producer)
    self.values.append(v)
    return v.id

  def total(self) -> R.Counts:
    """Counts of every node, control flow included (sub-graphs already folded in)."""
    c = R.Counts()
    for n in self.nodes:
      c = c + n.counts
    return c


_WRAP = re.compile(r"^[A-Za-z_]+\((.*)\)$")


def clean_path(stack: str) -> str:
  """'jvp(ResNet)/transpose(conv)' -> 'ResNet/conv'."""
  parts = []
  for p in str(stack).split("/"):
    while (m := _WRAP.match(p)):
      p = m.group(1)
    if p:
      parts.append(p)
  return "/".join(parts)


def _join(prefix: str, stack: str) -> str:
  s = clean_path(stack)
  if not prefix:
    return s
  if not s or s == prefix or s.startswith(prefix + "/"):
    return s or prefix
  return f"{prefix}/{s}"


def _sub_jaxpr(eqn):
  for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
    j = eqn.params.get(key)
    if j is not None:
      if isinstance(j, jcore.ClosedJaxpr):
        return j.jaxpr, list(j.consts)
      if isinstance(j, jcore.Jaxpr):
        return j, []
  return None


def trace_closed(closed, kinds: list[str], prefix: str = "") -> Graph:
  """Flatten a ClosedJaxpr whose invars have the given kinds into a Graph."""
  g = Graph()
  consts = [g.new(np.asarray(c) if not hasattr(c, "shape") else c, "const") for c in closed.consts]
  ins = [g.new(v.aval, k) for v, k in zip(closed.jaxpr.invars, kinds)]
  g.inputs = ins
  g.outputs = _walk(g, closed.jaxpr, consts, ins, prefix)
  return g


def _literal(g: Graph, env: dict, a) -> int:
  if isinstance(a, jcore.Literal):
    return g.new(a.aval, "literal")
  return env[a]


def _walk(g: Graph, jaxpr, const_ids: list[int], in_ids: list[int], prefix: str) -> list[int]:
  env: dict = {}
  for v, i in zip(jaxpr.constvars, const_ids):
    env[v] = i
  for v, i in zip(jaxpr.invars, in_ids):
    env[v] = i
  for eqn in jaxpr.eqns:
    path = _join(prefix, eqn.source_info.name_stack)
    ins = [_literal(g, env, a) for a in eqn.invars]
    name = eqn.primitive.name
    sub = _sub_jaxpr(eqn) if name in INLINE else None
    if sub is not None:
      j, consts = sub
      cids = [g.new(c, "const") for c in consts]
      outs = _walk(g, j, cids, ins[-len(j.invars):] if j.invars else [], path)
      for v, o in zip(eqn.outvars, outs):
        env[v] = o
      continue
    idx = len(g.nodes)
    outs = [g.new(v.aval, "act", idx) for v in eqn.outvars]
    for v, o in zip(eqn.outvars, outs):
      env[v] = o
    node = Node(idx, name, path, ins, outs, dict(eqn.params), R.Counts())
    if name == "cond":
      _cond(g, node, eqn, path)
    elif name == "scan":
      _scan(g, node, eqn, path)
    elif name == "while":
      _while(g, node, eqn, path)
    else:
      c = R.count(eqn)
      if c is None:
        g.unknown[name] += 1
        c = R.Counts()
      node.counts = c
    g.nodes.append(node)
  return [_literal(g, env, a) for a in jaxpr.outvars]


def _child(g: Graph, closed, path: str) -> Graph:
  sub = trace_closed(closed, ["carry"] * len(closed.jaxpr.invars), path)
  g.unknown.update(sub.unknown)
  g.warnings.extend(sub.warnings)
  return sub


def _cond(g: Graph, node: Node, eqn, path: str) -> None:
  subs = [_child(g, b, path) for b in eqn.params["branches"]]
  node.branches = [s.total() for s in subs]
  best = max(range(len(subs)), key=lambda i: node.branches[i].flops)
  node.children = [(subs[best], 1)]
  node.counts = node.branches[best] + R.Counts(cmps=1)


def _scan(g: Graph, node: Node, eqn, path: str) -> None:
  n = int(eqn.params["length"])
  sub = _child(g, eqn.params["jaxpr"], path)
  node.trip_count = n
  node.children = [(sub, n)]
  node.counts = sub.total().scale(n)


def while_trip_count(eqn) -> int | None:
  """Trip count of `while` when the loop is `for i in range(a, b, s)`-shaped."""
  p = eqn.params
  cj, bj = p["cond_jaxpr"].jaxpr, p["body_jaxpr"].jaxpr
  cn, bn = p["cond_nconsts"], p["body_nconsts"]
  carry_init = eqn.invars[cn + bn:]
  if len(cj.eqns) != 1 or cj.eqns[0].primitive.name not in ("lt", "le", "gt", "ge", "ne"):
    return None
  ce = cj.eqns[0]

  def const_of(a, consts_outer):
    if isinstance(a, jcore.Literal):
      return a.val
    if a in cj.invars[:cn]:
      o = consts_outer[cj.invars.index(a)]
      return o.val if isinstance(o, jcore.Literal) else None
    return None

  carries = cj.invars[cn:]
  a, b = ce.invars
  op = ce.primitive.name
  if a in carries and const_of(b, eqn.invars[:cn]) is not None:
    k, bound = carries.index(a), const_of(b, eqn.invars[:cn])
  elif b in carries and const_of(a, eqn.invars[:cn]) is not None:
    k, bound = carries.index(b), const_of(a, eqn.invars[:cn])
    op = {"lt": "gt", "le": "ge", "gt": "lt", "ge": "le", "ne": "ne"}[op]
  else:
    return None
  init = carry_init[k]
  if not isinstance(init, jcore.Literal):
    return None
  # body: out k = add(in k, literal step)
  bin_k, bout_k = bj.invars[bn + k], bj.outvars[k]
  step = None
  for e in bj.eqns:
    if e.outvars and e.outvars[0] is bout_k and e.primitive.name in ("add", "sub"):
      x, y = e.invars
      if x is bin_k and isinstance(y, jcore.Literal):
        step = y.val if e.primitive.name == "add" else -y.val
      elif y is bin_k and isinstance(x, jcore.Literal) and e.primitive.name == "add":
        step = x.val
  if not step:
    return None
  i0, b, s = int(init.val), int(bound), int(step)
  if op in ("lt", "ne") and s > 0:
    return max(0, -(-(b - i0) // s))
  if op == "le" and s > 0:
    return max(0, (b - i0) // s + 1)
  if op == "gt" and s < 0:
    return max(0, -(-(i0 - b) // -s))
  if op == "ge" and s < 0:
    return max(0, (i0 - b) // -s + 1)
  return None


def _while(g: Graph, node: Node, eqn, path: str) -> None:
  body = _child(g, eqn.params["body_jaxpr"], path)
  cond = _child(g, eqn.params["cond_jaxpr"], path)
  n = while_trip_count(eqn)
  node.trip_count = n
  if n is None:
    g.warnings.append(f"while loop at {path or '<top>'}: trip count unknown, counted once")
    n = 1
  node.children = [(body, n), (cond, n + 1)]
  node.counts = body.total().scale(n) + cond.total().scale(n + 1)


def _dce(closed):
  """The jaxpr without equations whose results nothing uses (XLA removes them too).

  E.g. a custom-VJP backward pass that computes the gradient of an input that needs
  none: JAX keeps that equation in the jaxpr, XLA never runs it.  Uses JAX's
  own dead-code elimination (an internal API: without it, nothing is removed).
  """
  try:
    from jax._src.interpreters import partial_eval as pe
    jaxpr, _ = pe.dce_jaxpr(closed.jaxpr, [True] * len(closed.jaxpr.outvars), instantiate=True)
  except Exception:  # noqa: BLE001 - a JAX version without it: count everything
    return closed
  return jcore.ClosedJaxpr(jaxpr, closed.consts)


def trace(fn, *args, kinds_per_arg: list[str] | None = None) -> Graph:
  """make_jaxpr(fn)(*args) on abstract shapes, dead code removed -> Graph.

  Convolutions are traced as XLA's own (``conv_setting(cpu="xla")``): the CPU formulations of
  ``xnn.ops.conv`` compute the same mathematics, and a report must not depend on the
  backend it was made on.  `kinds_per_arg` labels each arg."""
  from xnn.ops import conv_setting
  with conv_setting(cpu="xla"):
    closed = _dce(jax.make_jaxpr(fn)(*args))
  kinds: list[str] = []
  for i, a in enumerate(args):
    leaves = jax.tree.leaves(a)
    k = (kinds_per_arg or [])[i] if kinds_per_arg and i < len(kinds_per_arg) else "input"
    if isinstance(k, str):
      kinds += [k] * len(leaves)
    else:
      kinds += list(k)
  return trace_closed(closed, kinds)
