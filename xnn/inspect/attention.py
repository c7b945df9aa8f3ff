"""Attention weights per layer and head (the lecture notes "Design", "Attention", "Visualization": alignments
of the queries with the keys), from the weights a model sows (``xnn.inspect.stages``)."""

from __future__ import annotations

import numpy as np

from xnn import plots


def heads(weights: np.ndarray) -> np.ndarray:
  """One example's attention weights as (heads, M_q, M_kv): (H, M_q, M_kv) as it is, (M_q, M_kv) as one head."""
  w = np.asarray(weights, np.float32)
  return w[None] if w.ndim == 2 else w


def attention_png(maps: dict[str, np.ndarray], example: int, title: str) -> bytes:
  """One row per attention layer (its sown path), one column per head: the weights of one example."""
  rows, labels = [], []
  for path, w in maps.items():
    h = heads(w[example])
    rows.append(list(h))
    labels.append([f"{path.removesuffix('/attention_weights')}\nhead {i}" for i in range(len(h))])
  fig = plots.image_grid(rows, col_labels=labels, title=f"{title} (rows: queries, columns: keys; "
                         "each tile scaled to its own range)", tile_inches=1.7, fontsize=6)
  return plots.png_bytes(fig)
