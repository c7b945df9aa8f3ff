"""Attention layers and the Transformer (the lecture notes "Design", "Attention"; Vaswani et al. 2017).

Lecture notation: input X^T is M x K (M vectors of K features). Head i has
W_q,i and W_k,i (K x P), W_v,i (K x L) and W_o,i (L x N):

    A_i^T = softmax_row(X^T W_q,i W_k,i^T X / sqrt(P))          (M x M)
    Y_i^T = A_i^T X^T W_v,i                                      (M x L)
    Y^T   = sum_i Y_i^T W_o,i                                    (M x N)

``MultiHeadAttention`` implements this (H = 1 is the single-headed layer;
queries may come from another sequence: cross attention). Projections have no
bias, as in the lecture's equations (``use_bias=True`` adds them). Masks are
boolean (N, 1 or H, M_q, M_kv), True = may attend. Attention weights are sown
as ``("intermediates", "attention_weights")`` (N, H, M_q, M_kv).

``EncoderDecoderAttention`` is the lecture's encoder-attention-decoder layer:
a decoder query z_d (1 x P) scores the encoder outputs X^T (M x K) with
a_d = softmax(X^T W_k z_d / sqrt(P)) and returns y_d = a_d^T X^T (1 x K).

Transformer (Vaswani et al. 2017, sec. 3): sinusoidal positional encoding
(sec. 3.5), encoder layer = self-attention + position-wise FFN, decoder layer =
causal self-attention + cross-attention + FFN; each sub-layer is
``LayerNorm(x + Dropout(sublayer(x)))`` (post-norm, the paper) or
``x + Dropout(sublayer(LayerNorm(x)))`` with a final LayerNorm (``pre_norm``).
Embeddings are scaled by sqrt(d_model) (sec. 3.4).

Registered: ``transformer_classifier`` (encoder + masked mean pool + linear,
input (8, 8), 10 classes) and ``transformer_seq2seq`` (encoder-decoder over
tokens, input (10,), vocabulary 14 = ``xnn.data.sequence_tasks`` with vocab=10).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from xnn.models.registry import register, same_vocabulary

Array = jax.Array


# ----------------------------------------------------------------------------- masks

def padding_mask(valid: Array) -> Array:
  """(N, M) valid flags -> (N, 1, 1, M) attention mask over keys."""
  return valid.astype(bool)[:, None, None, :]


def causal_mask(m: int) -> Array:
  """(1, 1, M, M): position t may attend to t' <= t."""
  return jnp.tril(jnp.ones((m, m), bool))[None, None]


def sinusoidal_encoding(length: int, d_model: int) -> Array:
  """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...) (Vaswani et al. sec. 3.5)."""
  pos = np.arange(length)[:, None]
  i = np.arange(0, d_model, 2)[None, :]
  angle = pos / np.power(10000.0, i / d_model)
  pe = np.zeros((length, d_model), np.float32)
  pe[:, 0::2] = np.sin(angle)
  pe[:, 1::2] = np.cos(angle[:, : d_model // 2])
  return jnp.asarray(pe)


# ----------------------------------------------------------------------------- attention

class MultiHeadAttention(nn.Module):
  """Multi-headed (self or cross) attention in the lecture's notation.

  ``num_heads`` H, ``qk_features`` P, ``v_features`` L, ``out_features`` N
  (defaults: P = L = K / H, N = K). ``__call__(x_q, x_kv=None, mask=None)``.
  """
  num_heads: int = 1
  qk_features: Optional[int] = None
  v_features: Optional[int] = None
  out_features: Optional[int] = None
  dropout: float = 0.0
  use_bias: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_q: Array, x_kv: Optional[Array] = None, mask: Optional[Array] = None,
               train: bool = False) -> Array:
    x_kv = x_q if x_kv is None else x_kv
    k_in = x_q.shape[-1]
    h = self.num_heads
    p = self.qk_features or k_in // h
    lv = self.v_features or k_in // h                 # the lecture's L
    n = self.out_features or k_in
    init = nn.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(0,))

    def proj(name, x, shape, eq):
      w = self.param(name, init, shape).astype(self.dtype)
      y = jnp.einsum(eq, x.astype(self.dtype), w)
      if self.use_bias:
        y = y + self.param(name + "_bias", nn.initializers.zeros, (h, shape[-1]))[:, None, :].astype(self.dtype)
      return y

    q = proj("W_q", x_q, (h, x_q.shape[-1], p), "nmk,hkp->nhmp")
    k = proj("W_k", x_kv, (h, x_kv.shape[-1], p), "nmk,hkp->nhmp")
    v = proj("W_v", x_kv, (h, x_kv.shape[-1], lv), "nmk,hkl->nhml")
    scores = jnp.einsum("nhqp,nhkp->nhqk", q, k) / jnp.sqrt(p).astype(self.dtype)
    if mask is not None:
      scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
    a = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(self.dtype)
    self.sow("intermediates", "attention_weights", a)
    a = nn.Dropout(self.dropout, deterministic=not train)(a)
    y = jnp.einsum("nhqk,nhkl->nhql", a, v)
    w_o = self.param("W_o", init, (h, lv, n)).astype(self.dtype)
    out = jnp.einsum("bhql,hlo->bqo", y, w_o)                  # sum_i Y_i^T W_o,i
    if self.use_bias:
      out = out + self.param("W_o_bias", nn.initializers.zeros, (n,)).astype(self.dtype)
    return out


