"""Feature maps: what each stage computes for a few test images (the lecture notes "Design", "What Feature
Maps Look Like": smooth regions and edges at the beginning, spiky at the end).

For an image model, one row per image: the image, then the stage's channels with the largest mean
absolute activation over the shown images, each tile on its own colour scale. For a sequence model, one
tile per example: the stage's (T, F) output, steps down, features across.
"""

from __future__ import annotations

import numpy as np

from xnn import plots
from xnn.inspect.stages import shape_text

CHANNELS = 8


def strongest_channels(maps: np.ndarray, n: int = CHANNELS) -> np.ndarray:
  """Indices of the ``n`` channels of (K, H, W, C) maps with the largest mean |activation|, strongest first."""
  strength = np.abs(maps).mean(axis=(0, 1, 2))
  return np.argsort(-strength, kind="stable")[:n]


def feature_maps_png(stage: str, maps: np.ndarray, images: np.ndarray | None, model_name: str,
                     channels: int = CHANNELS) -> bytes:
  """The picture of one stage's ``maps`` (K, H, W, C) (or (K, T, F)) for ``images`` (K, H, W, 3) in [0, 1]."""
  maps = np.asarray(maps, np.float32)
  title = f"{model_name}, {stage}: {shape_text(maps.shape)}"
  if maps.ndim == 3:                                           # sequences: (T, F) per example
    tiles = [[m for m in maps]]
    fig = plots.image_grid(tiles, col_labels=[f"example {k}" for k in range(len(maps))],
                           title=f"{title} (rows: steps, columns: features)", tile_inches=1.6)
    return plots.png_bytes(fig)
  picked = strongest_channels(maps, channels)
  tiles = [([images[k]] if images is not None else []) + [maps[k, :, :, c] for c in picked] for k in range(len(maps))]
  labels = (["input"] if images is not None else []) + [f"channel {c}" for c in picked]
  fig = plots.image_grid(tiles, col_labels=labels, row_labels=[f"test image {k}" for k in range(len(maps))],
                         title=f"{title}: the {len(picked)} channels with the largest mean |activation| "
                               "(each tile on its own scale)")
  return plots.png_bytes(fig)
