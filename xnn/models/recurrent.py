"""Recurrent cells and networks (the lecture notes "Design", "RNNs": Layers, Networks).

Cells use the lecture's row-vector notation; x_t is 1 x K, y_t is 1 x N:

* ``RNNCell``  y_t = f(x_t H + y_{t-1} G + v)                      (f = tanh)
* ``GRUCell``  u_t = sigma(x_t H_u + y_{t-1} G_u + v_u)             update gate
               r_t = sigma(x_t H_r + y_{t-1} G_r + v_r)             reset gate
               y_t = u_t * y_{t-1}
                     + (1 - u_t) * tanh(x_t H_y + (r_t * y_{t-1}) G_y + v_y)
* ``LSTMCell`` f_t, i_t, o_t = sigma(x_t H_* + y_{t-1} G_* + v_*)  forget/input/output
               c_t = f_t * c_{t-1} + i_t * tanh(x_t H_c + y_{t-1} G_c + v_c)
               y_t = o_t * tanh(c_t)          (cell state c separate from output y)

The gate matrices are stored fused, gate blocks concatenated along the last
axis in the order given by ``GATES`` (``H``: K x gN, ``G``: N x gN, ``v``: gN),
so one time step costs exactly g N (K + N) multiply-accumulates.

Networks (``RNNStack``): single layer, stacked, stacked with residual
connections, pyramidal (each level concatenates adjacent pairs of the previous
level's outputs, halving the sequence, Chan et al. 2016 "Listen, Attend and
Spell"), uni- or bi-directional (forward and backward outputs merged by
concatenation or addition), and a sparsely gated mixture of experts between
stacked layers (``SparseMoE``, Shazeer et al. 2017).

Variable-length batches: ``mask`` (N, T) with 1 at valid steps (a prefix of
each row). Padded steps hold the carry and emit zeros, so padding never changes
a valid output; the backward direction runs over each sequence reversed within
its own length, so it starts at the last valid step.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

GATES = {"rnn": ("y",), "gru": ("u", "r", "y"), "lstm": ("f", "i", "o", "c")}


# ----------------------------------------------------------------------------- masks

def lengths_to_mask(lengths: Optional[Array], batch: int, time: int) -> Array:
  """(N,) lengths -> float32 (N, T) mask; None -> all valid."""
  if lengths is None:
    return jnp.ones((batch, time), jnp.float32)
  return (jnp.arange(time)[None, :] < jnp.asarray(lengths)[:, None]).astype(jnp.float32)


def reverse_within_length(x: Array, mask: Array) -> Array:
  """Reverses each row of x (N, T, ...) within its valid prefix; padding stays put."""
  t = x.shape[1]
  lengths = mask.sum(axis=1).astype(jnp.int32)
  pos = jnp.arange(t)[None, :]
  idx = jnp.where(pos < lengths[:, None], lengths[:, None] - 1 - pos, pos)
  return jnp.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1)


# ----------------------------------------------------------------------------- cells

def _blockwise_orthogonal(g: int):
  def init(key, shape, dtype=jnp.float32):
    n = shape[0]
    keys = jax.random.split(key, g)
    return jnp.concatenate([nn.initializers.orthogonal()(k, (n, n), dtype) for k in keys], axis=1)
  return init


class Cell(nn.Module):
  """One time step of the lecture's cells (``kind``: "rnn" | "gru" | "lstm"); see the module docstring.

  Parameters: the fused H (K x gN), G (N x gN) and v (gN) of the ``GATES[kind]``
  blocks. ``__call__(carry, x_t) -> (carry, y_t)``; the LSTM carry is (c, y).
  """
  features: int
  kind: str = "lstm"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, carry, x):
    n, g = self.features, len(GATES[self.kind])
    h = self.param("H", nn.initializers.lecun_normal(), (x.shape[-1], g * n))
    gm = self.param("G", _blockwise_orthogonal(g), (n, g * n))
    v = self.param("v", nn.initializers.zeros, (g * n,))
    h, gm, v = (a.astype(self.dtype) for a in (h, gm, v))
    xh = x.astype(self.dtype) @ h + v                 # x_t H + v, every gate block at once
    y_prev = self.output(carry)
    if self.kind == "rnn":                            # y_t = tanh(x_t H + y_{t-1} G + v)
      y = jnp.tanh(xh + y_prev @ gm)
      return y, y
    if self.kind == "gru":                            # update u_t, reset r_t, output
      ur = jax.nn.sigmoid(xh[:, :2 * n] + y_prev @ gm[:, :2 * n])
      u, r = ur[:, :n], ur[:, n:]
      y = u * y_prev + (1.0 - u) * jnp.tanh(xh[:, 2 * n:] + (r * y_prev) @ gm[:, 2 * n:])
      return y, y
    z = xh + y_prev @ gm                              # lstm: forget, input, output gates, cell input
    f, i, o = (jax.nn.sigmoid(z[:, j * n:(j + 1) * n]) for j in range(3))
    c = f * carry[0] + i * jnp.tanh(z[:, 3 * n:])
    y = o * jnp.tanh(c)
    return (c, y), y

  def initial_carry(self, batch: int):
    z = jnp.zeros((batch, self.features), self.dtype)
    return (z, z) if self.kind == "lstm" else z

  @staticmethod
  def output(carry) -> Array:
    """The output y_t held in a carry (the LSTM carry is (c, y))."""
    return carry[1] if isinstance(carry, tuple) else carry


# The lecture's three cells. Subclasses (not partials) so that traces and cost
# reports name their methods by cell ("LSTMCell.initial_carry").
class RNNCell(Cell):
  """Basic RNN cell: y_t = tanh(x_t H + y_{t-1} G + v)."""
  kind: str = "rnn"


class GRUCell(Cell):
  """GRU cell with the lecture's update gate u_t, reset gate r_t and output equation."""
  kind: str = "gru"


