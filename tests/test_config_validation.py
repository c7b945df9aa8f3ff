"""Config validation before any work: every field's range (``xnn.configs.schema.RANGES``), the
checks between fields, the checks against the loaded data and the command line's override errors.

Each bad value must raise a ``ValueError`` of one line naming the field and the value; through
``train_and_evaluate`` it must do so before anything is compiled or the workdir exists.
"""

import glob
import os

import ml_collections
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from conftest import REPO
from xnn.configs import schema
from xnn.configs.args import override_error
from xnn.configs.default import get_config

NAN, INF = float("nan"), float("inf")


def _leaves(cfg: ml_collections.ConfigDict, prefix: str = "") -> dict:
  """Every non-section field of ``cfg`` by dotted path (open sections left out)."""
  out = {}
  for key, value in cfg.items():
    path = f"{prefix}{key}"
    if path in schema.OPEN:
      continue
    if isinstance(value, ml_collections.ConfigDict):
      out.update(_leaves(value, path + "."))
    else:
      out[path] = value
  return out


def _config(fields: dict) -> ml_collections.ConfigDict:
  """The default config with ``fields`` (dotted path: value) set."""
  c = get_config()
  for path, value in fields.items():
    *outer, last = path.split(".")
    node = c
    for key in outer:
      node = node[key]
    node[last] = value
  return c


def _assert_names(err: BaseException, path: str, value) -> None:
  msg = str(err)
  assert "\n" not in msg, msg
  assert f"config key {path!r}" in msg and msg.endswith(f"got {value!r}"), msg


# (field, bad value, other fields the case needs). Values the type check already refuses
# (a string for an int, ...) are tests/test_train.py's; these all have the right type.
BAD = [
    ("seed", -1, {}), ("seed", 2**64, {}),
    ("model.name", "", {}), ("model.num_classes", -1, {}), ("model.dtype", "float64", {}),
    ("data.name", "", {}), ("data.train_split", "", {}), ("data.test_split", "", {}),
    ("data.image_size", -1, {}), ("data.channels", -3, {}), ("data.pad", -1, {}),
    ("data.crop_size", -1, {}), ("data.augment", "cutout", {}), ("data.normalize", "zscore", {}),
    ("data.as_sequence", "cols", {}), ("data.seq_length", 0, {}), ("data.vocab", 1, {}),
    ("data.num_train", 0, {}), ("data.num_test", -5, {}), ("data.threads", 0, {}), ("data.prefetch", -1, {}),
    ("data.worker_count", -1, {}),
    ("train.batch_size", 0, {}), ("train.batch_size", -64, {}), ("train.num_epochs", -1, {}),
    ("train.num_steps", -5, {}), ("train.eval_batch_size", 0, {}),
    ("train.eval_every_epochs", 0.0, {}), ("train.eval_every_epochs", -1.0, {}), ("train.eval_every_epochs", NAN, {}),
    ("train.eval_every_epochs", INF, {}), ("train.log_every_steps", 0, {}), ("train.checkpoint_every_steps", -1, {}),
    ("train.keep_checkpoints", 0, {}), ("train.bn_stats", "batch", {}), ("train.bn_group_size", -1, {}),
    ("train.device_resident", "yes", {}), ("train.device_resident_max_mb", -1, {}),
    ("train.steps_per_dispatch", -3, {}), ("train.label_smoothing", -0.1, {}), ("train.label_smoothing", 1.0, {}),
    ("train.label_smoothing", NAN, {}), ("train.compilation_cache_min_s", -1.0, {}),
    ("train.compilation_cache_max_gb", INF, {}), ("train.compilation_cache_max_gb", NAN, {}),
    ("train.cpu_conv", "fast", {}), ("train.progress_every_s", -1.0, {}),
    ("optimizer.name", "lamb", {}), ("optimizer.learning_rate", 0.0, {}), ("optimizer.learning_rate", -1e-3, {}),
    ("optimizer.learning_rate", INF, {}), ("optimizer.learning_rate", NAN, {}), ("optimizer.momentum", -0.1, {}),
    ("optimizer.momentum", 1.0, {}), ("optimizer.b1", 1.0, {}), ("optimizer.b2", -0.5, {}), ("optimizer.eps", 0.0, {}),
    ("optimizer.weight_decay", -1e-4, {}), ("optimizer.grad_clip_norm", -1.0, {}),
    ("schedule.name", "step", {}), ("schedule.unit", "iter", {}), ("schedule.cosine", "full", {}),
    ("schedule.warmup", -1.0, {}), ("schedule.init_value", -1e-5, {}), ("schedule.end_value", INF, {}),
    ("schedule.boundaries", ("abc",), {}), ("schedule.boundaries", (0, 10), {}),
    ("schedule.boundaries", (48000, 32000), {}), ("schedule.boundaries", (100, 100), {}),
    ("schedule.boundaries", (1.5,), {}), ("schedule.boundaries", (True,), {}), ("schedule.scale", 0.0, {}),
    ("schedule.scales", (0.1, -1.0), {"schedule.boundaries": (1, 2)}), ("schedule.scales", ("x",), {}),
    ("train.ema_decay", 1.0, {}), ("train.ema_decay", -0.1, {}), ("train.grad_accum_steps", 0, {}),
    ("model.aux_loss_weight", -0.5, {}), ("model.aux_loss_weight", -2.0, {}), ("data.mixup_alpha", -0.2, {}),
    ("data.cutmix_alpha", NAN, {}),
    # between fields
    ("train.num_epochs", 0, {"train.num_steps": 0}),
    ("data.crop_size", 0, {"data.augment": "random_crop"}),
    ("data.crop_size", 100, {"data.augment": "random_crop"}),        # larger than data.image_size=32
    ("schedule.boundaries", (), {"schedule.name": "piecewise"}),
    ("schedule.scales", (10.0, 0.1), {"schedule.boundaries": (1, 2, 3)}),
    ("optimizer.nesterov", True, {"optimizer.name": "sgd", "optimizer.momentum": 0.0}),
    ("train.grad_accum_steps", 3, {"train.batch_size": 64}),            # micro-batches of 64/3 examples
    ("train.bn_group_size", 32, {"train.bn_stats": "groups", "train.batch_size": 64, "train.grad_accum_steps": 4}),
]


