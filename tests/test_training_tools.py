"""Training tools of the train step: auxiliary-head losses, Mixup/CutMix, gradient accumulation, EMA.

Each is checked against its definition (the paper's equation, or the one-batch step it must
equal), then through ``train_and_evaluate`` on both input paths: a run interrupted and resumed
ends bit-identical to an uninterrupted one, and ``xnn eval --ema`` reads the moving average.
"""

from __future__ import annotations

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.stats

import xnn.models as M
from train_steps import task_and_batch
from xnn.commands import CommandError
from xnn.commands.eval import evaluate_run
from xnn.data.mixing import SOFT_TARGET_KEY, mix_batch
from xnn.train import checkpoint as ckpt
from xnn.train import tasks, train_and_evaluate
from xnn.train.step import create_train_state, make_train_step, micro_batches


# ----------------------------------------------------------------------------- auxiliary heads


def test_auxiliary_losses_are_weighted_into_the_loss_and_evaluation_uses_the_main_head():
  rng = np.random.default_rng(0)
  main, aux1, aux2 = (jnp.asarray(rng.normal(size=(4, 10)), jnp.float32) for _ in range(3))
  batch = {"image": jnp.zeros((4, 8, 8, 1)), "label": jnp.array([0, 3, 3, 9])}
  task = tasks.ImageClassification(("image",), "label", aux_loss_weight=0.3)
  ce = lambda z: float(optax.softmax_cross_entropy_with_integer_labels(z, batch["label"]).mean())
  loss, metrics = task.loss((main, aux1, aux2), batch)
  # GoogLeNet (Szegedy et al. 2014, sec. 5): total = main + 0.3 x each auxiliary classifier's loss.
  assert float(loss) == pytest.approx(ce(main) + 0.3 * (ce(aux1) + ce(aux2)), rel=1e-6)
  assert float(metrics["loss"]) == pytest.approx(ce(main), rel=1e-6)
  assert float(metrics["aux_loss"]) == pytest.approx(ce(aux1) + ce(aux2), rel=1e-6)
  assert float(metrics["accuracy"]) == float(np.mean(np.argmax(main, -1) == batch["label"]))
  sums = task.eval_sums((main, aux1), batch)
  assert float(sums["loss_sum"]) == pytest.approx(4 * ce(main), rel=1e-6)


def test_googlenet_trains_with_its_auxiliary_weight_by_default(tiny_config):
  from xnn.train.train import make_task
  from xnn.data.datasets import load_dataset
  tiny_config.model.name = "googlenet"
  ds = load_dataset(tiny_config.data)
  assert make_task(tiny_config, ds).aux_loss_weight == 0.3
  tiny_config.model.aux_loss_weight = 0.5
  assert make_task(tiny_config, ds).aux_loss_weight == 0.5


# ----------------------------------------------------------------------------- Mixup and CutMix


def _mix_many(n, mixup_alpha, cutmix_alpha, side=16):
  """``n`` independent mixes of a batch of 8 distinct constant images (image i has value i + 1)."""
  values = jnp.arange(1, 9, dtype=jnp.float32)
  batch = {"image": jnp.broadcast_to(values[:, None, None, None], (8, side, side, 1)),
           "label": jnp.arange(8, dtype=jnp.int32)}
  fn = jax.jit(jax.vmap(lambda k: mix_batch(batch, k, image_key="image", label_key="label", num_classes=8,
                                            mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha)))
  mixed, info = fn(jax.random.split(jax.random.key(0), n))
  return batch, mixed, jax.device_get(info)


@pytest.mark.parametrize("alpha", [0.2, 1.0])
def test_mixup_lambda_is_beta_and_labels_mix_as_the_pixels(alpha):
  batch, mixed, info = _mix_many(2000, alpha, 0.0, side=4)
  # Zhang et al. 2018, eq. 1: lam ~ Beta(alpha, alpha). Kolmogorov-Smirnov at 2000 draws.
  assert scipy.stats.kstest(info["lam"], scipy.stats.beta(alpha, alpha).cdf).pvalue > 1e-3
  np.testing.assert_array_equal(info["share"], info["lam"])
  # x = lam x_i + (1 - lam) x_j (x_i = i + 1 everywhere) and target = lam y_i + (1 - lam) y_j.
  x = np.asarray(mixed["image"][:, :, 0, 0, 0])                      # (draws, 8)
  lam, j = info["lam"][:, None], info["order"]
  np.testing.assert_allclose(x, lam * (np.arange(8) + 1) + (1 - lam) * (j + 1), rtol=1e-5, atol=1e-5)
  onehot = np.eye(8)
  np.testing.assert_allclose(mixed[SOFT_TARGET_KEY], lam[..., None] * onehot[np.arange(8)] +
                             (1 - lam[..., None]) * onehot[j], atol=1e-6)


