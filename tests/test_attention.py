"""Attention layers and the Transformer (xnn.models.attention)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import xnn.models as models
from train_steps import eval_loss, one_step, run_compiled, task_and_batch
from xnn.data import sequence_tasks as st
from xnn.models.attention import (EncoderDecoderAttention, MultiHeadAttention, TransformerClassifier,
                                  TransformerDecoder, TransformerEncoder, causal_mask, save_attention_png,
                                  sinusoidal_encoding)

KEY = jax.random.PRNGKey(0)


def _softmax_rows(s):
  e = np.exp(s - s.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("heads", [1, 3])
def test_multi_head_matches_lecture_equations(heads):
  m, k, p, l, n = 7, 6, 2, 4, 5   # M inputs of K features; W_q, W_k: K x P; W_v: K x L; W_o: L x N
  x = np.asarray(jax.random.normal(KEY, (2, m, k)), np.float32)
  layer = MultiHeadAttention(heads, qk_features=p, v_features=l, out_features=n)
  v = layer.init(KEY, x)
  w = {name: np.asarray(a, np.float64) for name, a in v["params"].items()}
  assert w["W_q"].shape == (heads, k, p) and w["W_v"].shape == (heads, k, l) and w["W_o"].shape == (heads, l, n)
  y, inter = layer.apply(v, x, mutable=["intermediates"])
  for b in range(2):
    xt = x[b].astype(np.float64)                                   # X^T, M x K
    ref = 0
    for i in range(heads):                                          # Y^T = sum_i A_i^T X^T W_v,i W_o,i
      a = _softmax_rows(xt @ w["W_q"][i] @ w["W_k"][i].T @ xt.T / np.sqrt(p))
      np.testing.assert_allclose(inter["intermediates"]["attention_weights"][0][b, i], a, atol=1e-5)
      ref = ref + a @ xt @ w["W_v"][i] @ w["W_o"][i]
    np.testing.assert_allclose(np.asarray(y[b]), ref, atol=1e-5, rtol=1e-5)


def test_encoder_decoder_attention_matches_lecture():
  m, k, d, p = 6, 5, 3, 4
  x = np.asarray(jax.random.normal(KEY, (1, m, k)), np.float32)
  z = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (1, d, p)), np.float32)
  layer = EncoderDecoderAttention(qk_features=p)
  v = layer.init(KEY, z, x)
  w_k = np.asarray(v["params"]["W_k"], np.float64)                 # K x P
  valid = np.array([[1, 1, 1, 1, 0, 0]], np.float32)
  y = layer.apply(v, z, x, valid)
  for dd in range(d):   # a_d = softmax(X^T W_k z_d / sqrt(P)), y_d = a_d^T X^T, over valid inputs only
    a = _softmax_rows((x[0, :4] @ w_k @ z[0, dd]) / np.sqrt(p))
    np.testing.assert_allclose(np.asarray(y[0, dd]), a @ x[0, :4], atol=1e-5)


def test_sinusoidal_encoding_formula():
  pe = np.asarray(sinusoidal_encoding(11, 8))
  pos, i = 7, 2   # PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...) (Vaswani sec. 3.5)
  np.testing.assert_allclose(pe[pos, 2 * i], np.sin(pos / 10000 ** (2 * i / 8)), atol=1e-6)
  np.testing.assert_allclose(pe[pos, 2 * i + 1], np.cos(pos / 10000 ** (2 * i / 8)), atol=1e-6)


def test_causal_mask_blocks_the_future():
  d = 16
  x = jax.random.normal(KEY, (1, 5, d))
  memory = jax.random.normal(jax.random.PRNGKey(1), (1, 4, d))
  dec = TransformerDecoder(num_layers=2, num_heads=2, d_ff=32, dropout=0.0)
  v = dec.init(KEY, x, memory)
  jac = np.asarray(jax.jit(jax.jacobian(lambda z: dec.apply(v, z, memory)))(x))[0, :, :, 0, :, :]   # (T, d, T', d)
  dep = np.abs(jac).max(axis=(1, 3))                                                        # (T, T')
  assert np.all(dep[np.triu_indices(5, 1)] == 0)      # d out_t / d in_t' == 0 for t' > t
  assert np.all(dep[np.tril_indices(5)] > 0)
  np.testing.assert_array_equal(np.asarray(causal_mask(3))[0, 0], np.tril(np.ones((3, 3), bool)))


@pytest.mark.parametrize("pre_norm", [False, True])
def test_encoder_padding_mask(pre_norm):
  x = jax.random.normal(KEY, (2, 6, 16))
  valid = jnp.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], jnp.float32)
  enc = TransformerEncoder(num_layers=2, num_heads=4, d_ff=32, dropout=0.0, pre_norm=pre_norm)
  v = enc.init(KEY, x, valid)
  assert ("final_norm" in v["params"]) == pre_norm
  apply = jax.jit(enc.apply)
  y = apply(v, x, valid)
  junk = x.at[0, 4:].set(50.0)
  np.testing.assert_allclose(apply(v, junk, valid)[0, :4], y[0, :4], atol=1e-5)
  np.testing.assert_allclose(apply(v, x[:1, :4])[0], y[0, :4], atol=1e-5)
  assert np.abs(np.asarray(apply(v, junk)[0, :4] - y[0, :4])).max() > 1e-3   # without a mask it leaks


def test_classifier_lengths_and_dropout():
  model = TransformerClassifier(num_classes=3, d_model=16, num_heads=2, d_ff=32, dropout=0.5)
  x = jax.random.normal(KEY, (2, 8, 8, 1))
  v = jax.jit(model.init)(KEY, x)
  apply = jax.jit(model.apply, static_argnames="train")
  np.testing.assert_allclose(apply(v, x, lengths=jnp.array([5, 8]))[0], apply(v, x[:1, :5])[0], atol=1e-5)
  a = apply(v, x, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
  b = apply(v, x, train=True, rngs={"dropout": jax.random.PRNGKey(2)})
  assert np.abs(np.asarray(a - b)).max() > 0
  np.testing.assert_array_equal(apply(v, x), apply(v, x))


def test_save_attention_png(tmp_path):
  path = tmp_path / "sub" / "align.png"
  w = jax.nn.softmax(jax.random.normal(KEY, (2, 3, 5, 6)), -1)
  assert save_attention_png(w, str(path), x_labels=list("abcdef"), title="alignment") == str(path)
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert os.listdir(tmp_path / "sub") == ["align.png"]   # no temporary file left behind


def _ce(logits, labels, mask=None):
  l = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return l.mean() if mask is None else (l * mask).sum() / mask.sum()


def _update(opt, loss_fn, p, s):
  loss, g = jax.value_and_grad(loss_fn)(p)
  upd, s = opt.update(g, s, p)
  return optax.apply_updates(p, upd), s, loss


@pytest.mark.parametrize("name", models.names("attention"))
def test_registered_attention_model_trains_one_step(name):
  """One step of xnn train's train step (Adam 1e-3, no dropout), compiled: the loss on the batch falls."""
  info = models.info(name)
  model, task, batch = task_and_batch(name, batch=8, dropout=0.0)
  if name != "transformer_seq2seq":
    batch["inputs"] = jax.random.normal(KEY, batch["inputs"].shape)
    batch["label"] = jax.random.randint(KEY, batch["label"].shape, 0, info.num_classes)

  def run(batch):
    state, after, metrics = one_step(model, task, batch, info.rng_streams, tx=optax.adam(1e-3))
    return metrics, eval_loss(model, task, after, batch)

  metrics, after = run_compiled(run, batch)
  assert np.isfinite(float(metrics["loss"])) and float(after) < float(metrics["loss"])