@pytest.mark.parametrize("path,value,others", BAD, ids=[f"{p}={v!r}" for p, v, _ in BAD])
def test_each_bad_value_is_one_line_naming_field_and_value(path, value, others):
  c = _config({**others, path: value})
  with pytest.raises(ValueError) as err:
    schema.resolve(c)
  _assert_names(err.value, path, value)
  assert isinstance(err.value, schema.ConfigError)


GOOD = [  # the edges of the ranges, and the settings the ranges must not refuse
    {"train.keep_checkpoints": 1}, {"train.label_smoothing": 0.0}, {"train.label_smoothing": 0.999},
    {"train.num_epochs": 0, "train.num_steps": 5}, {"train.checkpoint_every_steps": 0},
    {"train.compilation_cache_max_gb": -1.0}, {"train.compilation_cache_max_gb": 0.0}, {"seed": 2**63 - 1},
    {"optimizer.momentum": 0.0}, {"train.steps_per_dispatch": 0}, {"train.eval_every_epochs": 0.25},
    {"schedule.name": "piecewise", "schedule.boundaries": (1,)},
    {"schedule.boundaries": (5, 10), "schedule.scales": (10, 0.1)},
    {"data.augment": "random_crop", "data.crop_size": 32}, {"optimizer.learning_rate": 1},
    {"data.augment": "random_crop", "data.crop_size": 28, "data.image_size": 0},   # checked against the data
    {"train.compilation_cache": ""}, {"data.pad": 0}, {"optimizer.weight_decay": 0.0},
    {"model.aux_loss_weight": -1}, {"model.aux_loss_weight": 0.0}, {"train.ema_decay": 0.9999},
    {"train.grad_accum_steps": 4, "train.batch_size": 64},
    {"train.bn_stats": "groups", "train.bn_group_size": 16, "train.batch_size": 64, "train.grad_accum_steps": 4},
]