class LSTMCell(Cell):
  """LSTM cell: forget/input/output gates, cell state c_t separate from output y_t."""
  kind: str = "lstm"


CELLS = {"rnn": RNNCell, "gru": GRUCell, "lstm": LSTMCell}


# ----------------------------------------------------------------------------- one layer over time

class _MaskedStep(nn.Module):
  """One time step that holds the carry and emits zeros where mask == 0."""
  cell: str
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, carry, inputs):
    x, m = inputs
    new_carry, y = CELLS[self.cell](self.features, dtype=self.dtype, name="cell")(carry, x)
    keep = m[:, None] > 0
    carry = jax.tree_util.tree_map(lambda a, b: jnp.where(keep, a, b), new_carry, carry)
    return carry, jnp.where(keep, y, 0.0).astype(y.dtype)


class Recurrent(nn.Module):
  """Runs a cell over (N, T, K) with ``nn.scan``; returns (final carry, outputs (N, T, N_h)).

  ``reverse=True`` runs the backward direction: each sequence reversed within
  its valid length, outputs re-aligned to the input positions. ``unroll`` is
  passed to the scan. ``initial_carry`` lets a decoder continue from a state.
  """
  cell: str = "lstm"
  features: int = 64
  reverse: bool = False
  unroll: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, mask: Optional[Array] = None, initial_carry=None):
    n, t = x.shape[:2]
    mask = jnp.ones((n, t), jnp.float32) if mask is None else mask
    if self.reverse:
      x = reverse_within_length(x, mask)
    scan = nn.scan(_MaskedStep, variable_broadcast="params", split_rngs={"params": False},
                   in_axes=1, out_axes=1, unroll=self.unroll)
    step = scan(self.cell, self.features, self.dtype, name="scan")
    if initial_carry is None:
      initial_carry = CELLS[self.cell](self.features, dtype=self.dtype, parent=None).initial_carry(n)
    carry, y = step(initial_carry, (x, mask))
    if self.reverse:
      y = reverse_within_length(y, mask)
    return carry, y


class RNNLayer(nn.Module):
  """One uni- or bi-directional recurrent layer; ``merge`` is "concat" or "add".

  Returns (outputs (N, T, F), final output (N, F)); for the bidirectional layer
  the final output merges the forward state at the last valid step with the
  backward state at step 0.
  """
  cell: str = "lstm"
  features: int = 64
  bidirectional: bool = False
  merge: str = "concat"
  unroll: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, mask: Array):
    kw = dict(cell=self.cell, features=self.features, unroll=self.unroll, dtype=self.dtype)
    carry, y = Recurrent(**kw, name="forward")(x, mask)
    final = Cell.output(carry)
    if not self.bidirectional:
      return y, final
    carry_b, y_b = Recurrent(**kw, reverse=True, name="backward")(x, mask)
    final_b = Cell.output(carry_b)
    if self.merge == "concat":
      return jnp.concatenate([y, y_b], -1), jnp.concatenate([final, final_b], -1)
    if self.merge == "add":
      return y + y_b, final + final_b
    raise ValueError(f"merge must be 'concat' or 'add', got {self.merge!r}")


