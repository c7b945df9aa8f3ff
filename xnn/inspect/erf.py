"""The effective receptive field (Luo, Li, Urtasun & Zemel 2016, "Understanding the Effective Receptive Field
in Deep Convolutional Neural Networks") of a network at initialisation and at every checkpoint of its
training, beside its theoretical field (Araujo et al. 2019, ``xnn.cost``).

The lecture notes "Design" ("Receptive Field Size"): the theoretical size is the maximum; in practice the
field is much smaller, "a Gaussian like shape centered in the receptive field span". Luo et al. show that it
grows during training (their sec. 4.3, Fig. 3). ``xnn.cost.receptive_field`` computes the map,
E_x |d y_centre / d x| for the centre unit of a stage, and its numbers: the radius of the square around its
peak holding 95% of its mass, and the standard deviation of the Gaussian fitted by moments.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from xnn import plots


def stage_function(model: Any, stage: str) -> Callable:
  """``(variables, x) -> the output of stage`` (a sown path, ``xnn.inspect.stages``), in inference mode."""
  from xnn.inspect.stages import sown

  def features(variables, x):
    return sown(model, variables, x)[1][stage]

  return features


def theoretical_field(features: Callable, abstract_variables: Any, input_shape: tuple[int, ...]) -> dict | None:
  """The exact receptive field of the output of ``features`` (``xnn.cost``: size, stride, padding per axis)
  and ``window``, the input rows and columns [first, last] the centre unit (the one ``erf_map`` follows)
  sees: first = index x stride - padding, last = first + size - 1 (Araujo et al. 2019, eq. 6)."""
  import jax
  from xnn.cost import analyze
  x = jax.ShapeDtypeStruct((1, *input_shape), np.float32)
  field = analyze(features, abstract_variables, x, params_argnums=(0,), input_argnum=1).receptive_field
  if not field:
    return None
  out = jax.eval_shape(features, abstract_variables, x).shape
  window = []
  for axis in range(2):
    size, stride, padding = (v[axis] if isinstance(v, list) else v
                             for v in (field["size"], field["stride"], field["padding"]))
    first = (out[1 + axis] // 2) * stride - padding
    window.append([first, first + size - 1])
  return {**field, "window": window}


def _field_size(theoretical: dict | None) -> int | None:
  if not theoretical:
    return None
  size = theoretical["size"]
  return int(max(size) if isinstance(size, list) else size)


def draw(ax, fig, erf: np.ndarray, numbers: dict[str, Any], title: str, theoretical: dict | None = None) -> None:
  """One heat map with its colour bar: the map, the square holding ``numbers['mass']`` of it (white), a circle
  of radius sigma (cyan) and the theoretical field centred on the peak (dashed, where it fits)."""
  plt = plots.pyplot()
  image = ax.imshow(erf, cmap="viridis", interpolation="nearest")
  fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
  (cr, cc), radius = numbers["centre"], numbers["radius"]
  ax.add_patch(plt.Rectangle((cc - radius - 0.5, cr - radius - 0.5), 2 * radius + 1, 2 * radius + 1, fill=False,
                             color="w", lw=1.2))
  if np.isfinite(numbers["sigma"]):
    ax.add_patch(plt.Circle((cc, cr), numbers["sigma"], fill=False, color="c", lw=1.0))
  if theoretical:
    (r0, r1), (c0, c1) = theoretical["window"]
    ax.add_patch(plt.Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0 + 1, r1 - r0 + 1, fill=False, color="orange", lw=1.0,
                               ls="--"))
    ax.set_xlim(-0.5, erf.shape[1] - 0.5)
    ax.set_ylim(erf.shape[0] - 0.5, -0.5)
  ax.set_title(f"{title}\n{numbers['mass']:.0%} within radius {radius}, 50% within {numbers['radius50']}, "
               f"sigma {numbers['sigma']:.2f}\n{numbers['half_max_area']} pixels at or above half the peak",
               fontsize=8)
  ax.set_xticks([])
  ax.set_yticks([])


def legend_text(theoretical: dict | None, image_shape: tuple[int, ...], how: str) -> str:
  size = _field_size(theoretical)
  field = (f"orange dashed: the theoretical field, {size}x{size} pixels, clipped to the input"
           + (f" (larger than the {image_shape[0]}x{image_shape[1]} input)" if size and size > max(image_shape[:2])
              else "") if size else "no theoretical field")
  return (f"mean |d y_centre / d x| over {how}; white: the square holding 95% of it around its peak; "
          f"cyan: a circle of radius sigma (the fitted Gaussian's std); {field}")


def heatmaps_png(maps: list[tuple[str, np.ndarray, dict]], theoretical: dict | None, image_shape: tuple[int, ...],
                 title: str, how: str, per_row: int = 4) -> bytes:
  """The maps (label, map, numbers) side by side, each with its colour bar."""
  plt = plots.pyplot()
  rows = -(-len(maps) // per_row)
  cols = min(per_row, len(maps))
  fig, axes = plt.subplots(rows, cols, figsize=(max(5.2, 0.5 + 3.0 * cols), 0.9 + 3.1 * rows), squeeze=False)
  for ax in axes.flat[len(maps):]:
    ax.axis("off")
  for ax, (label, erf, numbers) in zip(axes.flat, maps):
    draw(ax, fig, erf, numbers, label, theoretical)
  fig.suptitle(f"{title}\n{legend_text(theoretical, image_shape, how)}", fontsize=8, wrap=True)
  fig.tight_layout()
  return plots.png_bytes(fig)


def heatmap_png(erf: np.ndarray, numbers: dict, title: str, theoretical: dict | None, how: str) -> bytes:
  """A single map (``xnn cost --erf``)."""
  return heatmaps_png([(title, erf, numbers)], theoretical, erf.shape, "effective receptive field of the centre "
                      "output unit", how, per_row=1)


def over_steps_png(steps: list[int], numbers: list[dict], theoretical: dict | None, title: str,
                   image_shape: tuple[int, ...] | None = None) -> bytes:
  """The radii holding 95% and 50% of the map, the fitted sigma and the half-maximum radius at initialisation
  (step 0) and each checkpoint, beside the theoretical field's half-width and the input's."""
  plt = plots.pyplot()
  fig, ax = plt.subplots(figsize=(6.0, 3.6))
  ax.plot(steps, [n["radius"] for n in numbers], "o-", color="C0", label="radius holding 95% of the gradient mass")
  ax.plot(steps, [n["radius50"] for n in numbers], "^-", color="C2", label="radius holding 50% of it")
  ax.plot(steps, [n["sigma"] for n in numbers], "s-", color="C3", label="sigma of the fitted Gaussian")
  ax.plot(steps, [n["half_max_radius"] for n in numbers], "D-", color="C4",
          label="radius of a disc of the area at or above half the peak")
  size = _field_size(theoretical)
  if size is not None:
    ax.axhline((size - 1) / 2, color="orange", ls="--", label=f"theoretical half-width {(size - 1) // 2}")
  if image_shape is not None:
    half = max(image_shape[:2]) // 2
    ax.axhline(half, color="0.5", ls=":", label=f"the input's half-width {half}")
  ax.set_xlabel("training step (0: initialisation)")
  ax.set_ylabel("input pixels")
  ax.set_ylim(bottom=0)
  plots.grid(ax)
  ax.legend(fontsize=7)
  ax.set_title(title, fontsize=9)
  return plots.png_bytes(fig)
