"""Receptive fields: exact theoretical (Araujo et al. 2019) and effective (Luo et al. 2016).

Theoretical: every value carries, per input spatial axis it still indexes, the
triple (r, j, P) of Araujo, Norris & Sim, "Computing Receptive Fields of
Convolutional Neural Networks", Distill 2019: receptive-field size r, effective
stride j = prod s_i and effective padding P = sum p_l prod_{i<l} s_i. A layer with
kernel k, dilation d, stride s and left padding p maps
    r' = r + (d (k - 1)) j,   j' = j s,   P' = P + p j          (eqs. 1-3, 6)
which for a chain gives r_0 = sum_l (k_l - 1) prod_{i<l} s_i + 1. Input dilation
(transposed conv) divides j; slices shift P and multiply j by their stride.
At joins (add, mul, concatenate along channels, ...) the largest field wins; the
paths are aligned when their strides agree and their field centres
c = (r - 1)/2 - P coincide (Araujo et al., "Handling multi-path networks"), and
a misalignment is recorded (``strict=True`` raises ``ReceptiveFieldError``).
"""

from __future__ import annotations

import dataclasses
import functools
from fractions import Fraction
from typing import Any, Callable

import numpy as np

from xnn.cost.trace import Graph

ELEMENTWISE = {
    "add", "sub", "mul", "div", "max", "min", "neg", "abs", "sign", "exp", "log", "tanh",
    "logistic", "rsqrt", "sqrt", "integer_pow", "square", "pow", "erf", "log1p", "expm1",
    "convert_element_type", "stop_gradient", "copy", "copy_p", "select_n", "clamp", "gt", "ge",
    "lt", "le", "eq", "ne", "add_any", "and", "or", "not", "xor", "is_finite", "floor", "ceil",
    "round", "reduce_precision", "optimization_barrier", "sin", "cos", "exp2", "erfc", "rem",
}


class ReceptiveFieldError(ValueError):
  """Paths joined at an add/concatenate see misaligned input windows."""


@dataclasses.dataclass(frozen=True)
class RF:
  """Receptive field along one input spatial axis (Araujo et al. notation)."""
  size: Fraction
  stride: Fraction
  padding: Fraction

  @property
  def centre(self) -> Fraction:
    return (self.size - 1) / 2 - self.padding


def _conv_like(rf: RF, k: int, s: int, p: int, d: int = 1, lhs_d: int = 1) -> RF:
  j = rf.stride / lhs_d
  return RF(rf.size + d * (k - 1) * j, j * s, rf.padding + p * j)


def _fmt(x: Fraction) -> int | float:
  return int(x) if x.denominator == 1 else float(x)


@dataclasses.dataclass
class Field:
  """Receptive field of one value: {axis of the value: RF}, keyed by input axis order."""
  axes: dict[int, RF]

  def summary(self) -> dict[str, Any]:
    rfs = list(self.axes.values())
    def pick(attr):
      vals = [_fmt(getattr(r, attr)) for r in rfs]
      return vals[0] if len(set(vals)) == 1 else vals
    return {"size": pick("size"), "stride": pick("stride"), "padding": pick("padding")}


