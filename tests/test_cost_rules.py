"""Hand-computed tests of the counting rules, control flow, liveness and receptive field.

Every expected number is worked out in the comment next to it from the layer
geometry (not from running the code).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from xnn.cost import ReceptiveFieldError, analyze

f32 = jnp.float32
S = jax.ShapeDtypeStruct


def conv(x, w, stride, padding, groups=1, dil=(1, 1)):
  return lax.conv_general_dilated(x, w, stride, padding, rhs_dilation=dil, feature_group_count=groups,
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))


def test_strided_grouped_dilated_conv():
  # x 2x17x19x8, 4 groups (2 input channels each), 12 filters of 3x3, stride (2,3),
  # padding ((1,2),(0,1)), dilation (2,1).
  # H: k_eff = 2*(3-1)+1 = 5, H_out = floor((17+1+2-5)/2)+1 = 8
  # W: k_eff = 3,             W_out = floor((19+0+1-3)/3)+1 = 6
  # MACs = N*Ho*Wo*Cout * kh*kw * Cin/groups = 2*8*6*12 * 9 * 2 = 20,736 (padded taps count)
  fn = lambda x, w: conv(x, w, (2, 3), ((1, 2), (0, 1)), groups=4, dil=(2, 1))
  x, w = S((2, 17, 19, 8), f32), S((3, 3, 2, 12), f32)
  assert jax.eval_shape(fn, x, w).shape == (2, 8, 6, 12)
  rep = analyze(fn, x, w, params_argnums=(1,))
  assert rep.macs == 20_736
  assert rep.params == 3 * 3 * 2 * 12
  assert rep.other_ops == 0 and rep.flops == 2 * 20_736
  # receptive field (Araujo et al. eq. 1-3): H: r = d(k-1)+1 = 5, j = 2, P = 1; W: r = 3, j = 3, P = 0
  assert rep.receptive_field == {"size": [5, 3], "stride": [2, 3], "padding": [1, 0]}


def test_depthwise_conv():
  # depthwise 3x3 over 32 channels at 14x14 (stride 1, pad 1): MACs = 14*14*32*9 = 56,448
  fn = lambda x, w: conv(x, w, (1, 1), ((1, 1), (1, 1)), groups=32)
  rep = analyze(fn, S((1, 14, 14, 32), f32), S((3, 3, 1, 32), f32), params_argnums=(1,))
  assert rep.macs == 56_448


def test_transposed_conv_counts_no_inserted_zeros():
  # lhs dilation 2 (a stride-2 transposed conv) of a 1x4x4x3 map with a 3x3x3x5 kernel,
  # padding 1/2 -> 8x8 output. Real taps: each of the 16 inputs meets 9 kernel taps:
  # 16 * 9 * 3 * 5 = 2,160 MACs = out (8*8*5) * taps (9) * Cin (3) / lhs_dilation (4)
  fn = lambda x, w: lax.conv_general_dilated(x, w, (1, 1), ((1, 2), (1, 2)), lhs_dilation=(2, 2),
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
  x, w = S((1, 4, 4, 3), f32), S((3, 3, 3, 5), f32)
  assert jax.eval_shape(fn, x, w).shape == (1, 8, 8, 5)
  assert analyze(fn, x, w, params_argnums=(1,)).macs == 2_160


def test_batched_einsum():
  # 'bhqd,bhkd->bhqk': b=2, h=3, q=5, k=7, d=4 -> 2*3*5*7 outputs x 4 contractions = 840 MACs
  fn = lambda a, b: jnp.einsum("bhqd,bhkd->bhqk", a, b)
  rep = analyze(fn, S((2, 3, 5, 4), f32), S((2, 3, 7, 4), f32))
  assert rep.macs == 840
  # 'bij,bjk->bik' with b=4, i=5, j=6, k=7: 4*5*7*6 = 840 as well; with a bias add of 4*5*7 = 140
  fn2 = lambda a, b, c: jnp.einsum("bij,bjk->bik", a, b) + c
  rep2 = analyze(fn2, S((4, 5, 6), f32), S((4, 6, 7), f32), S((7,), f32))
  assert rep2.macs == 840 and rep2.counts.adds == 140 and rep2.flops == 2 * 840 + 140


def test_pooling():
  # max pool 3x3 / 2, padding 1 on 1x8x8x4 -> 4x4x4 outputs, 8 comparisons each = 512
  import flax.linen as nn
  rep = analyze(lambda x: nn.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1))), S((1, 8, 8, 4), f32))
  assert rep.macs == 0 and rep.counts.cmps == 4 * 4 * 4 * 8
  # receptive field: r = 3, j = 2, P = 1
  assert rep.receptive_field == {"size": 3, "stride": 2, "padding": 1}
  # avg pool 2x2 / 2 on 1x8x8x4 -> 64 outputs: 3 adds and 1 divide each
  rep = analyze(lambda x: nn.avg_pool(x, (2, 2), (2, 2)), S((1, 8, 8, 4), f32))
  assert rep.counts.adds == 64 * 3 and rep.counts.divs == 64 and rep.macs == 0


def test_softmax_and_transcendentals():
  # softmax over 10 classes for 2 rows: 20 exp, 20 divides (or reciprocal-multiplies), 2*9 max
  rep = analyze(jax.nn.softmax, S((2, 10), f32))
  assert rep.counts.exps == 20
  assert rep.counts.divs + rep.counts.muls >= 20
  assert rep.counts.cmps >= 18
  # tanh, logistic, rsqrt, log: one transcendental per element each (4 x 6 = 24)
  rep = analyze(lambda x: jnp.tanh(x) + jax.nn.sigmoid(x) + lax.rsqrt(x) + jnp.log(x), S((2, 3), f32))
  assert rep.counts.exps == 24 and rep.counts.adds == 18


def test_scan_multiplies_by_length():
  # 10 steps of h = tanh(h @ W + x_t), h 2x16, W 16x16:
  # per step 2*16*16 = 512 MACs, 32 adds, 32 tanh -> x10
  def fn(w, xs):
    def step(h, x):
      h = jnp.tanh(h @ w + x)
      return h, h
    return lax.scan(step, jnp.zeros((2, 16)), xs)[1]
  rep = analyze(fn, S((16, 16), f32), S((10, 2, 16), f32), params_argnums=(0,))
  assert rep.macs == 5_120 and rep.counts.exps == 320 and rep.counts.adds == 320


def test_cond_takes_costliest_branch():
  # branch 0: x * 2 (8 muls); branch 1: x @ W with x 2x4, W 4x4: 32 MACs. Max = branch 1.
  def fn(p, x, w):
    return lax.cond(p, lambda x: x @ w, lambda x: x * 2.0, x)
  rep = analyze(fn, S((), jnp.bool_), S((2, 4), f32), S((4, 4), f32), params_argnums=(2,), input_argnum=1)
  assert rep.macs == 32
  node = next(n for n in rep.graph.nodes if n.primitive == "cond")
  assert sorted(b.macs for b in node.branches) == [0, 32]
  (cf,) = rep.to_dict()["control_flow"]
  assert cf["primitive"] == "cond" and sorted(b["macs"] for b in cf["branches"]) == [0, 32]
  assert sorted(b.muls for b in node.branches) == [0, 8]


def test_while_with_known_trip_count():
  # for i in range(7): h = h @ W  (h 3x5, W 5x5: 75 MACs) -> 525 MACs
  def fn(x, w):
    return lax.while_loop(lambda c: c[0] < 7, lambda c: (c[0] + 1, c[1] @ w), (0, x))[1]
  rep = analyze(fn, S((3, 5), f32), S((5, 5), f32), params_argnums=(1,))
  assert rep.macs == 7 * 75
  assert not rep.warnings
  node = next(n for n in rep.graph.nodes if n.primitive == "while")
  assert node.trip_count == 7
  # fori_loop(2, 12) with static bounds: 10 trips
  rep = analyze(lambda x, w: lax.fori_loop(2, 12, lambda i, h: h @ w, x), S((3, 5), f32), S((5, 5), f32),
                params_argnums=(1,))
  assert rep.macs == 10 * 75


def test_while_with_unknown_trip_count_is_flagged():
  def fn(x, w):
    return lax.while_loop(lambda h: jnp.sum(h) < 100.0, lambda h: h @ w, x)
  rep = analyze(fn, S((3, 5), f32), S((5, 5), f32), params_argnums=(1,))
  assert rep.macs == 75 and rep.warnings and "trip count unknown" in rep.warnings[0]


def test_unknown_primitive_is_listed():
  rep = analyze(lambda a: jnp.linalg.cholesky(a), S((4, 4), f32))
  assert "cholesky" in rep.unknown_primitives


def test_liveness_peak():
  # x (1000 f32 = 4,000 B) -> a = x+1 -> b = a*2 -> sum(b). While b is computed, a and b are
  # both live: 8,000 B of intermediates; the sum's output is 4 B.
  rep = analyze(lambda x: jnp.sum((x + 1.0) * 2.0), S((1000,), f32), input_argnum=None)
  assert rep.peak_activation_bytes == 8_000
  assert rep.peak_bytes >= 12_000


def test_receptive_field_chain_formula():
  # conv 3x3 dilation 2 (k_eff 5), maxpool 2/2, conv 5x5:
  # r0 = sum_l (k_l - 1) prod_{i<l} s_i + 1 = 4*1 + 1*1 + 4*2 + 1 = 14, stride 2
  def fn(x, w1, w2):
    y = conv(x, w1, (1, 1), ((2, 2), (2, 2)), dil=(2, 2))
    y = lax.reduce_window(y, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    return conv(y, w2, (1, 1), ((0, 0), (0, 0)))
  rep = analyze(fn, S((1, 32, 32, 3), f32), S((3, 3, 3, 4), f32), S((5, 5, 4, 4), f32), params_argnums=(1, 2))
  # P = 2 (first conv) + 0 + 0 = 2
  assert rep.receptive_field == {"size": 14, "stride": 2, "padding": 2}
  assert [L.receptive_field["size"] for L in rep.layers if L.receptive_field][-1] == 14


def test_receptive_field_join_and_misalignment():
  # Two 3x3 branches; aligned: both pad 1 -> centres agree, r = 3.
  aligned = lambda x, w: conv(x, w, (1, 1), ((1, 1), (1, 1))) + conv(x, w, (1, 1), ((1, 1), (1, 1)))
  args = (S((1, 8, 8, 2), f32), S((3, 3, 2, 2), f32))
  rep = analyze(aligned, *args, params_argnums=(1,))
  assert not rep.misaligned and rep.receptive_field["size"] == 3
  # Misaligned: one branch pads (0, 2): same output size but its window is shifted by one pixel.
  bad = lambda x, w: conv(x, w, (1, 1), ((1, 1), (1, 1))) + conv(x, w, (1, 1), ((0, 2), (1, 1)))
  rep = analyze(bad, *args, params_argnums=(1,))
  assert rep.misaligned
  # the exact support is the union of the windows [-1, 1] and [0, 2] along H: r = 4, P = 1
  assert rep.receptive_field == {"size": [4, 3], "stride": 1, "padding": 1}
  with pytest.raises(ReceptiveFieldError):
    analyze(bad, *args, params_argnums=(1,), strict_receptive_field=True)


def test_receptive_field_strided_slice_and_pad():
  # option-A shortcut: x[:, ::2, ::2] then channel zero-pad: r = 1, j = 2, P = 0
  fn = lambda x: jnp.pad(x[:, ::2, ::2, :], ((0, 0), (0, 0), (0, 0), (2, 2)))
  assert analyze(fn, S((1, 8, 8, 4), f32)).receptive_field == {"size": 1, "stride": 2, "padding": 0}
  # spatial zero-pad by 3 then 3x3 valid conv: r = 3, P = 3
  fn = lambda x, w: conv(jnp.pad(x, ((0, 0), (3, 3), (3, 3), (0, 0))), w, (1, 1), ((0, 0), (0, 0)))
  rep = analyze(fn, S((1, 8, 8, 2), f32), S((3, 3, 2, 2), f32), params_argnums=(1,))
  assert rep.receptive_field == {"size": 3, "stride": 1, "padding": 3}


def test_effective_receptive_field_of_a_linear_chain():
  # Two 3x3 all-ones convolutions: gradient of the centre unit is the 5x5 "tent" [1 2 3 2 1]^T[1 2 3 2 1];
  # its mass (81) within radius 1 is (2+3+2)^2 = 49 < 95%, within radius 2 it is all of it.
  from xnn.cost import effective_receptive_field
  w = jnp.ones((3, 3, 1, 1))
  feat = lambda x: conv(conv(x, w, (1, 1), ((1, 1), (1, 1))), w, (1, 1), ((1, 1), (1, 1)))
  out = effective_receptive_field(feat, (15, 15, 1), samples=2)
  m = out["map"]
  np.testing.assert_allclose(m[5:10, 7], [3, 6, 9, 6, 3])   # centre column: 3 x [1 2 3 2 1]
  assert out["radius"] == 2 and out["size"] == 5
