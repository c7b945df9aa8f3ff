"""Learning-rate schedules against published logs and recipes."""

import jax
import numpy as np
import pytest

from xnn.configs.default import get_config
from xnn.train.schedules import create_learning_rate_fn

# The per-epoch learning rates printed by the course code in the course's design homework
# ("Training model mobilenet_v2..."): 30 epochs, 5 of linear warmup 1e-5 -> 1e-3,
# then a quarter-period cosine back to 1e-5 at epoch 29.
SEED_LOG = [
    1e-05, 0.000208000000000000000001, 0.000406000000000000000006, 0.000604,
    0.000802000000000000000001, 0.001, 0.0009978803340062175, 0.0009915304127600722,
    0.000980977427599198, 0.0009662665680261777, 0.0009474608282001546, 0.0009246407371861739,
    0.0008979040141173614, 0.0008673651497465943, 0.0008331549161795198, 0.0007954198068883229,
    0.0007543214094041876, 0.0007100357133746822, 0.0006627523569490682, 0.0006126738147186335,
    0.0005600145306894063, 0.000505000000000000000001, 0.0004478658033168113, 0.00038885659804143894,
    0.0003282250706501301, 0.0002662308546514956, 0.00020313941879596703, 0.0001392209302978512,
    7.474909793784162e-05, 1.000000000000000000062e-05,
]


def course_schedule(steps_per_epoch):
  s = get_config().schedule
  s.name, s.unit, s.cosine = "warmup_cosine", "epoch", "quarter"
  s.warmup, s.init_value, s.end_value = 5.0, 1e-5, 1e-5
  return create_learning_rate_fn(s, 1e-3, steps_per_epoch, 30 * steps_per_epoch)


@pytest.mark.parametrize("steps_per_epoch", [1, 391])
def test_warmup_quarter_cosine_reproduces_the_course_log(steps_per_epoch):
  with jax.enable_x64(True):
    fn = course_schedule(steps_per_epoch)
    for epoch, want in enumerate(SEED_LOG):
      # every step of the epoch has the epoch's rate
      for step in (epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch - 1):
        got = float(fn(np.int64(step)))
        # The log prints ~16-19 significant digits of a float64; agree to 1e-13 relative.
        assert got == pytest.approx(want, rel=1e-13, abs=0), (epoch, step, got, want)


def test_half_cosine_does_not_fit_the_log():
  """The usual (1+cos)/2 shape gives 0.0009958 at epoch 6 where the log has 0.0009979."""
  s = get_config().schedule
  s.unit, s.cosine, s.warmup, s.init_value, s.end_value = "epoch", "half", 5.0, 1e-5, 1e-5
  with jax.enable_x64(True):
    fn = create_learning_rate_fn(s, 1e-3, 1, 30)
    assert abs(float(fn(6)) - SEED_LOG[6]) > 1e-6


def test_piecewise_he_et_al():
  """He et al. 2015 sec. 4.2: 0.1, divided by 10 at 32k and 48k iterations."""
  s = get_config().schedule
  s.name, s.boundaries, s.scale = "piecewise", (32000, 48000), 0.1
  fn = create_learning_rate_fn(s, 0.1, 391, 64000)
  for step, want in [(0, 0.1), (31999, 0.1), (32000, 0.01), (47999, 0.01), (48000, 0.001), (63999, 0.001)]:
    assert float(fn(step)) == pytest.approx(want, rel=1e-6), step


def test_step_unit_warmup_then_cosine_reaches_end():
  s = get_config().schedule
  s.unit, s.warmup, s.init_value, s.end_value = "step", 1.0, 0.0, 0.0
  fn = create_learning_rate_fn(s, 1.0, 10, 100)
  assert float(fn(0)) == 0.0
  assert float(fn(5)) == pytest.approx(0.5)
  assert float(fn(10)) == pytest.approx(1.0)
  assert float(fn(55)) == pytest.approx(0.5, abs=1e-6)    # half-way through the cosine
  assert float(fn(100)) == pytest.approx(0.0, abs=1e-7)


def test_bad_schedule_names():
  s = get_config().schedule
  s.name = "linear"
  with pytest.raises(ValueError, match="schedule.name"):
    create_learning_rate_fn(s, 0.1, 10, 100)


def test_piecewise_with_resnet110_warmup():
  """He et al. 2015 sec. 4.2: ResNet-110 starts at 0.01 until ~400 iterations, then 0.1."""
  s = get_config().schedule
  s.name, s.boundaries, s.scales = "piecewise", (400, 32000, 48000), (10.0, 0.1, 0.1)
  fn = create_learning_rate_fn(s, 0.01, 391, 64000)
  for step, want in [(0, 0.01), (399, 0.01), (400, 0.1), (31999, 0.1), (32000, 0.01), (48000, 0.001)]:
    assert float(fn(step)) == pytest.approx(want, rel=1e-6), step
  s.scales = (10.0, 0.1)
  with pytest.raises(ValueError, match="2 entries for 3 boundaries"):
    create_learning_rate_fn(s, 0.01, 391, 64000)


@pytest.mark.parametrize("steps_per_epoch", [97, 10])
def test_warmup_linear_is_pages_piecewise_linear(steps_per_epoch):
  """Page's ResNet-9 recipe (cifar10-fast): lr = np.interp(step / batches, [0, 5, 24], [0, 0.4, 0])."""
  s = get_config().schedule
  s.name, s.unit, s.warmup, s.init_value, s.end_value = "warmup_linear", "step", 5.0, 0.0, 0.0
  total = 24 * steps_per_epoch
  fn = create_learning_rate_fn(s, 0.4, steps_per_epoch, total)
  steps = np.arange(total + 1)
  want = np.interp(steps / steps_per_epoch, [0, 5, 24], [0, 0.4, 0])
  got = np.array([float(fn(int(i))) for i in steps])
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
