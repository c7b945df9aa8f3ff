"""Matplotlib helpers shared by a run's ``curves.png``, ``xnn report``'s and ``xnn inspect``'s figures.

Headless (the Agg backend), integer epoch ticks, log-scaled loss axes, PNG bytes
ready for an atomic write, labels placed next to points without overlapping
each other or leaving the axes, and grids of image tiles. Matplotlib is imported
on first use.
"""

from __future__ import annotations

import io
import math
from typing import Any, Sequence


def pyplot():
  """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def as_float(v: Any) -> float:
  """A metrics value as a float; the ``"nan"``/``"inf"`` strings non-finite values are logged as become NaN."""
  try:
    f = float(v)
  except (TypeError, ValueError):
    return math.nan
  return f if math.isfinite(f) else math.nan


def epoch_axis(ax, label: str = "epoch") -> None:
  """Labels the x axis and puts its ticks on whole epochs only."""
  from matplotlib.ticker import MaxNLocator
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  ax.set_xlabel(label)


def log_axis(ax, label: str) -> None:
  """A log-scaled y axis (a loss spike of thousands leaves the rest readable); non-positive values are dropped."""
  ax.set_yscale("log", nonpositive="mask")
  ax.set_ylabel(f"{label} (log scale)")


def grid(ax) -> None:
  """Major grid lines, and fainter minor ones (the decades' subdivisions on a log axis)."""
  ax.grid(alpha=0.3, which="major")
  ax.grid(alpha=0.08, which="minor")


def group_colors(n: int) -> list:
  """``n`` distinct colours: tab10, or tab20 for more than ten groups (then repeating)."""
  import matplotlib
  cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
  return [cmap(i % cmap.N) for i in range(n)]


def png_bytes(fig, dpi: int = 100) -> bytes:
  """The figure as PNG bytes, cropped to what is drawn (legends outside the axes included); closes it."""
  plt = pyplot()
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.15)
  plt.close(fig)
  return buf.getvalue()


def image_grid(tiles: Sequence[Sequence[Any]], *, row_labels: Sequence[str] | None = None,
               col_labels: Sequence[Sequence[str]] | Sequence[str] | None = None, title: str = "",
               cmap: str = "viridis", tile_inches: float = 1.1, fontsize: float = 7):
  """A figure of image tiles, ``tiles[row][col]``: an (H, W) array drawn with ``cmap`` scaled to its own range,
  an (H, W, 3) array in [0, 1] as RGB, or None for an empty cell. ``col_labels`` names the columns (one list,
  written above the top row, or one list per row, written above each tile); ``row_labels`` the rows. Returns
  the figure (``png_bytes`` it)."""
  import numpy as np
  plt = pyplot()
  rows, cols = len(tiles), max(len(r) for r in tiles)
  per_row = col_labels is not None and len(col_labels) == rows and not isinstance(col_labels[0], str)
  lines = max((str(label).count("\n") + 1 for labels in (col_labels or []) for label in
               (labels if per_row else [labels])), default=0)
  label_inches = 0.15 * lines if per_row else 0.0          # each row's own labels need room above it
  fig, axes = plt.subplots(rows, cols, figsize=(0.3 + tile_inches * cols,
                                                0.5 + 0.15 * lines + (tile_inches + 0.15 + label_inches) * rows),
                           squeeze=False)
  for r, row in enumerate(tiles):
    for c in range(cols):
      ax = axes[r][c]
      ax.set_xticks([])
      ax.set_yticks([])
      tile = row[c] if c < len(row) else None
      if tile is None:
        ax.axis("off")
        continue
      tile = np.asarray(tile, np.float32)
      if tile.ndim == 3:
        ax.imshow(np.clip(tile, 0.0, 1.0), interpolation="nearest")
      else:
        ax.imshow(tile, cmap=cmap, interpolation="nearest")
      label = None
      if col_labels is not None and (per_row or r == 0):       # shared labels name the top row only
        label = (col_labels[r] if per_row else col_labels)[c]
      if label:
        ax.set_title(label, fontsize=fontsize)
      if c == 0 and row_labels is not None:
        ax.set_ylabel(row_labels[r], fontsize=fontsize)
  if title:
    fig.suptitle(title, fontsize=fontsize + 2)
  fig.tight_layout()
  return fig


# Offsets (points) tried in turn for a point's label: right, above, below, left, then further out.
_OFFSETS = ((8, 3), (8, -11), (-8, 3), (-8, -11), (0, 10), (0, -18), (10, 16), (10, -24), (-10, 16), (-10, -24),
            (14, 26), (14, -34), (-14, 26), (-14, -34))


def label_points(ax, xs: Sequence[float], ys: Sequence[float], labels: Sequence[str], fontsize: float = 7,
                 **text_kw) -> list:
  """Writes ``labels[i]`` next to ``(xs[i], ys[i])``, each at the first offset where it stays inside
  the axes and overlaps no other label and no point (else where it stays inside and overlaps least).
  Set the axes' limits first: labels are placed for the limits at the time of the call."""
  renderer = ax.figure.canvas.get_renderer()
  inside = ax.get_window_extent(renderer).padded(-2)
  points = [(x, y, *ax.transData.transform((x, y))) for x, y in zip(xs, ys)]
  taken = [(px - 9, py - 9, px + 9, py + 9) for _, _, px, py in points]      # the markers themselves
  texts = []
  for (x, y, _, _), label in sorted(zip(points, labels), key=lambda p: (p[0][2], -p[0][3])):
    best = None
    for dx, dy in _OFFSETS:
      t = ax.annotate(label, xy=(x, y), xytext=(dx, dy), textcoords="offset points",
                      ha="left" if dx >= 0 else "right", va="bottom", fontsize=fontsize, **text_kw)
      b = t.get_window_extent(renderer)
      box = (b.x0, b.y0, b.x1, b.y1)
      outside = not (inside.x0 <= b.x0 and b.x1 <= inside.x1 and inside.y0 <= b.y0 and b.y1 <= inside.y1)
      score = (outside, sum(_overlap(box, o) for o in taken))
      if best is None or score < best[0]:
        if best is not None:
          best[1].remove()
        best = (score, t, box)
      else:
        t.remove()
      if score == (False, 0):
        break
    taken.append(best[2])
    texts.append(best[1])
  return texts


def _overlap(a: tuple, b: tuple) -> bool:
  return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
