"""Recurrent cells, networks and mappings (xnn.models.recurrent / seq2seq)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import xnn.models as models
from train_steps import eval_loss, one_step, run_compiled, task_and_batch
from xnn.data import sequence_tasks as st
from xnn.models.recurrent import Recurrent, RNNStack, SparseMoE, cv_squared, lengths_to_mask

KEY = jax.random.PRNGKey(0)


def _sig(z):
  return 1.0 / (1.0 + np.exp(-z))


def numpy_cell(kind, p, x):
  """The lecture's equations (002, "Layers: RNN / GRU / LSTM"), row vectors, one sequence batch."""
  h, g, v = (np.asarray(p[k], np.float64) for k in ("H", "G", "v"))
  n = g.shape[0]
  blk = lambda a, j: a[..., j * n:(j + 1) * n]
  y = np.zeros((x.shape[0], n))
  c = np.zeros((x.shape[0], n))
  out = []
  for t in range(x.shape[1]):
    xt = x[:, t].astype(np.float64)
    if kind == "rnn":
      y = np.tanh(xt @ h + y @ g + v)
    elif kind == "gru":   # gate order u, r, y
      u = _sig(xt @ blk(h, 0) + y @ blk(g, 0) + blk(v, 0))
      r = _sig(xt @ blk(h, 1) + y @ blk(g, 1) + blk(v, 1))
      y = u * y + (1 - u) * np.tanh(xt @ blk(h, 2) + (r * y) @ blk(g, 2) + blk(v, 2))
    else:                 # gate order f, i, o, c
      f, i, o = (_sig(xt @ blk(h, j) + y @ blk(g, j) + blk(v, j)) for j in range(3))
      c = f * c + i * np.tanh(xt @ blk(h, 3) + y @ blk(g, 3) + blk(v, 3))
      y = o * np.tanh(c)
    out.append(y)
  return np.stack(out, 1)


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_cell_matches_numpy_equations(kind):
  x = np.asarray(jax.random.normal(KEY, (3, 9, 4)), np.float32)
  layer = Recurrent(cell=kind, features=5)
  v = layer.init(KEY, x)
  p = v["params"]["scan"]["cell"]
  assert p["H"].shape == (4, 5 * len({"rnn": "y", "gru": "ury", "lstm": "fioc"}[kind]))
  # Give the biases non-zero values so v is exercised too.
  p = dict(p, v=jax.random.normal(jax.random.PRNGKey(7), p["v"].shape))
  v = {"params": {"scan": {"cell": p}}}
  _, y = layer.apply(v, x)
  ref = numpy_cell(kind, p, x)
  np.testing.assert_allclose(np.asarray(y), ref, atol=1e-5, rtol=1e-5)   # float32 vs float64
  # unroll is only a scan option: identical results.
  _, y3 = Recurrent(cell=kind, features=5, unroll=3).apply(v, x)
  np.testing.assert_allclose(np.asarray(y3), np.asarray(y), atol=1e-6)


NETWORKS = {
    "uni": dict(),
    "bi_concat": dict(bidirectional=True),
    "bi_add": dict(bidirectional=True, merge="add"),
    "stacked_gru": dict(cell="gru", num_layers=2),
    "residual_bi": dict(num_layers=3, residual=True, bidirectional=True),
    "pyramidal": dict(num_layers=3, pyramidal=True, bidirectional=True),
    "moe": dict(num_layers=2, moe=dict(num_experts=4, k=2, hidden=8, capacity_factor=100.0)),
}


@pytest.mark.parametrize("cfg", list(NETWORKS))
def test_padding_never_changes_valid_outputs(cfg):
  lengths = np.array([7, 5, 2])
  x = np.asarray(jax.random.normal(KEY, (3, 7, 4)), np.float32)
  mask = lengths_to_mask(jnp.asarray(lengths), 3, 7)
  junk = np.where(np.asarray(mask)[..., None] > 0, x, 100.0 * np.random.default_rng(0).normal(size=x.shape))
  net = RNNStack(features=6, **NETWORKS[cfg])
  v = jax.jit(net.init)(KEY, x, mask)
  apply = jax.jit(net.apply)
  y, m, final = apply(v, x, mask)
  y2, m2, final2 = apply(v, jnp.asarray(junk, jnp.float32), mask)
  valid = np.asarray(m)[..., None] > 0
  np.testing.assert_allclose(np.where(valid, y, 0), np.where(valid, y2, 0), atol=1e-5)
  np.testing.assert_allclose(final, final2, atol=1e-5)
  # Each sequence run alone, cut to its length, gives the same valid outputs: in particular the
  # backward direction starts at the sequence's last valid step, not at the padded end.
  for i, n in [(1, 5)]:
    yi, mi, fi = apply(v, x[i:i + 1, :n])
    t = int(np.asarray(m[i]).sum())
    assert yi.shape[1] == t
    np.testing.assert_allclose(yi[0], y[i, :t], atol=1e-5)
    np.testing.assert_allclose(fi[0], final[i], atol=1e-5)


