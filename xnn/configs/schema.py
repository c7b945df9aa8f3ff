"""The embedded default is the schema: ``resolve(config)`` checks a config against it.

Every key of a user config must exist in the default (``xnn/configs/default.py``; an
unknown key is named with the closest known one), every value must have the
default's type (an int where a float is expected is fine), and the fields listed in
``CHOICES`` must take one of their values. Sections listed in ``OPEN`` (the model's
factory arguments) take any keys with literal values. All of this raises
``ValueError`` naming the field before any data is read or anything is compiled.
"""

from __future__ import annotations

import copy
import difflib
from typing import Any

import ml_collections

from xnn.configs.default import get_config as default_config
from xnn.data.transforms import AUGMENTATIONS, NORMALIZATIONS, SEQUENCE_READINGS
from xnn.ops.backend import CPU_CONV_MODES

OPEN = ("model.kwargs",)

CHOICES = {
    "model.dtype": ("float32", "bfloat16", "float16"),
    "data.augment": AUGMENTATIONS,
    "data.normalize": NORMALIZATIONS,
    "data.as_sequence": SEQUENCE_READINGS,
    "train.bn_stats": ("global", "per_device", "groups"),
    "train.device_resident": ("auto", "on", "off"),
    "train.cpu_conv": CPU_CONV_MODES,
    "optimizer.name": ("sgd", "adam", "adamw"),
    "schedule.name": ("constant", "piecewise", "warmup_cosine", "warmup_linear"),
    "schedule.unit": ("step", "epoch"),
    "schedule.cosine": ("half", "quarter"),
}

_LITERALS = (bool, int, float, str, tuple, list, type(None))


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
    raise ValueError(f"config key {path!r} must be a section of name: value pairs, "
                     f"got {type(section).__name__} {section!r}")
  for key, value in section.items():
    if isinstance(value, (ml_collections.ConfigDict, dict)):
      _check_open(value, f"{path}.{key}")
    elif not isinstance(value, _LITERALS):
      raise ValueError(f"config key '{path}.{key}' must be a literal (number, string, bool, tuple), "
                       f"got {type(value).__name__} {value!r}")


def _check(user: Any, schema: ml_collections.ConfigDict, prefix: str) -> None:
  for key in user.keys():
    path = f"{prefix}{key}"
    if key not in schema:
      close = difflib.get_close_matches(key, list(schema.keys()), n=1)
      hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
      raise ValueError(f"unknown config key {path!r}{hint}; known keys under "
                       f"{prefix.rstrip('.') or 'config'}: {', '.join(sorted(schema.keys()))}")
    want, got = schema[key], user[key]
    if path in OPEN:
      _check_open(got, path)
    elif isinstance(want, ml_collections.ConfigDict):
      if not isinstance(got, (ml_collections.ConfigDict, dict)):
        raise ValueError(f"config key {path!r} must be a section, got {type(got).__name__} {got!r}")
      _check(got, want, path + ".")
    elif not _type_ok(want, got):
      raise ValueError(f"config key {path!r} must be {type(want).__name__} (like the default "
                       f"{want!r}), got {type(got).__name__} {got!r}")
    elif path in CHOICES and got not in CHOICES[path]:
      raise ValueError(f"config key {path!r} must be one of {', '.join(map(repr, CHOICES[path]))}, got {got!r}")


def resolve(config: Any) -> ml_collections.ConfigDict:
  """A full, validated config: the defaults updated with ``config``."""
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
  return merged
