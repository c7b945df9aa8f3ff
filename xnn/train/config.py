"""Config resolution: the embedded default is the schema.

``resolve(config)`` checks every key of a user config against the default
(``xnn/configs/default.py``): an unknown key (with the closest known one) or a
value of the wrong type is a ``ValueError`` naming it, raised before any data
is read or anything is compiled.
"""

from __future__ import annotations

import ast
import difflib
from typing import Any

import ml_collections

from xnn.configs.default import get_config as default_config

_NUMERIC = (int, float)


def _check(user: Any, schema: ml_collections.ConfigDict, prefix: str) -> None:
  for key in user.keys():
    path = f"{prefix}{key}"
    if key not in schema:
      close = difflib.get_close_matches(key, list(schema.keys()), n=1)
      hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
      raise ValueError(f"unknown config key {path!r}{hint}; known keys under "
                       f"{prefix.rstrip('.') or 'config'}: {', '.join(sorted(schema.keys()))}")
    want, got = schema[key], user[key]
    if isinstance(want, ml_collections.ConfigDict):
      if not isinstance(got, (ml_collections.ConfigDict, dict)):
        raise ValueError(f"config key {path!r} must be a section, got {type(got).__name__} {got!r}")
      _check(got, want, path + ".")
      continue
    ok = (isinstance(got, type(want)) and not (isinstance(got, bool) and not isinstance(want, bool))
          or (isinstance(want, float) and isinstance(got, int) and not isinstance(got, bool)))
    if not ok:
      raise ValueError(f"config key {path!r} must be {type(want).__name__} (like the default "
                       f"{want!r}), got {type(got).__name__} {got!r}")


def resolve(config: Any) -> ml_collections.ConfigDict:
  """A full, validated config: the defaults updated with ``config``."""
  schema = default_config()
  _check(config, schema, "")
  merged = default_config()
  merged.update(ml_collections.ConfigDict(config).to_dict() if not isinstance(config, dict) else config)
  return merged


def parse_kwargs(text: str) -> dict[str, Any]:
  """``"shortcut='B', width=0.5"`` -> ``{"shortcut": "B", "width": 0.5}`` (bare words are strings)."""
  text = text.strip()
  if not text:
    return {}
  try:
    call = ast.parse(f"f({text})", mode="eval").body
  except SyntaxError as e:
    raise ValueError(f"model.kwargs must look like \"name=value, ...\", got {text!r}") from e
  if not isinstance(call, ast.Call) or call.args:
    raise ValueError(f"model.kwargs must be keyword arguments name=value, got {text!r}")
  out = {}
  for kw in call.keywords:
    try:
      out[kw.arg] = ast.literal_eval(kw.value)
    except ValueError:
      if isinstance(kw.value, ast.Name):
        out[kw.arg] = kw.value.id
      else:
        raise ValueError(f"model.kwargs value for {kw.arg!r} must be a literal, got {ast.unparse(kw.value)!r}") from None
  return out