class Propagator:
  """Forward pass of (r, j, P) over a flattened Graph."""

  def __init__(self, graph: Graph, input_id: int, spatial_axes: tuple[int, ...], strict: bool = False):
    self.g, self.strict = graph, strict
    unit = RF(Fraction(1), Fraction(1), Fraction(0))          # one input pixel: size 1, stride 1
    self.fields: dict[int, Field] = {input_id: Field({a: unit for a in spatial_axes})}
    self.misaligned: list[str] = []
    self.unhandled: set[str] = set()
    self.order: list[int] = []   # values carrying a spatial field, in execution order
    for node in graph.nodes:
      self._node(node)

  def _join(self, node, fields: list[Field], shape) -> Field | None:
    out: dict[int, RF] = {}
    for f in fields:
      for ax, rf in f.axes.items():
        if ax >= len(shape):
          continue
        cur = out.get(ax)
        if cur is None:
          out[ax] = rf
          continue
        if cur.stride != rf.stride or cur.centre != rf.centre:
          msg = (f"{node.path or node.primitive}: misaligned paths at {node.primitive} on axis {ax}: "
                 f"(r={_fmt(cur.size)}, j={_fmt(cur.stride)}, P={_fmt(cur.padding)}) vs "
                 f"(r={_fmt(rf.size)}, j={_fmt(rf.stride)}, P={_fmt(rf.padding)})")
          if self.strict:
            raise ReceptiveFieldError(msg)
          self.misaligned.append(msg)
        if cur.stride == rf.stride:
          # exact support: the union of both windows [-P, -P + r - 1] (equal to the
          # larger one when the paths are aligned)
          lo = min(-cur.padding, -rf.padding)
          hi = max(-cur.padding + cur.size - 1, -rf.padding + rf.size - 1)
          out[ax] = RF(hi - lo + 1, rf.stride, -lo)
        elif rf.size > cur.size:
          out[ax] = rf
    return Field(out) if out else None

  def _node(self, node) -> None:
    g, name, p = self.g, node.primitive, node.params
    ins = [self.fields.get(i) for i in node.inputs]
    if not any(ins):
      return
    oshape = g.values[node.outputs[0]].shape if node.outputs else ()
    out: Field | None = None
    if name == "stack":
      ax = p["axis"]
      shifted = [Field({(a + (a >= ax)): r for a, r in f.axes.items()}) for f in ins if f is not None]
      out = self._join(node, shifted, oshape)
    elif name in ELEMENTWISE or name == "concatenate":
      # inputs broadcast to size-1 along an axis carry no spatial extent there
      fs = []
      for i, f in zip(node.inputs, ins):
        if f is None:
          continue
        shp = g.values[i].shape
        fs.append(Field({a: r for a, r in f.axes.items() if a < len(shp) and (shp[a] == oshape[a] or shp[a] > 1)}))
      # a concatenation along a spatial axis (e.g. a roll) is joined like channels:
      # the widest field wins and shifted pieces are reported as misaligned
      out = self._join(node, fs, oshape)
    elif name == "conv_general_dilated":
      f = ins[0]
      dn = p["dimension_numbers"]
      rhs = g.values[node.inputs[1]].shape
      axes = {}
      for i, (la, ra, oa) in enumerate(zip(dn.lhs_spec[2:], dn.rhs_spec[2:], dn.out_spec[2:])):
        if f and la in f.axes:
          axes[oa] = _conv_like(f.axes[la], rhs[ra], p["window_strides"][i], p["padding"][i][0],
                                (p.get("rhs_dilation") or (1,) * 9)[i], (p.get("lhs_dilation") or (1,) * 9)[i])
      out = Field(axes) if axes else None
    elif name.startswith("reduce_window"):
      f = ins[0]
      axes = {}
      for a, rf in f.axes.items():
        axes[a] = _conv_like(rf, p["window_dimensions"][a], p["window_strides"][a], p["padding"][a][0],
                             p["window_dilation"][a], p["base_dilation"][a])
      out = Field(axes)
    elif name == "pad":
      f = ins[0]
      out = Field({a: RF(rf.size, rf.stride / (p["padding_config"][a][2] + 1),
                         rf.padding + p["padding_config"][a][0] * rf.stride / (p["padding_config"][a][2] + 1))
                   for a, rf in f.axes.items()})
    elif name == "slice":
      f = ins[0]
      strides = p.get("strides") or (1,) * len(oshape)
      out = Field({a: RF(rf.size, rf.stride * strides[a], rf.padding - p["start_indices"][a] * rf.stride)
                   for a, rf in f.axes.items()})
    elif name == "split":
      out = None if p["axis"] in ins[0].axes else ins[0]
    elif name == "transpose":
      perm = p["permutation"]
      out = Field({perm.index(a): rf for a, rf in ins[0].axes.items()})
    elif name == "broadcast_in_dim":
      bd = p["broadcast_dimensions"]
      out = Field({bd[a]: rf for a, rf in ins[0].axes.items()})
    elif name in ("reduce_sum", "reduce_max", "reduce_min", "argmax", "argmin"):
      red = set(p["axes"])
      f = ins[0]
      if red & set(f.axes):
        out = None   # a global statistic: every output depends on the whole map
      else:
        out = Field({a - sum(r < a for r in red): rf for a, rf in f.axes.items()})
    elif name in ("reshape", "squeeze", "expand_dims"):
      ishape = g.values[node.inputs[0]].shape
      f = ins[0]
      last = max(f.axes) + 1
      if tuple(ishape[:last]) == tuple(oshape[:last]):
        out = f
      else:
        out = None
    elif name == "dot_general":
      (lc, rc), (lb, rb) = p["dimension_numbers"]
      f = ins[0]
      if f is not None:
        lshape = g.values[node.inputs[0]].shape
        free = [d for d in range(len(lshape)) if d not in lc and d not in lb]
        axes = {}
        for a, rf in f.axes.items():
          if a in lb:
            axes[list(lb).index(a)] = rf
          elif a in free:
            axes[len(lb) + free.index(a)] = rf
        out = Field(axes) if axes else None
    else:
      self.unhandled.add(name)
      out = None
    if out is not None and out.axes:
      for o in node.outputs:
        self.fields[o] = out
        self.order.append(o)


def propagate(graph: Graph, input_id: int, spatial_axes: tuple[int, ...], strict: bool = False) -> Propagator:
  return Propagator(graph, input_id, spatial_axes, strict)


# --- effective receptive field -------------------------------------------------