def test_transformer_learns_reverse_and_decodes_consistently():
  train = st.make_task("reverse", 2048, seed=0, length=5, vocab=10)
  test = st.make_task("reverse", 256, seed=1, length=5, vocab=10)
  model = models.build("transformer_seq2seq", d_model=32, num_heads=4, d_ff=64, num_layers=2, dropout=0.0)
  j = lambda d: tuple(jnp.asarray(d[k]) for k in ("inputs", "decoder_inputs", "targets", "targets_mask"))
  x, dec, y, ym = j(train)
  params = model.init(KEY, x[:2], dec[:2])["params"]
  opt = optax.adam(3e-3)
  state = opt.init(params)

  @jax.jit
  def step(p, s, i):
    sl = lambda a: jax.lax.dynamic_slice_in_dim(a, (i * 64) % 2048, 64)
    return _update(opt, lambda q: _ce(model.apply({"params": q}, sl(x), sl(dec), train=True), sl(y), sl(ym)), p, s)

  for i in range(250):
    params, state, loss = step(params, state, i)
  tx, tdec, ty, tym = j(test)
  toks, logits = jax.jit(lambda p, a: model.apply({"params": p}, a, 6, method=model.decode))(params, tx)
  acc = float(((toks == ty) * tym).sum() / tym.sum())
  print(f"reverse token accuracy {acc:.3f}")
  assert acc > 0.6, acc           # chance over 10 symbols + EOS is about 0.1
  # Greedy decoding is consistent with teacher forcing on its own output.
  forced = jax.jit(lambda p, a, b: model.apply({"params": p}, a, b))
  tf = forced(params, tx, tdec)
  np.testing.assert_array_equal(toks[:, 0], jnp.argmax(tf[:, 0], -1))
  fed = jnp.concatenate([jnp.full((256, 1), st.BOS, jnp.int32), toks[:, :-1]], 1)
  np.testing.assert_allclose(forced(params, tx, fed), logits, atol=1e-4)


def test_attention_macs_closed_form():
  cost = pytest.importorskip("xnn.cost")
  if not hasattr(cost, "analyze"):
    pytest.skip("xnn.cost.analyze not available")
  m, k, p, l, n, h = 9, 12, 4, 5, 7, 3
  layer = MultiHeadAttention(h, qk_features=p, v_features=l, out_features=n)
  x = jnp.ones((1, m, k))
  v = layer.init(KEY, x)
  macs = cost.analyze(lambda z: layer.apply(v, z), x).macs
  # Per head: projections M K (2P + L), scores M M P, mixing M M L, output M L N (lecture's shapes).
  assert macs == h * (m * k * (2 * p + l) + m * m * p + m * m * l + m * l * n)