@pytest.mark.parametrize("fields", GOOD, ids=[str(f) for f in GOOD])
def test_values_at_the_edges_are_accepted(fields):
  schema.resolve(_config(fields))


def test_every_scalar_field_of_the_default_has_a_range():
  leaves = _leaves(get_config())
  assert sorted(set(leaves) - set(schema.RANGES)) == [], "fields without a range in schema.RANGES"
  assert sorted(set(schema.RANGES) - set(leaves)) == [], "ranges for fields the default does not have"
  kinds = {bool: ("bool",), int: ("int",), float: ("real",), str: ("str", "choice"), tuple: ("steps", "factors")}
  for path, value in leaves.items():
    r = schema.RANGES[path]
    assert r.kind in kinds[type(value)], (path, r.kind, value)
    assert r.accepts(value), f"the default {path}={value!r} is outside its own range"
    assert path not in schema.CHOICES or r.choices == tuple(schema.CHOICES[path])


# --- property tests: inside every numeric range accepted, outside refused naming the field --------------


NUMERIC = sorted(p for p, r in schema.RANGES.items() if r.kind in ("int", "real"))


def _inside(r: schema.Range) -> st.SearchStrategy:
  if r.kind == "int":
    within = st.integers(min_value=r.lo, max_value=r.hi)
  else:
    within = st.floats(min_value=r.lo, max_value=r.hi, exclude_min=r.lo_open and r.lo is not None,
                       exclude_max=r.hi_open and r.hi is not None, allow_nan=False, allow_infinity=False)
  return st.one_of(within, st.sampled_from(r.also)) if r.also else within


def _outside(r: schema.Range) -> st.SearchStrategy:
  if r.kind == "int":
    options = ([st.integers(max_value=r.lo - 1)] if r.lo is not None else []) + (
        [st.integers(min_value=r.hi + 1)] if r.hi is not None else [])
    return st.one_of(options)
  options = [st.sampled_from([NAN, INF, -INF])]
  if r.lo is not None:
    options.append(st.floats(max_value=r.lo, exclude_max=not r.lo_open, allow_nan=False, allow_infinity=False))
  if r.hi is not None:
    options.append(st.floats(min_value=r.hi, exclude_min=not r.hi_open, allow_nan=False, allow_infinity=False))
  return st.one_of(options).filter(lambda v: v not in r.also)


def _set(path: str, value) -> ml_collections.ConfigDict:
  fields = {"train.num_steps": 5, path: value}           # num_steps > 0: any num_epochs >= 0 is a run
  if path == "train.grad_accum_steps" and isinstance(value, int) and value > 0:
    fields["train.batch_size"] = value                   # one example per micro-batch: any count divides it
  return _config(fields)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(NUMERIC).flatmap(lambda p: st.tuples(st.just(p), _inside(schema.RANGES[p]))))
def test_values_inside_every_range_are_accepted(case):
  path, value = case
  schema.resolve(_set(path, value))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(NUMERIC).flatmap(lambda p: st.tuples(st.just(p), _outside(schema.RANGES[p]))))
def test_values_outside_every_range_are_refused_naming_the_field(case):
  path, value = case
  with pytest.raises(ValueError) as err:
    schema.resolve(_set(path, value))
  _assert_names(err.value, path, value)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 10**7), unique=True, max_size=6).map(sorted), st.data())
def test_increasing_boundaries_with_matching_scales_are_accepted(bounds, data):
  scales = data.draw(st.sampled_from([(), tuple(data.draw(st.lists(
      st.floats(1e-6, 1e6), min_size=len(bounds), max_size=len(bounds))))]))
  schema.resolve(_config({"schedule.boundaries": tuple(bounds), "schedule.scales": scales}))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-10**7, 10**7), min_size=1, max_size=6).filter(
    lambda b: not (all(x > 0 for x in b) and all(x < y for x, y in zip(b, b[1:])))))
def test_boundaries_not_increasing_and_positive_are_refused(bounds):
  with pytest.raises(ValueError) as err:
    schema.resolve(_config({"schedule.boundaries": tuple(bounds)}))
  _assert_names(err.value, "schedule.boundaries", tuple(bounds))


