"""Synthetic sequence-to-sequence tasks: copy, reverse, sort, addition (pure NumPy, seeded).

``make_task(name, num_examples, seed, length=10, vocab=10, min_length=None)``
returns a dict of NumPy arrays:

* ``inputs``          int32 (N, T_in)   source tokens, 0-padded on the right
* ``inputs_mask``     float32 (N, T_in) 1 at valid source tokens
* ``decoder_inputs``  int32 (N, T_out)  ``[BOS] + targets[:-1]`` (teacher forcing)
* ``targets``         int32 (N, T_out)  answer tokens then EOS, 0-padded
* ``targets_mask``    float32 (N, T_out) 1 at answer tokens and the EOS

Token ids (shared by every task, so one model vocabulary fits all):
PAD = 0, BOS = 1, EOS = 2, PLUS = 3, and symbol s in [0, vocab) -> 4 + s.
``vocab_size(vocab) = vocab + 4``.

Tasks (sequence length drawn uniformly in [min_length, length]; ``min_length``
defaults to ``length``, i.e. fixed length):

* ``copy``     target = source.
* ``reverse``  target = source reversed.
* ``sort``     target = source sorted ascending.
* ``addition`` source ``a + b`` with a, b of 1..``length`` base-``vocab`` digits
  (most significant first, no leading zeros), target = digits of a + b.
  T_in = 2 * length + 1, T_out = length + 2. E.g. "123+456" -> "579".

For copy/reverse/sort T_in = length and T_out = length + 1.
"""

from __future__ import annotations

import numpy as np

PAD, BOS, EOS, PLUS = 0, 1, 2, 3
OFFSET = 4
TASKS = ("copy", "reverse", "sort", "addition")


def vocab_size(vocab: int = 10) -> int:
  """Number of token ids used by tasks over ``vocab`` symbols."""
  return vocab + OFFSET


def _digits(x: int, base: int) -> list[int]:
  out = []
  while True:
    out.append(x % base)
    x //= base
    if x == 0:
      return out[::-1]


def _pack(rows: list[list[int]], width: int) -> tuple[np.ndarray, np.ndarray]:
  arr = np.zeros((len(rows), width), np.int32)
  mask = np.zeros((len(rows), width), np.float32)
  for i, r in enumerate(rows):
    arr[i, : len(r)] = r
    mask[i, : len(r)] = 1.0
  return arr, mask


def make_task(name: str, num_examples: int, seed: int = 0, length: int = 10, vocab: int = 10,
              min_length: int | None = None) -> dict[str, np.ndarray]:
  """Generates ``num_examples`` examples of task ``name``; see the module docstring."""
  if name not in TASKS:
    raise ValueError(f"unknown task {name!r}; choose from {TASKS}")
  if length < 1 or vocab < 2:
    raise ValueError("length must be >= 1 and vocab >= 2")
  lo = length if min_length is None else min_length
  if not 1 <= lo <= length:
    raise ValueError(f"min_length must be in [1, {length}]")
  rng = np.random.default_rng(seed)
  sources, answers = [], []
  for _ in range(num_examples):
    if name == "addition":
      a, b = (_random_number(rng, int(rng.integers(lo, length + 1)), vocab) for _ in range(2))
      sources.append([OFFSET + d for d in _digits(a, vocab)] + [PLUS] + [OFFSET + d for d in _digits(b, vocab)])
      answers.append([OFFSET + d for d in _digits(a + b, vocab)])
    else:
      s = rng.integers(0, vocab, size=int(rng.integers(lo, length + 1))) + OFFSET
      sources.append(s.tolist())
      answers.append({"copy": s, "reverse": s[::-1], "sort": np.sort(s)}[name].tolist())
  t_in = 2 * length + 1 if name == "addition" else length
  t_out = (length + 1 if name == "addition" else length) + 1
  inputs, inputs_mask = _pack(sources, t_in)
  targets, targets_mask = _pack([a + [EOS] for a in answers], t_out)
  decoder_inputs = np.concatenate([np.full((num_examples, 1), BOS, np.int32), targets[:, :-1]], axis=1)
  decoder_inputs = np.where(np.concatenate([np.ones((num_examples, 1)), targets_mask[:, :-1]], 1) > 0,
                            decoder_inputs, PAD).astype(np.int32)
  return dict(inputs=inputs, inputs_mask=inputs_mask, decoder_inputs=decoder_inputs,
              targets=targets, targets_mask=targets_mask)


def _random_number(rng: np.random.Generator, num_digits: int, base: int) -> int:
  """A uniformly drawn number with exactly ``num_digits`` base-``base`` digits."""
  if num_digits == 1:
    return int(rng.integers(0, base))
  first = int(rng.integers(1, base))
  rest = rng.integers(0, base, size=num_digits - 1)
  x = first
  for d in rest:
    x = x * base + int(d)
  return x


def detokenize(tokens, vocab: int = 10) -> str:
  """Readable string of a token row, stopping at EOS: symbols as digits/letters, PLUS as '+'."""
  chars = []
  for t in np.asarray(tokens).tolist():
    if t == EOS:
      break
    if t == PLUS:
      chars.append("+")
    elif t >= OFFSET:
      s = t - OFFSET
      chars.append(str(s) if s < 10 else chr(ord("a") + s - 10))
  return "".join(chars)