class EncoderDecoderAttention(nn.Module):
  """Lecture's encoder-attention-decoder layer: y_d = softmax(X^T W_k z_d / sqrt(P))^T X^T.

  ``__call__(z (N, D, P), x (N, M, K), valid (N, M) or None) -> (N, D, K)``;
  W_k is K x P, stored untransposed as the lecture recommends.
  """
  qk_features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z: Array, x: Array, valid: Optional[Array] = None) -> Array:
    w_k = self.param("W_k", nn.initializers.lecun_normal(), (x.shape[-1], self.qk_features))
    keys = x.astype(self.dtype) @ w_k.astype(self.dtype)                        # X^T W_k (N, M, P)
    scores = jnp.einsum("nmp,ndp->ndm", keys, z.astype(self.dtype)) / jnp.sqrt(self.qk_features)
    if valid is not None:
      scores = jnp.where(valid.astype(bool)[:, None, :], scores, jnp.finfo(scores.dtype).min)
    a = jax.nn.softmax(scores.astype(jnp.float32), -1).astype(self.dtype)
    self.sow("intermediates", "attention_weights", a)
    return jnp.einsum("ndm,nmk->ndk", a, x.astype(self.dtype))


# ----------------------------------------------------------------------------- transformer

class FeedForward(nn.Module):
  """Position-wise FFN: max(0, x W1 + b1) W2 + b2 (Vaswani et al. eq. 2)."""
  d_ff: int
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    y = nn.relu(nn.Dense(self.d_ff, dtype=self.dtype, name="fc1")(x))
    y = nn.Dropout(self.dropout, deterministic=not train)(y)
    return nn.Dense(x.shape[-1], dtype=self.dtype, name="fc2")(y)


class LayerOptions(nn.Module):
  """Options of the Transformer's encoder and decoder layers (Vaswani et al. sec. 3.1-3.3, 5.4)."""
  num_heads: int = 4
  d_ff: int = 256
  dropout: float = 0.1
  pre_norm: bool = False
  dtype: Any = jnp.float32


def _options(module: nn.Module, options: type) -> dict[str, Any]:
  """``module``'s values of the fields of the options class ``options`` (keyword arguments)."""
  return {f.name: getattr(module, f.name) for f in dataclasses.fields(options) if f.name not in ("parent", "name")}


class _Sublayers(LayerOptions):
  """Residual + LayerNorm wrapper shared by encoder and decoder layers."""

  def residual(self, name: str, x: Array, fn, train: bool) -> Array:
    drop = nn.Dropout(self.dropout, deterministic=not train)
    if self.pre_norm:
      return x + drop(fn(nn.LayerNorm(dtype=self.dtype, name=f"{name}_norm")(x)))
    return nn.LayerNorm(dtype=self.dtype, name=f"{name}_norm")(x + drop(fn(x)))

  def mha(self, name: str) -> MultiHeadAttention:
    return MultiHeadAttention(self.num_heads, dropout=self.dropout, use_bias=True,
                              dtype=self.dtype, name=name)


def _ffn_sublayer(layer: _Sublayers, x: Array, train: bool) -> Array:
  """The position-wise FFN sub-layer ``ffn`` of an encoder or decoder layer, with its residual and norm."""
  return layer.residual("ffn", x, lambda h: FeedForward(layer.d_ff, layer.dropout, layer.dtype, name="ffn")(h, train),
                        train)