# ----------------------------------------------------------------------------- mixture of experts

class SparseMoE(nn.Module):
  """Sparsely gated mixture of feed-forward experts (Shazeer et al. 2017, sec. 2.1, 4, app. A).

  Noisy top-k gating (eq. 3-5): H(x) = x W_g + eps * softplus(x W_noise) with
  eps ~ N(0, 1) during training only; G(x) = softmax(KeepTopK(H(x), k)).
  Auxiliary load-balancing loss (eq. 6-7 and app. A eq. 8-11):
  w_importance * CV(Importance)^2 + w_load * CV(Load)^2, where Load uses the
  smooth estimator P(x, i) when noisy and the hard assignment count otherwise;
  sown as ``("losses", "moe_aux")``. Expert capacity: each expert processes at
  most ``ceil(capacity_factor * k * tokens / E)`` tokens (in token order);
  overflow assignments are dropped (their gate set to 0, GShard-style).
  Padded tokens (mask 0) are never routed. Input (N, T, D) -> (N, T, D);
  the gates (N, T, E) are sown as ``("intermediates", "moe_gates")``.
  """
  num_experts: int = 4
  k: int = 2
  hidden: int = 64
  capacity_factor: float = 2.0
  noisy: bool = True
  w_importance: float = 0.1
  w_load: float = 0.1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, mask: Optional[Array] = None, train: bool = False):
    n, t, d = x.shape
    e, k = self.num_experts, self.k
    tokens = x.reshape(n * t, d)
    m = jnp.ones((n * t,), jnp.float32) if mask is None else mask.reshape(n * t).astype(jnp.float32)
    w_g = self.param("W_g", nn.initializers.zeros, (d, e))
    w_noise = self.param("W_noise", nn.initializers.zeros, (d, e))
    clean = tokens @ w_g
    noise_std = jax.nn.softplus(tokens @ w_noise) + 1e-2
    noisy = self.noisy and train
    logits = clean + jax.random.normal(self.make_rng("moe"), clean.shape) * noise_std if noisy else clean
    top_vals, top_idx = jax.lax.top_k(logits, k)
    onehot = jax.nn.one_hot(top_idx, e) * m[:, None, None]                  # (S, k, E)
    # Expert capacity: count assignments per expert in token order, drop overflow.
    capacity = int(math.ceil(self.capacity_factor * k * n * t / e))
    order = jnp.cumsum(onehot.reshape(n * t * k, e), axis=0).reshape(n * t, k, e)
    kept = onehot * (order <= capacity)
    probs = jax.nn.softmax(top_vals, axis=-1)                               # softmax over kept top-k
    gates = jnp.einsum("sk,ske->se", probs, kept)                          # (S, E)
    self.sow("intermediates", "moe_gates", gates.reshape(n, t, e))

    # Load balancing (computed on valid tokens only).
    importance = jnp.einsum("se,s->e", jnp.einsum("sk,ske->se", probs, onehot), m)
    if noisy:   # smooth load estimator, Shazeer et al. app. A eq. 9-10
      kth_in = jax.lax.top_k(logits, k)[0][:, -1:]
      kth_ex = jax.lax.top_k(logits, min(k + 1, e))[0][:, -1:]
      in_top = logits >= kth_in
      threshold = jnp.where(in_top, kth_ex, kth_in)
      p = jax.scipy.stats.norm.cdf((clean - threshold) / noise_std)
      load = jnp.einsum("se,s->e", p, m)
    else:
      load = onehot.sum(axis=(0, 1))
    aux = self.w_importance * cv_squared(importance) + self.w_load * cv_squared(load)
    self.sow("losses", "moe_aux", aux)

    init = nn.initializers.lecun_normal(batch_axis=(0,))
    w1 = self.param("W1", init, (e, d, self.hidden))
    b1 = self.param("b1", nn.initializers.zeros, (e, self.hidden))
    w2 = self.param("W2", init, (e, self.hidden, d))
    b2 = self.param("b2", nn.initializers.zeros, (e, d))
    # Every expert is evaluated densely (simple and exact); gates are zero off the top-k.
    h = jax.nn.relu(jnp.einsum("sd,edh->seh", tokens, w1) + b1)
    out = jnp.einsum("seh,ehd->sed", h, w2) + b2
    y = jnp.einsum("se,sed->sd", gates, out)
    return y.reshape(n, t, d).astype(x.dtype)


