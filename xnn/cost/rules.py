"""Counting rules: one function per JAX primitive -> operation counts.

Conventions (documented with the full table in ``docs/cost.md``):

* one MAC = one multiply + one add; ``macs`` counts only the multiply-accumulates
  of convolutions and matrix products, over every kernel tap including padded
  ones (He et al. 2016 / Howard et al. 2017 / torchvision's model table / fvcore).
  Zeros inserted by *input* (lhs) dilation -- transposed convolutions and the
  data-gradient of a strided convolution -- are not taps and are not counted.
* everything else (bias adds, normalisation, activations, pooling, softmax) is
  counted separately as adds, muls, divs, cmps (comparisons, max/min), exps
  (transcendentals) and other (bitwise, integer, misc. arithmetic).
* FLOPs = 2 x MACs + all other operations.

A primitive without a rule is reported in ``unknown`` and never silently zero.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

FIELDS = ("macs", "adds", "muls", "divs", "cmps", "exps", "other")


@dataclasses.dataclass
class Counts:
  """Operation counts of one equation (or a sum of equations)."""
  macs: int = 0
  adds: int = 0
  muls: int = 0
  divs: int = 0
  cmps: int = 0
  exps: int = 0
  other: int = 0

  @property
  def other_ops(self) -> int:
    return self.adds + self.muls + self.divs + self.cmps + self.exps + self.other

  @property
  def flops(self) -> int:
    return 2 * self.macs + self.other_ops

  def __add__(self, o: "Counts") -> "Counts":
    return Counts(*(getattr(self, f) + getattr(o, f) for f in FIELDS))

  def scale(self, k: int) -> "Counts":
    return Counts(*(getattr(self, f) * k for f in FIELDS))

  def to_dict(self) -> dict[str, int]:
    return {f: getattr(self, f) for f in FIELDS}


def size(aval: Any) -> int:
  return int(math.prod(getattr(aval, "shape", ())))


def _out(eqn) -> int:
  return sum(size(v.aval) for v in eqn.outvars)


def _in0(eqn) -> int:
  return size(eqn.invars[0].aval)


# --- matrix products -----------------------------------------------------------

def conv_rule(eqn) -> Counts:
  """conv_general_dilated: out_elements x kernel_taps x C_in/groups / prod(lhs_dilation).

  The kernel's input-feature dimension already is C_in / feature_group_count, so
  grouped and depthwise convolutions need no special case; batch_group_count
  (weight gradients of grouped convolutions) splits the output features and is
  covered by the same product. Rhs (kernel) dilation spreads the taps but does not
  change their number; padded taps count.
  """
  p = eqn.params
  rhs = eqn.invars[1].aval.shape
  spec = p["dimension_numbers"].rhs_spec  # (O, I, spatial...)
  taps = math.prod(rhs[d] for d in spec[2:])
  cin = rhs[spec[1]]
  lhs_dil = math.prod(p.get("lhs_dilation") or (1,))
  return Counts(macs=_out(eqn) * taps * cin // lhs_dil)


def dot_general_rule(eqn) -> Counts:
  """dot_general: out_elements x prod(contracting dims) (batch dims are in the output)."""
  (lc, _), _ = eqn.params["dimension_numbers"]
  lhs = eqn.invars[0].aval.shape
  return Counts(macs=_out(eqn) * math.prod(lhs[d] for d in lc))


# --- windows and reductions -----------------------------------------------------

def _window_taps(eqn) -> int:
  return math.prod(eqn.params["window_dimensions"])


def reduce_window_rule(field: str) -> Callable:
  """reduce_window_{sum,max,min}: taps-1 binary ops per output (padded taps count)."""
  def rule(eqn) -> Counts:
    return Counts(**{field: _out(eqn) * (_window_taps(eqn) - 1)})
  return rule


def reduce_rule(field: str) -> Callable:
  """reduce_{sum,max,min,prod}, argmax: input - output binary ops."""
  def rule(eqn) -> Counts:
    return Counts(**{field: max(_in0(eqn) - _out(eqn), 0)})
  return rule


def cumulative_rule(field: str) -> Callable:
  def rule(eqn) -> Counts:
    return Counts(**{field: _in0(eqn)})
  return rule


def elementwise(field: str, per: int = 1) -> Callable:
  """One operation per output element."""
  def rule(eqn) -> Counts:
    return Counts(**{field: per * _out(eqn)})
  return rule


def integer_pow_rule(eqn) -> Counts:
  """x**y by repeated squaring: about ceil(log2 y) + popcount(y) - 1 multiplies (y=2: 1)."""
  y = abs(int(eqn.params["y"]))
  n = max(y.bit_length() - 1 + bin(y).count("1") - 1, 0) if y else 0
  c = Counts(muls=n * _out(eqn))
  if eqn.params["y"] < 0:
    c.divs = _out(eqn)
  return c


def free(eqn) -> Counts:
  """Data movement, layout, dtype and RNG bookkeeping: no arithmetic."""
  return Counts()


def _last_dim(e) -> int:
  shape = e.invars[0].aval.shape
  return shape[-1] if shape else 2


RULES: dict[str, Callable[[Any], Counts]] = {
    "conv_general_dilated": conv_rule,
    "dot_general": dot_general_rule,
    "reduce_window_sum": reduce_window_rule("adds"),
    "reduce_window_max": reduce_window_rule("cmps"),
    "reduce_window_min": reduce_window_rule("cmps"),
    "reduce_sum": reduce_rule("adds"),
    "reduce_max": reduce_rule("cmps"),
    "reduce_min": reduce_rule("cmps"),
    "reduce_prod": reduce_rule("muls"),
    "reduce_and": reduce_rule("other"),
    "reduce_or": reduce_rule("other"),
    "argmax": reduce_rule("cmps"),
    "argmin": reduce_rule("cmps"),
    "cumsum": cumulative_rule("adds"),
    "cumprod": cumulative_rule("muls"),
    "cummax": cumulative_rule("cmps"),
    "cumlogsumexp": cumulative_rule("exps"),
    "add": elementwise("adds"), "sub": elementwise("adds"), "add_any": elementwise("adds"),
    "neg": elementwise("adds"),
    "mul": elementwise("muls"), "square": elementwise("muls"),
    "integer_pow": integer_pow_rule,
    "div": elementwise("divs"), "rem": elementwise("divs"),
    "max": elementwise("cmps"), "min": elementwise("cmps"),
    "gt": elementwise("cmps"), "ge": elementwise("cmps"), "lt": elementwise("cmps"),
    "le": elementwise("cmps"), "eq": elementwise("cmps"), "ne": elementwise("cmps"),
    "abs": elementwise("cmps"), "sign": elementwise("cmps"), "clamp": elementwise("cmps", 2),
    "is_finite": elementwise("cmps"),
    "exp": elementwise("exps"), "exp2": elementwise("exps"), "log": elementwise("exps"),
    "log1p": elementwise("exps"), "expm1": elementwise("exps"), "tanh": elementwise("exps"),
    "logistic": elementwise("exps"), "rsqrt": elementwise("exps"), "sqrt": elementwise("exps"),
    "cbrt": elementwise("exps"), "pow": elementwise("exps"), "erf": elementwise("exps"),
    "erfc": elementwise("exps"), "erf_inv": elementwise("exps"), "sin": elementwise("exps"),
    "cos": elementwise("exps"), "tan": elementwise("exps"), "atan2": elementwise("exps"),
    "lgamma": elementwise("exps"), "digamma": elementwise("exps"),
    "floor": elementwise("other"), "ceil": elementwise("other"), "round": elementwise("other"),
    "and": elementwise("other"), "or": elementwise("other"), "xor": elementwise("other"),
    "not": elementwise("other"), "shift_left": elementwise("other"),
    "shift_right_logical": elementwise("other"), "shift_right_arithmetic": elementwise("other"),
    "population_count": elementwise("other"), "nextafter": elementwise("other"),
    "top_k": lambda e: Counts(cmps=_in0(e) * max(1, math.ceil(math.log2(e.params["k"] + 1)))),
    "sort": lambda e: Counts(cmps=_in0(e) * max(1, math.ceil(math.log2(max(2, _last_dim(e)))))),
}

FREE = (
    "reshape", "transpose", "broadcast_in_dim", "squeeze", "expand_dims", "convert_element_type",
    "slice", "dynamic_slice", "dynamic_update_slice", "concatenate", "pad", "gather", "scatter",
    "select_n", "stack", "iota", "copy", "copy_p", "stop_gradient", "rev", "bitcast_convert_type",
    "reduce_precision", "random_seed", "random_bits", "random_wrap", "random_unwrap",
    "random_fold_in", "random_split", "threefry2x32", "split", "full_like", "zeros_like",
    "device_put", "sharding_constraint", "optimization_barrier", "name", "tie_in",
    "select_and_scatter_add", "select_and_gather_add", "scatter-add", "scatter_add",
    "erf_inv", "mesh_cast", "pvary",
)
for _name in FREE:
  RULES.setdefault(_name, free)
# Windowed-max gradients are comparisons + adds; counted once per input element.
RULES["select_and_scatter_add"] = elementwise("cmps")
RULES["select_and_gather_add"] = elementwise("cmps")
RULES["scatter-add"] = RULES["scatter_add"] = lambda e: Counts(adds=size(e.invars[-1].aval))


def count(eqn) -> Counts | None:
  """Counts of a leaf equation, or None when the primitive has no rule."""
  rule = RULES.get(eqn.primitive.name)
  return None if rule is None else rule(eqn)