def test_cutmix_lambda_is_beta_and_labels_mix_as_the_pixels():
  batch, mixed, info = _mix_many(2000, 0.0, 1.0, side=32)
  # Yun et al. 2019: lam ~ Beta(alpha, alpha) (alpha = 1: uniform).
  assert scipy.stats.kstest(info["lam"], scipy.stats.beta(1.0, 1.0).cdf).pvalue > 1e-3
  x = np.asarray(mixed["image"][..., 0])                             # (draws, 8, 32, 32)
  j, share = info["order"], info["share"][:, None]
  kept = (x == (np.arange(8) + 1)[None, :, None, None]).mean(axis=(2, 3))   # share of its own pixels
  pasted = (x == (j + 1)[..., None, None]).mean(axis=(2, 3))                 # share of its partner's
  moved = j != np.arange(8)                                          # an image mixed with another one
  # The target weighs each label by the share of the pixels it keeps (Yun et al. 2019, eq. 2).
  np.testing.assert_allclose(np.where(moved, kept, share), np.broadcast_to(share, kept.shape), atol=1e-6)
  np.testing.assert_allclose(np.where(moved, pasted, 1 - share), np.broadcast_to(1 - share, kept.shape), atol=1e-6)
  onehot = np.eye(8)
  np.testing.assert_allclose(mixed[SOFT_TARGET_KEY], share[..., None] * onehot[np.arange(8)] +
                             (1 - share[..., None]) * onehot[j], atol=1e-6)
  # The box is at most 32 sqrt(1 - lam) a side (rounded down, clipped at the border), so its area is at most
  # 1 - lam of the image: the target follows the pasted pixels, not the drawn lam.
  assert np.all(info["share"] >= info["lam"] - 1e-6) and np.mean(info["share"] > info["lam"] + 0.05) > 0.3


def test_mixing_is_only_for_image_classification(tiny_config, tmp_path):
  from xnn.configs.schema import ConfigError
  tiny_config.model.name = "lstm_classifier"
  tiny_config.data.as_sequence = "rows"
  tiny_config.data.image_size = 0
  tiny_config.data.channels = 0
  tiny_config.data.mixup_alpha = 0.2
  with pytest.raises(ConfigError, match="data.mixup_alpha.*image classification"):
    train_and_evaluate(tiny_config, str(tmp_path / "w"))
  assert not os.path.exists(tmp_path / "w")


# ----------------------------------------------------------------------------- gradient accumulation


def test_micro_batches_take_every_kth_example():
  x = jnp.arange(12)
  np.testing.assert_array_equal(micro_batches(x, 3), [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]])


def _batch(n, side=32, classes=10, seed=0):
  k1, k2 = jax.random.split(jax.random.key(seed))
  return {"inputs": jax.random.normal(k1, (n, side, side, 3)), "label": jax.random.randint(k2, (n,), 0, classes)}


