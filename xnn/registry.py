"""String-keyed registries (scenic style): a config names what it uses."""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
  """Raised for a name that is not registered; lists what is."""

  def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
    return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
  """A mapping from names to entries with helpful errors.

  Args:
    kind: what the entries are ("model", "dataset"), used in error messages.
  """

  def __init__(self, kind: str):
    self.kind = kind
    self._entries: dict[str, T] = {}

  def add(self, name: str, entry: T) -> T:
    if name in self._entries:
      raise ValueError(f"{self.kind} {name!r} is already registered")
    self._entries[name] = entry
    return entry

  def get(self, name: str) -> T:
    try:
      return self._entries[name]
    except KeyError:
      close = difflib.get_close_matches(name, self._entries, n=3)
      hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
      raise UnknownNameError(
          f"unknown {self.kind} {name!r}.{hint} Available {self.kind}s: "
          f"{', '.join(sorted(self._entries))}") from None

  def __contains__(self, name: object) -> bool:
    return name in self._entries

  def __iter__(self) -> Iterator[str]:
    return iter(sorted(self._entries))

  def __len__(self) -> int:
    return len(self._entries)

  def names(self, where: Callable[[T], bool] | None = None) -> list[str]:
    return sorted(n for n, e in self._entries.items() if where is None or where(e))

  def items(self) -> list[tuple[str, T]]:
    return sorted(self._entries.items())