def test_bidirectional_shapes_and_directions():
  x = jax.random.normal(KEY, (2, 6, 3))
  for merge, width in (("concat", 10), ("add", 5)):
    net = RNNStack(features=5, bidirectional=True, merge=merge)
    y, _, final = jax.eval_shape(lambda net=net: net.init_with_output(KEY, x)[0])
    assert y.shape == (2, 6, width) and final.shape == (2, width)
  net = RNNStack(features=5, bidirectional=True)
  v = net.init(KEY, x)
  y, _, final = net.apply(v, x)
  # Forward final = forward output at the last step; backward final = backward output at step 0.
  np.testing.assert_allclose(final[:, :5], y[:, -1, :5], atol=1e-6)
  np.testing.assert_allclose(final[:, 5:], y[:, 0, 5:], atol=1e-6)
  # The backward output at step 0 depends on the last input; the forward one does not.
  jac = jax.jit(jax.jacobian(lambda z: net.apply(v, z)[0][0, 0]))(x)
  assert np.abs(jac[:5, 0, -1]).max() == 0 and np.abs(jac[5:, 0, -1]).max() > 0


def test_pyramidal_halves_sequence():
  x = jax.random.normal(KEY, (3, 8, 3))
  mask = lengths_to_mask(jnp.array([8, 5, 1]), 3, 8)
  net = RNNStack(features=4, num_layers=3, pyramidal=True)
  v = net.init(KEY, x, mask)
  (y, m, _), inter = net.apply(v, x, mask, mutable=["intermediates"])
  shapes = [inter["intermediates"][f"output{l}"][0].shape[1] for l in range(3)]
  assert shapes == [8, 4, 2]                                # T, T/2, T/4
  np.testing.assert_array_equal(np.asarray(m).sum(1), [2, 2, 1])   # ceil(ceil(L/2)/2)
  # Level-1 input width is 2F: adjacent outputs concatenated.
  assert v["params"]["layer1"]["forward"]["scan"]["cell"]["H"].shape == (8, 16)


def _moe_apply(moe, v, x, mask=None, train=False, rng=KEY):
  fn = jax.jit(lambda v, x, mask, rng: moe.apply(v, x, mask, train, rngs={"moe": rng},
                                                 mutable=["intermediates", "losses"]))
  return fn(v, x, mask, rng)


def test_moe_topk_routing_and_capacity():
  x = jax.random.normal(KEY, (4, 8, 6))
  mask = lengths_to_mask(jnp.array([8, 8, 3, 6]), 4, 8)
  moe = SparseMoE(num_experts=5, k=2, hidden=7, capacity_factor=100.0)
  v = moe.init({"params": KEY, "moe": KEY}, x, mask)
  v = {"params": dict(v["params"], W_g=jax.random.normal(KEY, (6, 5)))}
  y, st_ = _moe_apply(moe, v, x, mask)
  gates = np.asarray(st_["intermediates"]["moe_gates"][0])
  valid = np.asarray(mask) > 0
  assert y.shape == x.shape
  nz = (gates > 0).sum(-1)
  assert np.all(nz[valid] == 2) and np.all(nz[~valid] == 0)          # exactly k experts per token
  np.testing.assert_allclose(gates.sum(-1)[valid], 1.0, atol=1e-6)   # softmax over the top k
  np.testing.assert_array_equal(np.asarray(y)[~valid], 0.0)
  # Noisy training gating still picks exactly k.
  _, st_train = _moe_apply(moe, v, x, mask, train=True, rng=jax.random.PRNGKey(3))
  assert np.all((np.asarray(st_train["intermediates"]["moe_gates"][0]) > 0).sum(-1)[valid] == 2)
  # Capacity: with capacity_factor 0.5 each expert takes at most ceil(0.5*2*32/5) = 7 tokens;
  # all tokens here go to the same two experts, so overflow must be dropped.
  v_skew = {"params": dict(v["params"], W_g=jnp.zeros((6, 5)))}      # ties -> experts 0 and 1
  small = SparseMoE(num_experts=5, k=2, hidden=7, capacity_factor=0.5)
  _, st_small = _moe_apply(small, v_skew, x)
  g = np.asarray(st_small["intermediates"]["moe_gates"][0]).reshape(32, 5)
  capacity = math.ceil(0.5 * 2 * 32 / 5)
  assert capacity == 7
  assert np.all((g > 0).sum(0) <= capacity)
  np.testing.assert_array_equal((g > 0).sum(0), [7, 7, 0, 0, 0])
  assert np.all((g[:7, :2] > 0)) and np.all(g[7:] == 0)               # first come, first served