def test_accumulated_step_equals_the_one_batch_step_without_batchnorm():
  model, task, _ = task_and_batch("lenet5")       # no BatchNorm, no dropout
  batch = _batch(16)
  tx = optax.sgd(0.1, momentum=0.9)
  state = create_train_state(model, tx, jax.random.key(0), (batch["inputs"][:1],))
  steps = {k: jax.jit(make_train_step(model, task, lr_fn=optax.constant_schedule(0.1), grad_accum_steps=k))
           for k in (1, 4)}
  one, m1 = steps[1](state, batch, jax.random.key(1))
  four, m4 = steps[4](state, batch, jax.random.key(1))
  for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(four.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  for key in ("loss", "accuracy", "grad_norm"):
    assert float(m4[key]) == pytest.approx(float(m1[key]), rel=1e-5)


def test_accumulation_with_batchnorm_normalises_each_micro_batch():
  """k micro-batches of B/k examples = BatchNorm groups of B/k (bn_stats='groups') over the same examples."""
  model = M.build("resnet20", num_classes=10)
  batch = _batch(8, side=8)
  task = tasks.ImageClassification(("inputs",), "label")
  tx = optax.sgd(0.1)
  state = create_train_state(model, tx, jax.random.key(0), (batch["inputs"][:1],))
  lr = optax.constant_schedule(0.1)
  accumulated = jax.jit(make_train_step(model, task, lr_fn=lr, grad_accum_steps=2))(state, batch, jax.random.key(1))
  # micro-batch j holds examples j, j+2, ...: the same examples as consecutive groups of the reordered batch
  order = np.concatenate([np.arange(j, 8, 2) for j in range(2)])
  grouped_batch = jax.tree.map(lambda x: x[order], batch)
  grouped = jax.jit(make_train_step(model, task, lr_fn=lr, bn_groups=2))(state, grouped_batch, jax.random.key(1))
  for a, b in zip(jax.tree.leaves((accumulated[0].params, accumulated[0].batch_stats)),
                  jax.tree.leaves((grouped[0].params, grouped[0].batch_stats))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_accumulation_cuts_activation_memory():
  """XLA's buffer assignment of the compiled step: temporary memory falls about k-fold."""
  model, task, _ = task_and_batch("lenet5")
  batch = _batch(256)
  state = create_train_state(model, optax.sgd(0.1), jax.random.key(0), (batch["inputs"][:1],))
  temp = {}
  for k in (1, 4):
    step = jax.jit(make_train_step(model, task, lr_fn=optax.constant_schedule(0.1), grad_accum_steps=k))
    temp[k] = step.lower(state, batch, jax.random.key(1)).compile().memory_analysis().temp_size_in_bytes
  assert temp[1] / temp[4] > 2.5, temp


# ----------------------------------------------------------------------------- EMA


class _Affine(nn.Module):
  @nn.compact
  def __call__(self, x, train=False):
    return nn.Dense(3)(x.reshape(x.shape[0], -1))


def test_ema_follows_its_recursion():
  model = _Affine()
  task = tasks.ImageClassification(("inputs",), "label")
  batch = {"inputs": jax.random.normal(jax.random.key(0), (4, 2, 2, 1)), "label": jnp.array([0, 1, 2, 1])}
  tx = optax.sgd(0.5)
  state = create_train_state(model, tx, jax.random.key(0), (batch["inputs"][:1],), ema=True)
  step = jax.jit(make_train_step(model, task, lr_fn=optax.constant_schedule(0.5), ema_decay=0.9))
  expected = state.params
  for _ in range(3):
    state, _ = step(state, batch, jax.random.key(1))
    expected = jax.tree.map(lambda e, p: 0.9 * e + 0.1 * p, expected, state.params)
    for a, b in zip(jax.tree.leaves(state.ema_params), jax.tree.leaves(expected)):
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  assert any(float(jnp.max(jnp.abs(a - b))) > 1e-3 for a, b in zip(jax.tree.leaves(state.ema_params),
                                                                   jax.tree.leaves(state.params)))


# ----------------------------------------------------------------------------- whole runs


def _tools(cfg, epochs):
  cfg.train.num_epochs = epochs
  cfg.train.ema_decay = 0.9
  cfg.train.grad_accum_steps = 2
  cfg.optimizer.weight_decay = 5e-4
  cfg.optimizer.weight_decay_mask = "no_bn_bias"
  cfg.data.mixup_alpha = 0.2
  cfg.data.cutmix_alpha = 1.0
  cfg.schedule.name = "constant"        # the rate does not depend on the run's length: it may grow
  cfg.train.eval_every_epochs = 1.0
  return cfg


def _weights(workdir, ema):
  return ckpt.restore_weights(workdir, ema=ema)[1]


@pytest.mark.slow
@pytest.mark.parametrize("resident", ["on", "off"])
def test_tools_resume_bit_identically_and_xnn_eval_reads_the_moving_average(tiny_config, tmp_path, resident):
  tiny_config.train.device_resident = resident
  a, b = str(tmp_path / "a"), str(tmp_path / "b")
  full = train_and_evaluate(_tools(tiny_config, 2), a)
  train_and_evaluate(_tools(tiny_config, 1), b)             # stops after one epoch ...
  resumed = train_and_evaluate(_tools(tiny_config, 2), b)   # ... and resumes to two
  for ema in (False, True):
    wa, wb = _weights(a, ema), _weights(b, ema)
    for x, y in zip(jax.tree.leaves(wa), jax.tree.leaves(wb)):
      np.testing.assert_array_equal(x, y)
  assert resumed.test_accuracy_ema == full.test_accuracy_ema and full.test_accuracy_ema is not None
  with open(os.path.join(a, "final.json")) as f:
    final = json.load(f)
  assert final["test_accuracy_ema"] == full.test_accuracy_ema
  evals = [json.loads(line) for line in open(os.path.join(a, "metrics.jsonl")) if '"eval"' in line]
  assert all({"test_accuracy_ema", "test_loss_ema"} <= set(r) for r in evals) and len(evals) == 2
  if resident == "off":
    return
  result = evaluate_run(a, ema=True)
  assert result["top1_accuracy"] == final["test_accuracy_ema"] and result["weights"] == "moving average"
  assert os.path.exists(os.path.join(a, "eval_ema.json")) and os.path.exists(os.path.join(a, "confusion_ema.png"))
  assert evaluate_run(a)["top1_accuracy"] == final["test_accuracy"]


def test_xnn_eval_ema_needs_a_moving_average(tiny_config, tmp_path):
  tiny_config.train.num_epochs = 1
  train_and_evaluate(tiny_config, str(tmp_path))
  with pytest.raises(CommandError, match="keeps no moving average"):
    evaluate_run(str(tmp_path), ema=True)
  assert ckpt.restore_weights(str(tmp_path))[1]["params"]      # the weights themselves are there


def test_init_from_starts_the_moving_average_at_the_weights(tiny_config, tmp_path):
  tiny_config.train.num_epochs = 1
  train_and_evaluate(tiny_config, str(tmp_path / "src"))
  tiny_config.train.init_from = str(tmp_path / "src")
  tiny_config.train.ema_decay = 0.5
  tiny_config.optimizer.learning_rate = 1e-12        # the weights barely move: the average stays on them
  tiny_config.schedule.name = "constant"
  train_and_evaluate(tiny_config, str(tmp_path / "dst"))
  src = _weights(str(tmp_path / "src"), False)
  ema = _weights(str(tmp_path / "dst"), True)
  for x, y in zip(jax.tree.leaves(src["params"]), jax.tree.leaves(ema["params"])):
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-9)