def cv_squared(v: Array) -> Array:
  """Squared coefficient of variation (Shazeer et al. 2017, eq. 6)."""
  v = v.astype(jnp.float32)
  return jnp.var(v) / (jnp.mean(v) ** 2 + 1e-10)


# ----------------------------------------------------------------------------- network

def _pyramid(x: Array, mask: Array):
  """Concatenates adjacent pairs of steps: (N, T, F) -> (N, ceil(T/2), 2F)."""
  n, t, f = x.shape
  if t % 2:
    x = jnp.pad(x, ((0, 0), (0, 1), (0, 0)))
    mask = jnp.pad(mask, ((0, 0), (0, 1)))
  x = x.reshape(n, -1, 2 * f)
  mask = mask.reshape(n, -1, 2).max(axis=-1)   # valid if its first step is valid
  return x * mask[..., None], mask


class RNNStackOptions(nn.Module):
  """The options of `RNNStack`, shared with the models built on it (`xnn.models.seq2seq`)."""
  cell: str = "lstm"
  features: int = 64
  num_layers: int = 1
  bidirectional: bool = False
  merge: str = "concat"
  residual: bool = False
  pyramidal: bool = False
  moe: Any = None
  dropout: float = 0.0
  unroll: int = 1
  dtype: Any = jnp.float32

  def stack_options(self) -> dict[str, Any]:
    """This module's values of the `RNNStackOptions` fields (the keyword arguments of `RNNStack`)."""
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(RNNStackOptions)
            if f.name not in ("parent", "name")}


class RNNStack(RNNStackOptions):
  """Stacked recurrent network (the lecture notes "Design", "Networks").

  ``num_layers`` layers of ``cell`` ("rnn" | "gru" | "lstm"), each uni- or
  bi-directional. ``residual``: layer l >= 1 adds its input to its output
  (a linear projection when the widths differ). ``pyramidal``: before each
  layer l >= 1 adjacent outputs are concatenated, halving T. ``moe``: a dict
  of ``SparseMoE`` options; a residual MoE block ``x + MoE(x)`` is inserted
  between consecutive layers. Returns (outputs (N, T', F), mask (N, T'),
  final output of the top layer (N, F)). Layer outputs are sown as
  ``intermediates/output{l}``.
  """

  @nn.compact
  def __call__(self, x: Array, mask: Optional[Array] = None, train: bool = False):
    mask = jnp.ones(x.shape[:2], jnp.float32) if mask is None else mask.astype(jnp.float32)
    x = x.astype(self.dtype) * mask[..., None]
    for i in range(self.num_layers):
      if i > 0:
        if self.moe is not None:
          x = x + SparseMoE(**dict(self.moe), dtype=self.dtype, name=f"moe{i}")(x, mask, train)
        if self.pyramidal:
          x, mask = _pyramid(x, mask)
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
      y, final = RNNLayer(self.cell, self.features, self.bidirectional, self.merge, self.unroll,
                          self.dtype, name=f"layer{i}")(x, mask)
      if self.residual and i > 0:
        skip = x if x.shape[-1] == y.shape[-1] else \
            nn.Dense(y.shape[-1], use_bias=False, dtype=self.dtype, name=f"proj{i}")(x)
        y = (y + skip) * mask[..., None]
        final = final + last_valid(skip, mask)
      x = y
      self.sow("intermediates", f"output{i}", x)
    return x, mask, final


def last_valid(x: Array, mask: Array) -> Array:
  """x at each row's last valid step: (N, T, F) -> (N, F)."""
  last = jnp.maximum(mask.sum(axis=1).astype(jnp.int32) - 1, 0)
  return jnp.take_along_axis(x, last[:, None, None], axis=1)[:, 0]