class TransformerEncoderLayer(_Sublayers):
  """Self-attention + FFN sub-layers (Vaswani et al. sec. 3.1)."""

  @nn.compact
  def __call__(self, x: Array, mask: Optional[Array] = None, train: bool = False) -> Array:
    x = self.residual("self_attention", x, lambda h: self.mha("self_attention")(h, None, mask, train), train)
    return _ffn_sublayer(self, x, train)


class TransformerDecoderLayer(_Sublayers):
  """Causal self-attention + encoder-decoder attention + FFN (Vaswani et al. sec. 3.1)."""

  @nn.compact
  def __call__(self, x: Array, memory: Array, self_mask: Optional[Array], memory_mask: Optional[Array],
               train: bool = False) -> Array:
    x = self.residual("self_attention", x, lambda h: self.mha("self_attention")(h, None, self_mask, train), train)
    x = self.residual("cross_attention", x, lambda h: self.mha("cross_attention")(h, memory, memory_mask, train),
                      train)
    return _ffn_sublayer(self, x, train)


class StackOptions(LayerOptions):
  """Options of the encoder and decoder stacks: ``num_layers`` layers of `LayerOptions`."""
  num_layers: int = 2


def _final_norm(stack: StackOptions, x: Array) -> Array:
  """The pre-norm stack's final LayerNorm ``final_norm`` (identity for post-norm)."""
  return nn.LayerNorm(dtype=stack.dtype, name="final_norm")(x) if stack.pre_norm else x


class TransformerEncoder(StackOptions):
  """Stack of encoder layers over (N, M, d_model) already position-encoded inputs."""

  @nn.compact
  def __call__(self, x: Array, valid: Optional[Array] = None, train: bool = False) -> Array:
    mask = None if valid is None else padding_mask(valid)
    for i in range(self.num_layers):
      x = TransformerEncoderLayer(**_options(self, LayerOptions), name=f"layer{i}")(x, mask, train)
      self.sow("intermediates", f"output{i}", x)
    return _final_norm(self, x)


class TransformerDecoder(StackOptions):
  """Stack of decoder layers with causal self-attention and padding-masked cross-attention."""

  @nn.compact
  def __call__(self, x: Array, memory: Array, memory_valid: Optional[Array] = None,
               train: bool = False) -> Array:
    self_mask = causal_mask(x.shape[1])
    memory_mask = None if memory_valid is None else padding_mask(memory_valid)
    for i in range(self.num_layers):
      x = TransformerDecoderLayer(**_options(self, LayerOptions), name=f"layer{i}")(
          x, memory, self_mask, memory_mask, train)
    return _final_norm(self, x)


class _TransformerFields(StackOptions):
  """The stack options plus the model width and the longest sequence."""
  d_model: int = 64
  max_len: int = 512

  def stack_kw(self) -> dict[str, Any]:
    return _options(self, StackOptions)

  def positions(self, x: Array, train: bool, drop: nn.Module) -> Array:
    x = x + sinusoidal_encoding(x.shape[1], self.d_model).astype(x.dtype)[None]
    return drop(x, deterministic=not train)


class TransformerClassifier(_TransformerFields):
  """Transformer encoder over (N, T, F) features + masked mean pool + linear head.

  Image batches (N, H, W, C) are read as H tokens of W*C features.
  """
  num_classes: int = 10

  @nn.compact
  def __call__(self, x: Array, train: bool = False, lengths: Optional[Array] = None) -> Array:
    x = x.reshape(x.shape[0], x.shape[1], -1) if x.ndim != 3 else x
    n, t = x.shape[:2]
    valid = jnp.ones((n, t), jnp.float32) if lengths is None else \
        (jnp.arange(t)[None] < jnp.asarray(lengths)[:, None]).astype(jnp.float32)
    h = nn.Dense(self.d_model, dtype=self.dtype, name="embed")(x.astype(self.dtype))
    h = self.positions(h, train, nn.Dropout(self.dropout))
    h = TransformerEncoder(**self.stack_kw(), name="encoder")(h, valid, train)
    pooled = (h * valid[..., None]).sum(1) / jnp.maximum(valid.sum(1, keepdims=True), 1.0)
    return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(pooled)