@functools.lru_cache(maxsize=16)
def _centre_gradients(feature_fn: Callable) -> Callable:
  """jit(vmap over inputs of d sum_c y[centre, c] / d x) for ``feature_fn(variables, x) -> (N, H', W', C)``;
  compiled once per function and input shape, whatever the variables (every checkpoint of a run)."""
  import jax
  import jax.numpy as jnp

  def centre(variables, x):
    y = feature_fn(variables, x[None])
    return jnp.sum(y[0, y.shape[1] // 2, y.shape[2] // 2, :])

  return jax.jit(jax.vmap(jax.grad(centre, argnums=1), in_axes=(None, 0)))


def erf_map(feature_fn: Callable, inputs: Any, variables: Any = None, keep_compiled: bool = True) -> np.ndarray:
  """Luo et al. 2016, sec. 2: E_x |d y_centre / d x|, the (H, W) map of the gradient of the centre unit of
  ``feature_fn(variables, x)`` (N, H', W', C) -- summed over its channels -- with respect to each (H, W, C)
  input of ``inputs``, its absolute value averaged over the inputs and their channels. ``keep_compiled``:
  keep the compiled gradient for the next call with the same ``feature_fn`` (off for a function that
  closes over its weights, which would be kept with it)."""
  import jax.numpy as jnp
  build = _centre_gradients if keep_compiled else _centre_gradients.__wrapped__
  grads = build(feature_fn)(variables, jnp.asarray(inputs))
  return np.asarray(jnp.mean(jnp.abs(grads), axis=(0, 3)), np.float64)


def erf_peak(erf: np.ndarray) -> tuple[int, int]:
  """(row, column) of the map's largest value; of several equal ones, the nearest to the map's centroid."""
  h, w = erf.shape
  total = erf.sum()
  if not total > 0:
    return h // 2, w // 2
  rows, cols = np.indices(erf.shape)
  centroid = ((erf * rows).sum() / total, (erf * cols).sum() / total)
  peaks = np.argwhere(erf >= erf.max())
  best = min(peaks, key=lambda p: ((p[0] - centroid[0]) ** 2 + (p[1] - centroid[1]) ** 2, p[0], p[1]))
  return int(best[0]), int(best[1])


def erf_radius(erf: np.ndarray, mass: float = 0.95) -> tuple[int, tuple[int, int]]:
  """(radius, peak): the half-width of the smallest square around the map's peak holding ``mass`` of it."""
  h, w = erf.shape
  total = erf.sum()
  ch, cw = erf_peak(erf)
  for r in range(max(h, w)):
    if erf[max(0, ch - r):ch + r + 1, max(0, cw - r):cw + r + 1].sum() >= mass * total:
      return r, (int(ch), int(cw))
  return max(h, w), (int(ch), int(cw))


def erf_sigma(erf: np.ndarray) -> float:
  """Standard deviation (pixels) of the isotropic Gaussian fitted to the map by its moments: the map,
  normalised to mass 1, has variance sigma^2 along each axis about its centroid (Luo et al. 2016, sec. 2.2:
  the ERF of a deep stack tends to a Gaussian). NaN for an all-zero map."""
  total = erf.sum()
  if not total > 0:
    return float("nan")
  rows, cols = np.indices(erf.shape)
  p = erf / total
  var_r = (p * (rows - (p * rows).sum()) ** 2).sum()
  var_c = (p * (cols - (p * cols).sum()) ** 2).sum()
  return float(np.sqrt((var_r + var_c) / 2))


def erf_numbers(erf: np.ndarray, mass: float = 0.95) -> dict[str, Any]:
  """The map's one-number summaries: ``radius`` and ``size`` (= 2 radius + 1) of the square around the
  ``centre`` (the peak) holding ``mass`` of it, ``radius50`` of the square holding half of it (which a small
  input does not bound as soon), ``sigma`` of the fitted Gaussian, and the core: ``half_max_area``, the pixels
  at or above half the peak, with ``half_max_radius`` = sqrt(area / pi), the radius of a disc that large (mass
  and moments also count a faint wide halo; the half-maximum area does not)."""
  radius, centre = erf_radius(erf, mass)
  area = int((erf >= 0.5 * erf.max()).sum()) if erf.max() > 0 else 0
  return {"radius": radius, "size": 2 * radius + 1, "centre": centre, "radius50": erf_radius(erf, 0.5)[0],
          "sigma": erf_sigma(erf), "half_max_area": area, "half_max_radius": float(np.sqrt(area / np.pi)),
          "mass": mass}


def effective_receptive_field(feature_fn, input_shape: tuple[int, ...], *, samples: int = 8,
                              seed: int = 0, mass: float = 0.95) -> dict[str, Any]:
  """Luo et al. 2016, "Understanding the Effective Receptive Field in Deep CNNs", sec. 2, at the weights
  ``feature_fn(x)`` closes over: ``erf_map`` over `samples` standard-normal (H, W, C) inputs, with
  ``erf_numbers`` (``map``, ``radius``, ``size``, ``centre``, ``sigma``). ``xnn.inspect.erf`` draws it."""
  import jax
  xs = jax.random.normal(jax.random.key(seed), (samples, *input_shape))
  erf = erf_map(lambda _, x: feature_fn(x), xs, keep_compiled=False)
  return {"map": erf, **erf_numbers(erf, mass)}