def test_moe_load_balancing_loss_reduces_imbalance():
  x = jax.random.normal(KEY, (8, 16, 6)) + 1.0     # positive mean: W_g below routes to expert 0
  moe = SparseMoE(num_experts=4, k=1, hidden=4, capacity_factor=100.0, w_importance=1.0, w_load=1.0)
  v = moe.init({"params": KEY, "moe": KEY}, x)
  # Start with a gate strongly favouring expert 0.
  w_g = jnp.zeros((6, 4)).at[:, 0].set(1.0) + 0.1 * jax.random.normal(KEY, (6, 4))
  params = dict(v["params"], W_g=w_g)

  def hard_load(p):
    _, s = _moe_apply(moe, {"params": p}, x)
    return np.asarray((s["intermediates"]["moe_gates"][0] > 0).reshape(-1, 4).sum(0), np.float64)

  def aux(p, rng):
    _, s = _moe_apply(moe, {"params": p}, x, train=True, rng=rng)
    return s["losses"]["moe_aux"][0]

  opt = optax.adam(0.05)
  state = opt.init(params)
  step = jax.jit(lambda p, s, r: _update(opt, aux, p, s, r))
  before = hard_load(params)
  for i in range(60):
    params, state = step(params, state, jax.random.PRNGKey(i))
  after = hard_load(params)
  cv_before, cv_after = float(cv_squared(before)), float(cv_squared(after))
  assert cv_before > 1.0               # nearly all 128 tokens on one of 4 experts: CV^2 near 3
  assert cv_after < 0.25 * cv_before


def _update(opt, loss_fn, p, s, *args):
  g = jax.grad(loss_fn)(p, *args)
  upd, s = opt.update(g, s, p)
  return optax.apply_updates(p, upd), s


# ----------------------------------------------------------------------------- registered models

def _ce(logits, labels, mask=None):
  l = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return l.mean() if mask is None else (l * mask).sum() / mask.sum()


@pytest.mark.parametrize("name", models.names("recurrent"))
def test_registered_recurrent_model_trains_one_step(name):
  """One step of xnn train's train step (SGD 0.1, momentum 0.9), compiled: finite loss and gradient, and the
  inference-mode loss on the batch falls."""
  info = models.info(name)
  model, task, batch = task_and_batch(name, batch=8)
  if name != "rnn_seq2seq":
    batch["inputs"] = jax.random.normal(KEY, batch["inputs"].shape)
    batch["label"] = jax.random.randint(KEY, batch["label"].shape, 0, info.num_classes)

  def run(batch):
    state, after, metrics = one_step(model, task, batch, info.rng_streams)
    return metrics, eval_loss(model, task, state, batch), eval_loss(model, task, after, batch)

  metrics, before, after = run_compiled(run, batch)
  assert np.isfinite(float(metrics["loss"]))
  assert np.isfinite(float(metrics["grad_norm"])) and float(metrics["grad_norm"]) > 0
  assert float(after) < float(before)


def test_many_to_one_lengths_and_image_input():
  model = models.build("lstm_classifier", features=8)
  x = jax.random.normal(KEY, (2, 8, 8, 1))          # digits as images: 8 rows of 8 features
  apply = jax.jit(model.apply)
  v = jax.jit(model.init)(KEY, x)
  assert apply(v, x).shape == (2, 10)
  short = apply(v, x, lengths=jnp.array([3, 8]))
  np.testing.assert_allclose(short[0], apply(v, x[:1, :3])[0], atol=1e-5)


def test_rnn_seq2seq_greedy_decode_matches_teacher_forcing():
  d = st.make_task("copy", 64, seed=0, length=5)
  model = models.build("rnn_seq2seq", features=32, embed_dim=16)
  x, dec, y, ym = (jnp.asarray(d[k]) for k in ("inputs", "decoder_inputs", "targets", "targets_mask"))
  params = jax.jit(model.init)(KEY, x, dec)["params"]
  opt = optax.adam(1e-2)
  state = opt.init(params)
  loss = lambda p: _ce(model.apply({"params": p}, x, dec), y, ym)
  step = jax.jit(lambda p, s: _update(opt, loss, p, s))
  for _ in range(10):
    params, state = step(params, state)
  toks, logits = jax.jit(lambda p, a: model.apply({"params": p}, a, 6, method=model.decode))(params, x[:8])
  forced = jax.jit(lambda p, a, b: model.apply({"params": p}, a, b))
  assert toks.shape == (8, 6) and toks.dtype == jnp.int32 and logits.shape == (8, 6, st.vocab_size(10))
  tf = forced(params, x[:8], dec[:8])
  np.testing.assert_allclose(logits[:, 0], tf[:, 0], atol=1e-5)          # first step: BOS fed
  np.testing.assert_array_equal(toks[:, 0], jnp.argmax(tf[:, 0], -1))
  # Feeding the greedy tokens back under teacher forcing reproduces every step.
  fed = jnp.concatenate([jnp.full((8, 1), st.BOS, jnp.int32), toks[:, :-1]], 1)
  np.testing.assert_allclose(forced(params, x[:8], fed), logits, atol=1e-5)


def test_lstm_macs_closed_form():
  cost = pytest.importorskip("xnn.cost")
  if not hasattr(cost, "analyze"):
    pytest.skip("xnn.cost.analyze not available")
  t, k, n = 12, 7, 9
  layer = Recurrent(cell="lstm", features=n)
  x = jnp.ones((1, t, k))
  v = layer.init(KEY, x)
  report = cost.analyze(lambda z: layer.apply(v, z), x)
  assert report.macs == t * 4 * n * (k + n)   # T * 4 gates * N * (K + N), lecture's LSTM equations