# --- checks against the loaded data -------------------------------------------------------------


def _dataset(n: int, shape: tuple[int, ...]):
  from xnn.data.datasets import from_arrays
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
  return from_arrays(x, rng.integers(0, 3, n), x[:8], rng.integers(0, 3, 8), num_classes=3)


@pytest.mark.parametrize("fields,shape,path,value", [
    ({"train.batch_size": 64}, (8, 8, 1), "train.batch_size", 64),
    ({"data.image_size": 0, "data.augment": "random_crop", "data.crop_size": 28}, (8, 8, 1), "data.crop_size", 28),
    ({"data.image_size": 0, "data.augment": "random_crop", "data.crop_size": 9}, (8, 12, 3), "data.crop_size", 9),
    ({"data.image_size": 16, "data.augment": "random_crop", "data.crop_size": 16}, (8, 8, 3), None, None),
    ({"data.channels": 4}, (8, 8, 3), "data.channels", 4),
    ({"data.channels": 3}, (8, 8, 1), None, None),
    ({"data.channels": 3}, (8, 8, 3), None, None),
])
def test_check_against_data(fields, shape, path, value):
  ds = _dataset(40, shape)
  cfg = schema.resolve(_config({"train.batch_size": 32, **fields}))
  check = lambda: schema.check_against_data(cfg, num_train=len(ds.train), image_shape=ds.element_shape)
  if path is None:
    check()
  else:
    with pytest.raises(ValueError) as err:
      check()
    _assert_names(err.value, path, value)


def test_check_against_data_for_sequences_checks_only_the_batch():
  cfg = schema.resolve(_config({"train.batch_size": 128, "data.image_size": 0, "data.augment": "random_crop",
                                  "data.crop_size": 64}))
  schema.check_against_data(cfg, num_train=128, image_shape=None)
  with pytest.raises(ValueError, match=r"'train.batch_size' must not be larger than the 100 .*, got 128"):
    schema.check_against_data(cfg, num_train=100, image_shape=None)


# --- the command line ---------------------------------------------------------------------------


@pytest.mark.parametrize("flag,path,text", [
    ("--config.train.num_epochs=abc", "train.num_epochs", "abc"),
    ("--config.optimizer.learning_rate=fast", "optimizer.learning_rate", "fast"),
    ("--config.train.progress_bar=maybe", "train.progress_bar", "maybe"),
    ("--config.schedule.boundaries=1 abc", "schedule.boundaries", "1 abc"),
])
def test_unparsable_override_is_one_line_naming_field_and_text(flag, path, text):
  from xnn.commands.train import parse
  with pytest.raises(ValueError) as err:
    parse([flag])
  msg = override_error(str(err.value))
  assert "\n" not in msg and msg.startswith(f"config key {path!r} must be ") and msg.endswith(f"got {text!r}"), msg
  assert override_error("something else") == "something else"


@pytest.mark.parametrize("flag,value", [
    ("--config.schedule.boundaries=abc", ("abc",)), ("--config.schedule.boundaries=1,abc", ("1,abc",)),
    ("--config.schedule.boundaries=48000,32000", (48000, 32000)), ("--config.schedule.scales=1,x", ("1,x",)),
    ("--config.optimizer.learning_rate=inf", INF), ("--config.train.keep_checkpoints=0", 0),
])
def test_parsed_but_bad_override_is_refused_naming_field_and_form(flag, value):
  from xnn.commands.train import parse
  config, _ = parse([flag])
  path = flag[len("--config."):].split("=")[0]
  with pytest.raises(ValueError) as err:
    schema.resolve(config)
  _assert_names(err.value, path, value)
  if "schedule" in path:
    assert f"on the command line --config.{path}=" in str(err.value)


# --- every recipe, every argument and every sweep run resolves ------------------------------------


