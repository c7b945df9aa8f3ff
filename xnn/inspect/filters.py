"""The first convolution's filters as tiles: RGB for a 3-channel input, grey otherwise (the lecture notes
"Design", "CNNs: Visualization"; Krizhevsky et al. 2012, Fig. 3)."""

from __future__ import annotations

from typing import Any

import numpy as np

from xnn import plots


def first_conv(model: Any, *inputs: Any) -> tuple[str, ...] | None:
  """Path of the first 2-D convolution kernel (KH, KW, C_in, C_out) among the model's parameters in the order
  ``model.init`` creates them -- read while it is traced, as a dict walked in insertion order (a jitted or
  ``eval_shape``-d result, and a restored checkpoint, have their keys sorted: ``stem`` after ``stage3``) --
  or None."""
  import jax
  found: list[tuple[str, ...]] = []

  def walk(tree: Any, path: tuple[str, ...]) -> None:
    for key, value in tree.items():
      if found:
        return
      if hasattr(value, "items"):
        walk(value, (*path, str(key)))
      elif key == "kernel" and len(value.shape) == 4:
        found.append((*path, "kernel"))

  def trace(*xs):
    walk(model.init({"params": jax.random.key(0), "dropout": jax.random.key(0)}, *xs, train=False)["params"], ())
    return 0

  jax.eval_shape(trace, *inputs)
  return found[0] if found else None


def lookup(tree: Any, path: tuple[str, ...]) -> Any:
  for key in path:
    tree = tree[key]
  return tree


def filter_tiles(kernel: np.ndarray, grey: bool = False) -> list[np.ndarray]:
  """One (KH, KW, 3) tile in [0, 1] per output filter of a (KH, KW, C_in, C_out) kernel, each scaled by its own
  largest |weight| so that mid-grey is 0: in colour for C_in = 3, else (or with ``grey``: an input whose
  channels are one grey value replicated, which sees only their sum) the sum over input channels in grey."""
  kernel = np.asarray(kernel, np.float32)
  tiles = []
  for o in range(kernel.shape[-1]):
    w = kernel[..., o]
    if grey or w.shape[-1] != 3:
      w = np.repeat(w.sum(axis=-1, keepdims=True), 3, axis=-1)
    tiles.append(0.5 + 0.5 * w / max(float(np.abs(w).max()), 1e-12))
  return tiles


def filters_png(kernel: np.ndarray, path: tuple[str, ...], title: str, grey: bool = False, per_row: int = 16) -> bytes:
  tiles = filter_tiles(kernel, grey)
  rows = [tiles[i:i + per_row] for i in range(0, len(tiles), per_row)]
  kh, kw, cin, cout = kernel.shape
  how = "in colour" if cin == 3 and not grey else f"the sum over the {cin} input channels, grey" + (
      " (the input's channels are one grey value replicated)" if grey else "")
  fig = plots.image_grid(rows, col_labels=[[f"{i * per_row + j}" for j in range(len(r))] for i, r in enumerate(rows)],
                         tile_inches=0.8,
                         title=f"{title}: {'/'.join(path[:-1])}, {cout} filters {kh}x{kw}x{cin}\n{how}; each "
                               "scaled by its largest |weight|, mid-grey = 0")
  return plots.png_bytes(fig)
