"""Recurrent input-output mappings (the lecture notes "Design", "Mappings") and the RNN encoder-decoder.

* many-to-one  ``RNNClassifier``: (N, T, F) -> logits (N, classes), from the
  top layer's output at each sequence's last valid step (bi-directional: the
  forward state at the last valid step merged with the backward state at step 0).
  Image batches (N, H, W, C) are read as H steps of W*C features (the 8x8 digits
  as 8 rows of 8 features).
* one-to-many  ``RNNGenerator``: a vector (N, F) is the input of step 0 (zeros
  after), giving ``length`` steps of logits (N, length, classes).
* many-to-many ``RNNTagger``: (N, T, F) -> per-step logits (N, T, classes).
* encoder-decoder ``RNNSeq2Seq`` (Sutskever et al. 2014; Cho et al. 2014): an
  embedded token sequence is encoded by a stacked GRU/LSTM whose final states
  initialise the decoder; optionally the decoder output queries the encoder
  outputs with the lecture's encoder-attention-decoder layer (Luong et al.
  2015 "general" score), and ``[decoder, context]`` is classified into the
  vocabulary. ``__call__(inputs, decoder_inputs, train)`` is teacher forcing;
  ``decode(inputs, max_len)`` is greedy decoding from ``bos_id``.

Token id 0 is padding (``pad_id``) and 1 is BOS (``bos_id``), matching
``xnn.data.sequence_tasks``.

Registered: rnn_classifier, gru_classifier, lstm_classifier, bilstm_classifier,
pyramidal_lstm_classifier, moe_lstm_classifier (input (8, 8), 10 classes: the
digits), lstm_tagger (input (8, 8)), lstm_generator (input (16,)),
rnn_seq2seq (input (10,) int tokens, vocab 14 = the task vocabulary for
``vocab=10``).
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from xnn.models.attention import EncoderDecoderAttention
from xnn.models.recurrent import Recurrent, RNNStack, RNNStackOptions, lengths_to_mask
from xnn.models.registry import register, same_vocabulary

Array = jax.Array


def _as_sequence(x: Array) -> Array:
  """(N, T, F) stays; (N, H, W, C) -> (N, H, W*C); (N, T) -> (N, T, 1)."""
  if x.ndim == 2:
    return x[..., None]
  return x.reshape(x.shape[0], x.shape[1], -1)


class _Mapping(RNNStackOptions):
  """An ``RNNStack`` (its options are this module's) with a linear head of ``num_classes``."""
  num_classes: int = 10

  def stack(self, name: str = "rnn", **override) -> RNNStack:
    return RNNStack(**{**self.stack_options(), **override}, name=name)


class RNNClassifier(_Mapping):
  """Many inputs to one output: sequence classification (the lecture notes "Design", "Mappings")."""

  @nn.compact
  def __call__(self, x: Array, train: bool = False, lengths: Optional[Array] = None):
    x = _as_sequence(x)
    mask = lengths_to_mask(lengths, x.shape[0], x.shape[1])
    _, _, final = self.stack()(x, mask, train)
    final = nn.Dropout(self.dropout, deterministic=not train)(final)
    return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(final)


class RNNTagger(_Mapping):
  """Many inputs to many outputs: per-step labels (N, T, classes); padded steps give the bias."""

  @nn.compact
  def __call__(self, x: Array, train: bool = False, lengths: Optional[Array] = None):
    x = _as_sequence(x)
    mask = lengths_to_mask(lengths, x.shape[0], x.shape[1])
    y, _, _ = self.stack(pyramidal=False)(x, mask, train)
    return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(y)


class RNNGenerator(_Mapping):
  """One input to many outputs: the vector feeds step 0; ``length`` steps of logits."""
  length: int = 8

  @nn.compact
  def __call__(self, v: Array, train: bool = False):
    v = v.reshape(v.shape[0], -1)
    x = jnp.zeros((v.shape[0], self.length, v.shape[-1]), v.dtype).at[:, 0].set(v)
    y, _, _ = self.stack(pyramidal=False, bidirectional=False)(x, None, train)
    return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(y)


class RNNSeq2Seq(nn.Module):
  """GRU/LSTM encoder-decoder with teacher forcing, optional attention and greedy decoding."""
  vocab_size: int = 14
  num_classes: Optional[int] = None   # output vocabulary; defaults to vocab_size
  cell: str = "lstm"
  embed_dim: int = 32
  features: int = 64
  num_layers: int = 1
  attention: bool = True
  dropout: float = 0.0
  unroll: int = 1
  pad_id: int = 0
  bos_id: int = 1
  dtype: Any = jnp.float32

  def setup(self):
    kw = dict(cell=self.cell, features=self.features, unroll=self.unroll, dtype=self.dtype)
    self.embed = nn.Embed(self.vocab_size, self.embed_dim, name="embed")
    self.encoder = [Recurrent(**kw, name=f"encoder{i}") for i in range(self.num_layers)]
    self.decoder = [Recurrent(**kw, name=f"decoder{i}") for i in range(self.num_layers)]
    if self.attention:
      self.attend = EncoderDecoderAttention(qk_features=self.features, dtype=self.dtype, name="attention")
    self.drop = nn.Dropout(self.dropout)
    self.head = nn.Dense(self.num_classes or self.vocab_size, dtype=self.dtype, name="head")

  def encode(self, inputs: Array, train: bool = False):
    """Tokens (N, T) -> (outputs (N, T, F), mask (N, T), final carry per layer)."""
    mask = (inputs != self.pad_id).astype(jnp.float32)
    x = self.embed(inputs).astype(self.dtype)
    carries = []
    for i, layer in enumerate(self.encoder):
      if i:
        x = self.drop(x, deterministic=not train)
      carry, x = layer(x, mask)
      carries.append(carry)
    return x, mask, carries

  def _decode(self, tokens: Array, enc, carries, train: bool):
    """Decoder layers over tokens (N, T') from ``carries``; returns (logits, new carries)."""
    memory, mask, _ = enc
    x = self.embed(tokens).astype(self.dtype)
    new = []
    for i, layer in enumerate(self.decoder):
      if i:
        x = self.drop(x, deterministic=not train)
      carry, x = layer(x, None, carries[i])
      new.append(carry)
    if self.attention:
      x = jnp.concatenate([x, self.attend(x, memory, mask)], axis=-1)
    x = self.drop(x, deterministic=not train)
    return self.head(x), new

  def __call__(self, inputs: Array, decoder_inputs: Optional[Array] = None, train: bool = False):
    """Teacher forcing: logits (N, T_out, vocab). Without ``decoder_inputs``: greedy logits."""
    if decoder_inputs is None:
      return self.decode(inputs, inputs.shape[1])[1]
    enc = self.encode(inputs, train)
    return self._decode(decoder_inputs, enc, enc[2], train)[0]

  def decode(self, inputs: Array, max_len: int):
    """Greedy decoding: returns (tokens int32 (N, max_len), logits (N, max_len, vocab))."""
    enc = self.encode(inputs)
    carries = enc[2]
    tok = jnp.full((inputs.shape[0], 1), self.bos_id, jnp.int32)
    toks, logits = [], []
    for _ in range(max_len):
      lg, carries = self._decode(tok, enc, carries, False)
      tok = jnp.argmax(lg, -1).astype(jnp.int32)
      toks.append(tok)
      logits.append(lg)
    return jnp.concatenate(toks, 1), jnp.concatenate(logits, 1)


# ----------------------------------------------------------------------------- registry

_DIGITS = dict(family="recurrent", input_shape=(8, 8), num_classes=10)


@register("rnn_classifier", **_DIGITS, cell="rnn")
@register("gru_classifier", **_DIGITS, cell="gru")
@register("lstm_classifier", **_DIGITS, cell="lstm")
@register("bilstm_classifier", **_DIGITS, cell="lstm", bidirectional=True)
@register("pyramidal_lstm_classifier", **_DIGITS, cell="lstm", num_layers=3, pyramidal=True)
@register("moe_lstm_classifier", **_DIGITS, cell="lstm", num_layers=2, rng_streams=("dropout", "moe"),
          moe=(("num_experts", 4), ("k", 2), ("hidden", 64)))
def rnn_classifier(**kw) -> RNNClassifier:
  """Many-to-one recurrent classifier (the lecture notes "Design", RNN mappings)."""
  if isinstance(kw.get("moe"), tuple):
    kw["moe"] = dict(kw["moe"])
  return RNNClassifier(**kw)


register("lstm_tagger", **_DIGITS,
         description='Many-to-many LSTM sequence labeller (the lecture notes "Design", RNN mappings).')(RNNTagger)
register("lstm_generator", family="recurrent", input_shape=(16,), num_classes=10,
         description='One-to-many LSTM generator (the lecture notes "Design", RNN mappings).')(RNNGenerator)
register("rnn_seq2seq", family="recurrent", input_shape=(10,), num_classes=14,
         description="LSTM encoder-attention-decoder with teacher forcing and greedy decoding.",
         )(same_vocabulary(RNNSeq2Seq))