RECIPE_ARGS = {
    "cifar10_course": ["mobilenet_v2_28", "resnet_v2b"],
    "cifar10_fast": [None, "12", "1"],
    "cifar10_resnet": [f"{k}{d}" for k in ("resnet", "plain") for d in (20, 32, 44, 56, 110)] + ["resnet1202"],
    "digits_lenet5": [None],
    "digits_rnn": ["rnn", "gru", "lstm", "bilstm", "pyramidal_lstm", "moe_lstm", "transformer", "lstm,pixels",
                   "gru_pixels"],
    "seq2seq": [f"{t},{m}" for t in ("copy", "reverse", "sort", "addition") for m in ("transformer", "rnn")],
    "search_digits": ["tiny", "quick"],
    "search_cifar": [None, "tpe", "nsga2"],
}


def test_recipe_list_is_complete():
  recipes = {os.path.basename(f)[:-3] for f in glob.glob(os.path.join(REPO, "xnn", "configs", "*.py"))}
  assert recipes - {"__init__", "args", "common", "schema", "default"} == set(RECIPE_ARGS)


@pytest.mark.parametrize("recipe,arg", [(r, a) for r, args in RECIPE_ARGS.items() for a in args])
def test_every_recipe_resolves(recipe, arg):
  import importlib
  module = importlib.import_module(f"xnn.configs.{recipe}")
  schema.resolve(module.get_config(arg))


EXPERIMENT_ARGS = {"cifar_curves": [f"{r},{m}" for r in ("resnets", "course") for m in ("full", "quick", "tiny")],
                   "residual_vs_plain": ["quick", "tiny", "full", "full_45k", "full_110"]}


@pytest.mark.parametrize("name,arg", [(n, a) for n, args in EXPERIMENT_ARGS.items() for a in args])
def test_every_experiment_sweep_run_resolves_through_the_command_line(name, arg):
  from xnn import sweeps as s
  from xnn.commands.train import parse
  path = os.path.join(REPO, "experiments", name, "config.py")
  assert glob.glob(os.path.join(REPO, "experiments", "*", "config*.py")) and os.path.exists(path)
  runs = s.load_sweep(f"{path}:{arg}")
  assert runs
  for _, run in runs:
    config, _ = parse(["--config", f"{path}:{arg}", *s.overrides(run)])
    schema.resolve(config)


def test_every_experiment_config_is_listed():
  files = glob.glob(os.path.join(REPO, "experiments", "*", "config*.py"))
  names = {os.path.basename(os.path.dirname(f)) for f in files}
  assert names == set(EXPERIMENT_ARGS)


# --- through train_and_evaluate: refused before any compilation, no workdir --------------------------


TRAIN_CASES = [
    ("train.keep_checkpoints", 0, {}), ("train.log_every_steps", 0, {}), ("train.steps_per_dispatch", -3, {}),
    ("data.worker_count", -1, {}), ("optimizer.learning_rate", INF, {}),
    ("data.crop_size", 100, {"data.augment": "random_crop"}),
    ("schedule.boundaries", ("abc",), {"schedule.name": "piecewise"}),
    ("train.num_epochs", 0, {"train.num_steps": 0}),
]


@pytest.mark.parametrize("path,value,others", TRAIN_CASES, ids=[f"{p}={v!r}" for p, v, _ in TRAIN_CASES])
def test_train_and_evaluate_refuses_before_compiling_or_writing(path, value, others, tmp_path):
  from jax import monitoring
  from xnn.train import train_and_evaluate
  events = []
  listener = lambda event, duration, **kw: events.append(event)
  c = _config({**others, path: value})
  workdir = str(tmp_path / "run")
  monitoring.register_event_duration_secs_listener(listener)
  try:
    with pytest.raises(ValueError) as err:
      train_and_evaluate(c, workdir)
  finally:
    monitoring.unregister_event_duration_listener(listener)
  _assert_names(err.value, path, value)
  assert not [e for e in events if "compile" in e], events
  assert not os.path.exists(workdir)


def test_nan_and_inf_are_named_as_such():
  for value in (NAN, INF, -INF):
    with pytest.raises(ValueError, match=rf"'optimizer.weight_decay' must be a finite number >= 0 .*got {value!r}"):
      schema.resolve(_config({"optimizer.weight_decay": value}))