class TransformerSeq2Seq(_TransformerFields):
  """Transformer encoder-decoder over tokens (Vaswani et al. 2017), shared embeddings.

  ``__call__(inputs (N, T_in), decoder_inputs (N, T_out), train)`` -> logits
  (N, T_out, vocab); ``decode(inputs, max_len)`` -> greedy (tokens, logits).
  """
  vocab_size: int = 14
  num_classes: Optional[int] = None
  pad_id: int = 0
  bos_id: int = 1

  def setup(self):
    self.embed = nn.Embed(self.vocab_size, self.d_model, name="embed")
    self.drop = nn.Dropout(self.dropout)
    self.encoder = TransformerEncoder(**self.stack_kw(), name="encoder")
    self.decoder = TransformerDecoder(**self.stack_kw(), name="decoder")
    self.head = nn.Dense(self.num_classes or self.vocab_size, dtype=self.dtype, name="head")

  def _embed(self, tokens: Array, train: bool) -> Array:
    x = self.embed(tokens).astype(self.dtype) * jnp.sqrt(self.d_model).astype(self.dtype)
    return self.positions(x, train, self.drop)

  def encode(self, inputs: Array, train: bool = False):
    valid = (inputs != self.pad_id).astype(jnp.float32)
    return self.encoder(self._embed(inputs, train), valid, train), valid

  def decode_logits(self, decoder_inputs: Array, memory: Array, valid: Array, train: bool = False) -> Array:
    return self.head(self.decoder(self._embed(decoder_inputs, train), memory, valid, train))

  def __call__(self, inputs: Array, decoder_inputs: Optional[Array] = None, train: bool = False) -> Array:
    """Teacher forcing; without ``decoder_inputs``, the greedy decoding logits (T_out = T_in)."""
    if decoder_inputs is None:
      return self.decode(inputs, inputs.shape[1])[1]
    memory, valid = self.encode(inputs, train)
    return self.decode_logits(decoder_inputs, memory, valid, train)

  def decode(self, inputs: Array, max_len: int):
    """Greedy decoding (re-runs the causal decoder on the growing prefix)."""
    memory, valid = self.encode(inputs)
    n = inputs.shape[0]
    buf = jnp.full((n, max_len + 1), self.bos_id, jnp.int32)
    logits = None
    for t in range(max_len):
      logits = self.decode_logits(buf[:, : t + 1], memory, valid)
      buf = buf.at[:, t + 1].set(jnp.argmax(logits[:, t], -1).astype(jnp.int32))
    return buf[:, 1:], logits


# ----------------------------------------------------------------------------- visualisation

def save_attention_png(weights, path: str, x_labels: Optional[Sequence[str]] = None,
                       y_labels: Optional[Sequence[str]] = None, title: str = "") -> str:
  """Saves a (M_q, M_kv) attention matrix as an alignment heat map (atomic write).

  Extra leading axes (batch, heads) are averaged out. Returns ``path``.
  """
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  w = np.asarray(weights, np.float32)
  while w.ndim > 2:
    w = w.mean(axis=0)
  fig, ax = plt.subplots(figsize=(1 + 0.4 * w.shape[1], 1 + 0.4 * w.shape[0]))
  im = ax.imshow(w, cmap="viridis", vmin=0.0, vmax=max(float(w.max()), 1e-8), aspect="auto")
  ax.set_xlabel("key / input position")
  ax.set_ylabel("query / output position")
  if x_labels is not None:
    ax.set_xticks(range(len(x_labels)), list(x_labels))
  if y_labels is not None:
    ax.set_yticks(range(len(y_labels)), list(y_labels))
  if title:
    ax.set_title(title)
  fig.colorbar(im, ax=ax)
  d = os.path.dirname(os.path.abspath(path))
  os.makedirs(d, exist_ok=True)
  fd, tmp = tempfile.mkstemp(suffix=".png", dir=d)
  try:
    with os.fdopen(fd, "wb") as f:
      fig.savefig(f, format="png", bbox_inches="tight")
    os.replace(tmp, path)
  finally:
    plt.close(fig)
    if os.path.exists(tmp):
      os.remove(tmp)
  return path


# ----------------------------------------------------------------------------- registry

register("transformer_classifier", family="attention", input_shape=(8, 8), num_classes=10,
         description="Transformer encoder + pooled linear head (Vaswani et al. 2017).")(TransformerClassifier)
register("transformer_seq2seq", family="attention", input_shape=(10,), num_classes=14,
         description="Transformer encoder-decoder with teacher forcing and greedy decoding (Vaswani et al. 2017).",
         )(same_vocabulary(TransformerSeq2Seq))
