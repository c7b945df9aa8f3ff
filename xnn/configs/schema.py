"""The embedded default is the schema: ``resolve(config)`` checks a config against it.

Every key of a user config must exist in the default (``xnn/configs/default.py``; an
unknown key is named with the closest known one), every value must have the
default's type (an int where a float is expected is fine), and every field's value
must lie in its range (``RANGES``: positive, non-negative, finite, in [0, 1), one of
``CHOICES``, ...). Then the checks between fields that need no data run
(``check_fields``: e.g. a crop no larger than the resized image). Sections listed in
``OPEN`` (the model's factory arguments) take any keys with literal values. All of
this raises ``ConfigError`` (a ``ValueError``), one line naming the field, the value
and what was expected, before any data is read or anything is compiled.
``check_against_data(cfg, num_train=..., image_shape=...)`` checks what needs the
loaded dataset (batch no larger than the training set, crop no larger than the image).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import numbers
from typing import Any

import ml_collections

from xnn.configs.default import get_config as default_config
from xnn.data.transforms import AUGMENTATIONS, NORMALIZATIONS, SEQUENCE_READINGS
from xnn.ops.backend import CPU_CONV_MODES

OPEN = ("model.kwargs",)

CHOICES = {
    "model.dtype": ("float32", "bfloat16"),
    "data.augment": AUGMENTATIONS,
    "data.normalize": NORMALIZATIONS,
    "data.as_sequence": SEQUENCE_READINGS,
    "train.bn_stats": ("global", "per_device", "groups"),
    "train.device_resident": ("auto", "on", "off"),
    "train.cpu_conv": CPU_CONV_MODES,
    "optimizer.name": ("sgd", "adam", "adamw"),
    "optimizer.weight_decay_mask": ("all", "no_bn_bias"),
    "schedule.name": ("constant", "piecewise", "warmup_cosine", "warmup_linear"),
    "schedule.unit": ("step", "epoch"),
    "schedule.cosine": ("half", "quarter"),
}

_LITERALS = (bool, int, float, str, tuple, list, type(None))


class ConfigError(ValueError):
  """A config value outside what its field takes (one line: field, value, expected)."""


@dataclasses.dataclass(frozen=True)
class Range:
  """The values one field takes.

  ``kind``: ``int`` / ``real`` (a finite number) within ``lo``..``hi`` (``lo_open`` /
  ``hi_open``: bound excluded; ``also``: single values taken besides, e.g. -1 for "the
  model's own"), ``str`` (``nonempty``), ``bool``, ``choice`` (one of ``choices``),
  ``steps`` (strictly increasing positive integers) or ``factors`` (positive finite
  numbers). ``why`` says what the field means, shown in the error.
  """
  kind: str
  lo: float | None = None
  hi: float | None = None
  lo_open: bool = False
  hi_open: bool = False
  choices: tuple = ()
  nonempty: bool = False
  why: str = ""
  also: tuple = ()

  def accepts(self, value: Any) -> bool:
    if self.kind == "bool":
      return isinstance(value, bool)
    if self.kind == "str":
      return isinstance(value, str) and (bool(value) or not self.nonempty)
    if self.kind == "choice":
      return isinstance(value, str) and value in self.choices
    if self.kind in ("int", "real"):
      return _is_number(value, self.kind == "int") and (self._within(value) or value in self.also)
    if self.kind == "steps":
      return (isinstance(value, (tuple, list)) and all(_is_number(v, True) and v > 0 for v in value)
              and all(a < b for a, b in zip(value, value[1:])))
    if self.kind == "factors":
      return isinstance(value, (tuple, list)) and all(_is_number(v, False) and v > 0 for v in value)
    raise AssertionError(f"unknown range kind {self.kind!r}")

  def _within(self, v: float) -> bool:
    lo_ok = self.lo is None or (v > self.lo if self.lo_open else v >= self.lo)
    hi_ok = self.hi is None or (v < self.hi if self.hi_open else v <= self.hi)
    return lo_ok and hi_ok

  def expected(self) -> str:
    """What the field takes, in words: 'an integer >= 1', 'a finite number in [0, 1)', ..."""
    if self.kind == "bool":
      return "True or False"
    if self.kind == "str":
      return "a non-empty string" if self.nonempty else "a string"
    if self.kind == "choice":
      return "one of " + ", ".join(map(repr, self.choices))
    if self.kind == "steps":
      return "strictly increasing positive integers"
    if self.kind == "factors":
      return "positive finite numbers"
    noun = "an integer" if self.kind == "int" else "a finite number"
    if self.lo is not None and self.hi is not None:
      text = f"{noun} in {'(' if self.lo_open else '['}{self.lo}, {self.hi}{')' if self.hi_open else ']'}"
    elif self.lo is not None:
      text = f"{noun} {'>' if self.lo_open else '>='} {self.lo}"
    elif self.hi is not None:
      text = f"{noun} {'<' if self.hi_open else '<='} {self.hi}"
    else:
      text = noun
    return text + "".join(f" or {v}" for v in self.also)


def _is_number(v: Any, integral: bool) -> bool:
  if isinstance(v, bool):
    return False
  if integral:
    return isinstance(v, numbers.Integral)
  return isinstance(v, numbers.Real) and math.isfinite(v)


def _int(lo: int | None = None, hi: int | None = None, why: str = "") -> Range:
  return Range("int", lo, hi, why=why)


def _real(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False,
          why: str = "", also: tuple = ()) -> Range:
  return Range("real", lo, hi, lo_open, hi_open, why=why, also=also)


def _str(why: str = "", nonempty: bool = False) -> Range:
  return Range("str", nonempty=nonempty, why=why)


_BOOL = Range("bool")
_SPLIT = _str("a TFDS split, e.g. train or train[:45000]", nonempty=True)
_RATE = "a learning rate"

# Every scalar field of the default config (and its two tuples): tests/test_config_validation.py
# checks that none is missing, so a new field needs its range here.
RANGES: dict[str, Range] = {
    "seed": _int(0, 2**63 - 1, "seeds NumPy's and JAX's generators"),
    "model.name": _str("a registered model (xnn models lists them)", nonempty=True),
    "model.num_classes": _int(0, why="0: the dataset's number of classes"),
    "data.name": _str("a registered dataset", nonempty=True),
    "data.data_dir": _str("'': TFDS's default"),
    "data.manual_dir": _str("'': none"),
    "data.root": _str("image_folder's folder"),
    "train.init_from": _str("'': a fresh initialisation; else a workdir whose weights start the run"),
    "data.train_split": _SPLIT,
    "data.test_split": _SPLIT,
    "data.image_size": _int(0, why="0: native size, else the side the images are resized to"),
    "data.channels": _int(0, why="0: native, else the channels (grey images replicated)"),
    "data.pad": _int(0, why="zero pixels added a side by pad_crop_flip"),
    "data.flip": _BOOL,
    "data.crop_size": _int(0, why="random_crop's side; 0: no crop"),
    "data.seq_length": _int(1, why="length of the generated sequences"),
    "data.vocab": _int(2, why="symbols of the generated sequences (addition: the base)"),
    "data.num_train": _int(1, why="generated training examples"),
    "data.num_test": _int(1, why="generated test examples"),
    "data.threads": _int(1, why="read-ahead threads building batches"),
    "data.prefetch": _int(1, why="batches read ahead"),
    "data.worker_count": _int(0, why="grain worker processes; 0: in the main process"),
    "train.batch_size": _int(1, why="the global batch"),
    "train.num_epochs": _int(0, why="0 only with train.num_steps > 0"),
    "train.num_steps": _int(0, why="> 0 overrides train.num_epochs"),
    "train.eval_batch_size": _int(1, why="the global evaluation batch"),
    "train.eval_every_epochs": _real(0, lo_open=True, why="epochs between evaluations; fractions allowed"),
    "train.log_every_steps": _int(1, why="steps between logged training metrics"),
    "train.checkpoint_every_steps": _int(0, why="steps between checkpoints; 0: at every evaluation"),
    "train.keep_checkpoints": _int(1, why="keep at least one checkpoint so a re-run resumes"),
    "train.bn_group_size": _int(0, why="examples per BatchNorm group when train.bn_stats='groups'"),
    "train.device_resident_max_mb": _int(0, why="MB per device the resident training set may take"),
    "train.steps_per_dispatch": _int(0, why="device-resident steps per dispatch; 0: chosen from the periods"),
    "train.label_smoothing": _real(0, 1, hi_open=True, why="the share of the target spread over all classes"),
    "train.ema_decay": _real(0, 1, hi_open=True, why="the weights' moving-average decay; 0: off"),
    "train.grad_accum_steps": _int(1, why="micro-batches per optimiser step; 1: off"),
    "model.aux_loss_weight": _real(0, also=(-1,), why="each auxiliary classifier's loss weight; -1: the model's "
                                   "published one (GoogLeNet 0.3, Inception-v3 0.4)"),
    "data.mixup_alpha": _real(0, why="Mixup's Beta(alpha, alpha); 0: off"),
    "data.cutmix_alpha": _real(0, why="CutMix's Beta(alpha, alpha); 0: off"),
    "train.compilation_cache": _str("user | workdir | off | a directory"),
    "train.compilation_cache_min_s": _real(0, why="seconds of compilation before a program is stored"),
    "train.compilation_cache_max_gb": _real(why="<= 0: unbounded"),
    "train.progress_bar": _BOOL,
    "train.progress_every_s": _real(0, why="seconds between progress lines"),
    "optimizer.learning_rate": _real(0, lo_open=True, why="the peak learning rate"),
    "optimizer.momentum": _real(0, 1, hi_open=True, why="sgd's momentum; 0: none"),
    "optimizer.nesterov": _BOOL,
    "optimizer.b1": _real(0, 1, hi_open=True, why="Adam's first-moment decay"),
    "optimizer.b2": _real(0, 1, hi_open=True, why="Adam's second-moment decay"),
    "optimizer.eps": _real(0, lo_open=True, why="Adam's denominator guard"),
    "optimizer.weight_decay": _real(0, why="0: none"),
    "optimizer.grad_clip_norm": _real(0, why="global gradient norm bound; 0: off"),
    "schedule.warmup": _real(0, why="warmup length in epochs"),
    "schedule.init_value": _real(0, why=f"{_RATE} at the start of the warmup"),
    "schedule.end_value": _real(0, why=f"{_RATE} at the end of the decay"),
    "schedule.boundaries": Range("steps", why="the steps where the piecewise rate changes; "
                                 "on the command line --config.schedule.boundaries=32000,48000"),
    "schedule.scale": _real(0, lo_open=True, why="the rate's factor at each boundary"),
    "schedule.scales": Range("factors", why="one factor per boundary, or () for schedule.scale at each; "
                             "on the command line --config.schedule.scales=10,0.1,0.1"),
    **{path: Range("choice", choices=tuple(values)) for path, values in CHOICES.items()},
    "model.dtype": Range("choice", choices=CHOICES["model.dtype"], why=(
        "the compute dtype; float16 is refused, it needs loss scaling, which xnn does not do: use bfloat16, "
        "which has float32's exponent range and needs none")),
    "optimizer.weight_decay_mask": Range("choice", choices=CHOICES["optimizer.weight_decay_mask"], why=(
        "all: every parameter decayed; no_bn_bias: no decay on normalisation scales/offsets and biases")),
}


def expectation(path: str) -> str:
  """'must be <what RANGES[path] takes> (<why>)': the middle of a one-line error about ``path``."""
  r = RANGES[path]
  return f"must be {r.expected()}" + (f" ({r.why})" if r.why else "")


def _fail(path: str, value: Any, expected: str | None = None) -> None:
  raise ConfigError(f"config key {path!r} {expected or expectation(path)}, got {value!r}")


def _get(cfg: Any, path: str) -> Any:
  for key in path.split("."):
    cfg = cfg[key]
  return cfg


def check_ranges(cfg: ml_collections.ConfigDict) -> None:
  """Every field of ``cfg`` (a full config) in its range (``RANGES``)."""
  for path, r in RANGES.items():
    value = _get(cfg, path)
    if not r.accepts(value):
      _fail(path, value)


def check_fields(cfg: ml_collections.ConfigDict) -> None:
  """The checks between fields that need no data or device."""
  t, d, s, o = cfg.train, cfg.data, cfg.schedule, cfg.optimizer
  if t.num_epochs == 0 and t.num_steps == 0:
    _fail("train.num_epochs", 0, "must be >= 1 when train.num_steps is 0 (the run would train no step)")
  if d.augment == "random_crop":
    if d.crop_size == 0:
      _fail("data.crop_size", 0, "must be >= 1 with data.augment='random_crop' (e.g. 28)")
    if d.image_size and d.crop_size > d.image_size:
      _fail("data.crop_size", d.crop_size, f"must be <= data.image_size={d.image_size} (the crop is cut "
            "from the resized image)")
  if s.name == "piecewise" and not s.boundaries:
    _fail("schedule.boundaries", s.boundaries, "must name at least one step with schedule.name='piecewise' "
          "(e.g. --config.schedule.boundaries=32000,48000)")
  if s.scales and len(s.scales) != len(s.boundaries):
    _fail("schedule.scales", s.scales, f"must have one factor per boundary ({len(s.boundaries)} in "
          f"schedule.boundaries={s.boundaries}) or be ()")
  if t.batch_size % t.grad_accum_steps:
    _fail("train.grad_accum_steps", t.grad_accum_steps, f"must divide train.batch_size={t.batch_size} (each "
          "micro-batch is batch_size / grad_accum_steps examples)")
  if t.bn_stats == "groups" and t.bn_group_size and (t.batch_size // t.grad_accum_steps) % t.bn_group_size:
    _fail("train.bn_group_size", t.bn_group_size, f"must divide the micro-batch of {t.batch_size // t.grad_accum_steps}"
          f" examples (train.batch_size={t.batch_size} / train.grad_accum_steps={t.grad_accum_steps})")
  if o.name == "sgd" and o.nesterov and o.momentum == 0:
    _fail("optimizer.nesterov", True, "needs optimizer.momentum > 0 (Nesterov without momentum is plain SGD)")


def check_against_data(cfg: ml_collections.ConfigDict, *, num_train: int,
                       image_shape: tuple[int, ...] | None) -> None:
  """The checks that need the loaded dataset; call right after loading it.

  ``num_train``: training examples; ``image_shape``: one training image's native
  (H, W, C) (or (H, W)), None for data that is not images.
  """
  batch = cfg.train.batch_size
  if batch > num_train:
    _fail("train.batch_size", batch, f"must not be larger than the {num_train} training examples")
  if image_shape is None:
    return
  d = cfg.data
  h, w = (d.image_size, d.image_size) if d.image_size else tuple(image_shape[:2])
  if d.augment == "random_crop" and d.crop_size > min(h, w):
    source = f"data.image_size={d.image_size}" if d.image_size else "their native size"
    _fail("data.crop_size", d.crop_size, f"must be <= the images' {h}x{w} ({source})")
  native = image_shape[2] if len(image_shape) == 3 else 1
  if d.channels and d.channels != native and native != 1:
    _fail("data.channels", d.channels, f"must be 0 (native) or {native}, the images' channels "
          "(only 1-channel images are replicated)")


def _type_ok(want: Any, got: Any) -> bool:
  if isinstance(want, bool) or isinstance(got, bool):
    return isinstance(want, bool) and isinstance(got, bool)
  if isinstance(want, float):
    return isinstance(got, (int, float))
  if isinstance(want, tuple):
    return isinstance(got, (tuple, list))
  return isinstance(got, type(want))


def _check_open(section: Any, path: str) -> None:
  if not isinstance(section, (ml_collections.ConfigDict, dict)):
    raise ConfigError(f"config key {path!r} must be a section of name: value pairs, "
                      f"got {type(section).__name__} {section!r}")
  for key, value in section.items():
    if isinstance(value, (ml_collections.ConfigDict, dict)):
      _check_open(value, f"{path}.{key}")
    elif not isinstance(value, _LITERALS):
      raise ConfigError(f"config key '{path}.{key}' must be a literal (number, string, bool, tuple), "
                        f"got {type(value).__name__} {value!r}")


def _check(user: Any, schema: ml_collections.ConfigDict, prefix: str) -> None:
  """Keys and types of ``user`` against ``schema`` (ranges come after the merge)."""
  for key in user.keys():
    path = f"{prefix}{key}"
    if key not in schema:
      close = difflib.get_close_matches(key, list(schema.keys()), n=1)
      hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
      raise ConfigError(f"unknown config key {path!r}{hint}; known keys under "
                        f"{prefix.rstrip('.') or 'config'}: {', '.join(sorted(schema.keys()))}")
    want, got = schema[key], user[key]
    if path in OPEN:
      _check_open(got, path)
    elif isinstance(want, ml_collections.ConfigDict):
      if not isinstance(got, (ml_collections.ConfigDict, dict)):
        raise ConfigError(f"config key {path!r} must be a section, got {type(got).__name__} {got!r}")
      _check(got, want, path + ".")
    elif not _type_ok(want, got):
      raise ConfigError(f"config key {path!r} must be {type(want).__name__} (like the default "
                        f"{want!r}), got {type(got).__name__} {got!r}")


def resolve(config: Any) -> ml_collections.ConfigDict:
  """A full, validated config: the defaults updated with ``config``; ``ConfigError`` naming a bad field."""
  _check(config, default_config(), "")
  user = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else copy.deepcopy(dict(config))
  kwargs = user.get("model", {}).pop("kwargs", None)
  for path in ("schedule.boundaries", "schedule.scales"):
    section, key = path.split(".")
    if key in user.get(section, {}):
      user[section][key] = tuple(user[section][key])
  merged = default_config()
  merged.update(user)
  if kwargs is not None:
    merged.model.kwargs = ml_collections.ConfigDict(dict(kwargs))
  check_ranges(merged)
  check_fields(merged)
  return merged
