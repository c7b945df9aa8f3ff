"""One parser for the strings a config receives: ``FILE:ARG`` arguments and override values.

``parse_arg(arg, **spec)`` reads a config file's argument (big_vision's ``parse_arg``):
comma-separated values, positional in the order of ``spec`` or ``name=value``; a
bare name that is a boolean option of ``spec`` switches it on::

    parse_arg("addition,rnn", task="reverse", model="transformer")
        -> {"task": "addition", "model": "rnn"}
    parse_arg("epochs=12,quick", epochs=24, quick=False) -> {"epochs": 12, "quick": True}

``parse_value(text)`` reads one value: a Python literal (``3``, ``0.5``, ``'B'``,
``(1, 2)``, ``True``/``true``) or else the text itself as a string (``pixel``,
``train[:45000]``). Both raise ``ValueError`` naming the text and what was expected.

``override_error(message)`` rewrites absl's error for a ``--config.FIELD=TEXT`` override
it could not parse (``flag --config.train.num_epochs=abc: invalid literal for int() ...``)
as one line naming the field, the text and what the field takes
(``xnn.configs.schema.RANGES``). Values that absl does parse (``schedule.boundaries=abc``
is the tuple ``('abc',)``) are checked by ``xnn.configs.schema.resolve``.
"""

from __future__ import annotations

import ast
import re
from typing import Any

_BOOLS = {"true": True, "false": False}


def _literal(node: ast.expr, text: str) -> Any:
  try:
    return ast.literal_eval(node)
  except ValueError:
    source = ast.get_source_segment(text, node) or ast.unparse(node)
    return _BOOLS.get(source.lower(), source)


def parse_value(text: str) -> Any:
  """A Python literal, or the text as a string (``true``/``false`` are booleans too)."""
  stripped = text.strip()
  if stripped.lower() in _BOOLS:
    return _BOOLS[stripped.lower()]
  try:
    node = ast.parse(stripped, mode="eval").body
  except SyntaxError:
    return stripped
  return _literal(node, stripped)


def _split(arg: str) -> tuple[list[Any], dict[str, Any]]:
  """Positional values and name=value pairs of ``arg`` (commas inside brackets/quotes kept)."""
  try:
    call = ast.parse(f"f({arg})", mode="eval").body
  except SyntaxError:
    raise ValueError(f"config argument {arg!r} must look like 'value,...' or 'name=value,...'") from None
  text = f"f({arg})"
  positional = [_literal(a, text) for a in call.args]
  named = {kw.arg: _literal(kw.value, text) for kw in call.keywords if kw.arg is not None}
  return positional, named


def _convert(name: str, value: Any, default: Any) -> Any:
  """``value`` as the type of ``default`` (int -> float allowed); ValueError naming both."""
  if default is None or value is None or isinstance(value, type(default)) and not (
      isinstance(value, bool) and not isinstance(default, bool)):
    return value
  if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  raise ValueError(f"config argument {name}={value!r} must be {type(default).__name__} "
                   f"(like the default {default!r})")


def parse_arg(arg: str | None, *, lazy: bool = False, **spec: Any) -> dict[str, Any]:
  """The values of ``spec`` (name=default, in order) read from ``arg``; see the module docstring.

  ``lazy``: names not in ``spec`` are kept (as ``parse_value`` reads them) instead of
  being an error.
  """
  arg = (arg or "").strip()
  positional, named = _split(arg) if arg else ([], {})
  out = dict(spec)
  names = list(spec)
  flags = {n for n, d in spec.items() if isinstance(d, bool)}
  for value in positional:
    if isinstance(value, str) and value in flags:
      named.setdefault(value, True)
      continue
    free = [n for n in names if n not in named and n not in flags]
    if not free:
      raise ValueError(f"config argument {arg!r}: too many values; expected {', '.join(names) or 'none'}")
    named[free[0]] = value
  for name, value in named.items():
    if name not in spec and not lazy:
      raise ValueError(f"config argument {arg!r}: unknown option {name!r}; expected {', '.join(names) or 'none'}")
    out[name] = _convert(name, value, spec.get(name))
  return out


# absl.flags' IllegalFlagValueError text: "flag --NAME=ARGUMENT: REASON"
_FLAG_ERROR = re.compile(r"flag --config\.([A-Za-z_][\w.]*)=(.*?): ", re.DOTALL)


def override_error(message: str) -> str:
  """absl's error for an unparsable ``--config.FIELD=TEXT`` as one line naming FIELD, TEXT and what
  FIELD takes; any other message comes back unchanged."""
  match = _FLAG_ERROR.match(message)
  if match is None:
    return message
  from xnn.configs import schema
  path, text = match.groups()
  if path not in schema.RANGES:
    return message
  return f"config key {path!r} {schema.expectation(path)}, got {text!r}"
