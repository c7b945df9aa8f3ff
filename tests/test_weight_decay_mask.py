"""``optimizer.weight_decay_mask`` (xnn/train/schedules.py) and the float16 refusal (xnn/configs/schema.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xnn import models
from xnn.configs import schema
from xnn.configs.default import get_config
from xnn.train.schedules import create_optimizer, decay_mask, decayed_paths


def _optimizer_config(name, weight_decay, mask):
  c = get_config()
  c.optimizer.name = name
  c.optimizer.weight_decay = weight_decay
  c.optimizer.weight_decay_mask = mask
  return schema.resolve(c).optimizer


@pytest.fixture(scope="module")
def resnet20_params():
  """ResNet-20's parameter tree (abstract init), filled with random values (a bias at 0 decays to nothing)."""
  model = models.build("resnet20", num_classes=10)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))["params"]
  return _normal(shapes, seed=0)


def _normal(tree, seed):
  """A tree of ``tree``'s shapes filled with standard normal float32 values (NumPy: no compilation per shape)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: rng.standard_normal(x.shape, np.float32), tree)


def test_resnet20_decays_its_conv_and_dense_kernels_only(resnet20_params):
  flags = decayed_paths(resnet20_params)
  decayed = sorted(k for k, f in flags.items() if f)
  kept = sorted(k for k, f in flags.items() if not f)
  # ResNet-20: 19 convolutions and the classifier, the "20 weighted layers" of He et al. 2015
  assert len(decayed) == 20
  assert all(k.endswith("['conv']['kernel']") for k in decayed if not k.startswith("['head']"))
  assert "['head']['fc']['kernel']" in decayed
  assert "['head']['fc']['bias']" in kept
  assert "['stage1_block1']['conv_bn1']['bn']['scale']" in kept
  assert "['stage3_block3']['conv_bn2']['bn']['bias']" in kept
  assert all(k.endswith(("['bias']", "['scale']")) for k in kept)
  assert len(kept) == 2 * 19 + 1           # a scale and an offset per BatchNorm, the classifier's bias
  assert all(decayed_paths(resnet20_params, "all").values())


def test_biases_of_more_than_one_axis_are_not_decayed():
  params = {"attn": {"W_q": jnp.zeros((4, 8, 2)), "W_q_bias": jnp.zeros((4, 2))},
            "moe": {"W1": jnp.zeros((2, 3, 5)), "b1": jnp.zeros((2, 5))},
            "ln": {"scale": jnp.zeros((8,)), "bias": jnp.zeros((8,))}, "cell": {"v": jnp.zeros((6,))},
            "embed": {"embedding": jnp.zeros((10, 8))}}
  assert decay_mask(params) == {"attn": {"W_q": True, "W_q_bias": False}, "moe": {"W1": True, "b1": False},
                                "ln": {"scale": False, "bias": False}, "cell": {"v": False},
                                "embed": {"embedding": True}}


def _updates(tx, params, grads_seq):
  """The updates of ``tx`` for each gradient in turn (one jitted program)."""

  def run(params, grads_seq):
    state, out = tx.init(params), []
    for g in grads_seq:
      u, state = tx.update(g, state, params)
      out.append(u)
    return out

  return jax.device_get(jax.jit(run)(params, grads_seq))


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_a_leaf_out_of_the_mask_gets_the_update_without_weight_decay(name, resnet20_params):
  params = {k: resnet20_params[k] for k in ("stage1_block1", "head")}   # conv, BN, dense: 8 leaves compile fast
  lr = lambda step: 0.1
  grads_seq = [_normal(params, seed) for seed in (1, 2)]   # two steps: momentum / moments carry the first
  masked = _updates(create_optimizer(_optimizer_config(name, 0.05, "no_bn_bias"), lr), params, grads_seq)
  plain = _updates(create_optimizer(_optimizer_config(name, 0.0, "all"), lr), params, grads_seq)
  everywhere = _updates(create_optimizer(_optimizer_config(name, 0.05, "all"), lr), params, grads_seq)
  flags = decayed_paths(params)
  for m, p, e in zip(masked, plain, everywhere):
    flat = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(m)}
    flat_p = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(p)}
    flat_e = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(e)}
    for path, decayed in flags.items():
      if decayed:
        assert not np.array_equal(flat[path], flat_p[path]), path
        np.testing.assert_array_equal(flat[path], flat_e[path], err_msg=path)
      else:
        np.testing.assert_array_equal(flat[path], flat_p[path], err_msg=path)
        assert not np.array_equal(flat_e[path], flat_p[path]), path


def test_the_field_defaults_to_all_and_refuses_other_values():
  assert get_config().optimizer.weight_decay_mask == "all"
  c = get_config()
  c.optimizer.weight_decay_mask = "no_bias"
  with pytest.raises(schema.ConfigError, match=r"optimizer.weight_decay_mask.*'all', 'no_bn_bias'.*'no_bias'"):
    schema.resolve(c)


def test_float16_is_refused_pointing_to_bfloat16():
  c = get_config()
  c.model.dtype = "float16"
  with pytest.raises(schema.ConfigError) as e:
    schema.resolve(c)
  msg = str(e.value)
  assert "\n" not in msg and "'model.dtype'" in msg and "loss scaling" in msg and "use bfloat16" in msg
  c.model.dtype = "bfloat16"
  schema.resolve(c)


def test_a_masked_optimizer_state_checkpoints_and_restores_exactly(tmp_path, resnet20_params):
  """The masked SGD state goes through xnn's verified orbax checkpoint and continues identically."""
  from xnn.train import checkpoint as ckpt
  from xnn.train.step import TrainState
  tx = create_optimizer(_optimizer_config("sgd", 5e-3, "no_bn_bias"), lambda step: 0.1)
  state = jax.jit(lambda p: TrainState.create(apply_fn=None, params=p, tx=tx))(resnet20_params)
  grads = [_normal(resnet20_params, seed) for seed in (1, 2)]
  step_fn = jax.jit(lambda st, g: st.apply_gradients(grads=g))
  state = step_fn(state, grads[0])       # momentum is not zero any more
  manager = ckpt.create_manager(str(tmp_path), keep=1)
  ckpt.save(manager, 1, state, ckpt.position_save_args(1))
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
  step, restored, _ = ckpt.restore_latest(manager, abstract, ckpt.position_restore_args)
  assert step == 1
  assert jax.tree.structure(restored.opt_state) == jax.tree.structure(state.opt_state)
  for x, y in zip(jax.tree.leaves(step_fn(state, grads[1])), jax.tree.leaves(step_fn(restored, grads[1]))):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
