"""``inspect.json`` and ``index.md``: the numbers and the pictures of ``xnn inspect`` together."""

from __future__ import annotations

import math
from typing import Any


def json_safe(v: Any) -> Any:
  """Strict JSON: tuples as lists, NumPy scalars as numbers, a non-finite float as its name."""
  import numpy as np
  if isinstance(v, dict):
    return {str(k): json_safe(x) for k, x in v.items()}
  if isinstance(v, (list, tuple)):
    return [json_safe(x) for x in v]
  if isinstance(v, np.ndarray):
    return json_safe(v.tolist())
  if isinstance(v, np.generic):
    v = v.item()
  if isinstance(v, float) and not math.isfinite(v):
    return str(v)
  return v


def _picture(name: str, alt: str) -> str:
  return f"![{alt}]({name})"


def _skipped(result: dict, section: str) -> list[str]:
  why = result["skipped"].get(section)
  return [f"Not shown: {why}.", ""] if why else ["Not computed (not among `--only`).", ""]


def index_markdown(result: dict[str, Any]) -> str:
  """The page that shows every picture with its numbers (relative links: it lives beside them)."""
  title = f"{result['model']} on {result['dataset']}, step {result['step']}"
  lines = [f"# Inside {title}", "",
           f"Run `{result['workdir']}`, checkpoints at steps {', '.join(map(str, result['checkpoints']))}; input "
           f"{'x'.join(map(str, result['input_shape']))}; stages "
           + ", ".join(f"{s} ({'x'.join(map(str, shape))})" for s, shape in result["stages"].items()) + ".", ""]

  lines += ["## Feature maps", ""]
  if "feature_maps" in result:
    lines += ["Each stage's output for the first test images: the channels with the largest mean |activation|, "
              "each tile on its own colour scale.", ""]
    for stage, d in result["feature_maps"]["stages"].items():
      lines += [f"{stage} ({d['shape']}):", "", _picture(d["png"], f"feature maps of {stage}"), ""]
  else:
    lines += _skipped(result, "feature_maps")

  lines += ["## First-layer filters", ""]
  if "filters" in result:
    d = result["filters"]
    lines += [f"`{d['layer']}`, kernel {'x'.join(map(str, d['kernel_shape']))} (KH x KW x C_in x C_out).", "",
              _picture(d["png"], "first-layer filters"), ""]
  else:
    lines += _skipped(result, "filters")

  lines += ["## Saliency", ""]
  if "saliency" in result:
    d = result["saliency"]
    lines += ["Gradient of the predicted class score with respect to the input (Simonyan et al. 2014), SmoothGrad "
              "(Smilkov et al. 2017) and integrated gradients from the all-zero model input (Sundararajan et al. "
              "2017), overlaid on the input.", "",
              f"Labels {d['labels']}, predicted {d['predicted']}. Completeness of integrated gradients (sum of the "
              "attributions = score(x) - score(baseline)): "
              + ", ".join(f"{a:.3f} vs {b:.3f}" for a, b in zip(d["ig_sum"], d["score_minus_baseline"])) + ".", "",
              _picture(d["png"], "saliency"), ""]
  else:
    lines += _skipped(result, "saliency")

  lines += ["## Feature visualisation", ""]
  if "feature_vis" in result:
    d = result["feature_vis"]
    s = d["settings"]
    lines += [f"Inputs optimised (Olah et al. 2017) for channels of {d['stage']} and for each class: {s['steps']} "
              f"Adam steps at lr {s['learning_rate']}, jitter {s['jitter']} px, blur {s['blur']} px, "
              f"{'decorrelated' if s['decorrelate'] else 'pixel'} parameterisation, seed {s['seed']}.", ""]
    for kind in ("channels", "classes"):
      k = d[kind]
      rose = sum(k["increased_every_step"])
      lines += [f"{kind}: {k['targets']}; the objective of the image as it is (without jitter and blur) rose at "
                f"every step for {rose} of {len(k['targets'])}; steps where it fell: {k['steps_down']}, by at most "
                + ", ".join(f"{x:.3f}" for x in k["largest_drop"]) + "; from "
                + ", ".join(f"{a:.2f} to {b:.2f}" for a, b in zip(k["objective_start"], k["objective_end"])) + ".",
                "", _picture(k["png"], f"feature visualisation, {kind}"), ""]
  else:
    lines += _skipped(result, "feature_vis")

  lines += ["## Effective receptive field", ""]
  if "erf" in result:
    d = result["erf"]
    t = d["theoretical"]
    lines += [f"E_x |d y_centre / d x| for the centre unit of {d['stage']} (Luo et al. 2016), over {d['inputs']}: "
              f"at initialisation ({d['initialisation']}) and at each stored checkpoint. The theoretical field "
              f"(xnn.cost) is {t['size'] if t else 'none'} pixels"
              + (f", rows {t['window'][0]} and columns {t['window'][1]} of the input" if t else "") + ".", "",
              "| map | step | radius holding 95% | radius holding 50% | sigma of the fitted Gaussian | "
              "pixels at or above half the peak | peak (row, col) |",
              "|---|---|---|---|---|---|---|"]
    for m in d["maps"]:
      lines.append(f"| {m['label']} | {m['step']} | {m['radius']} ({m['size']}x{m['size']}) | {m['radius50']} | "
                   f"{m['sigma']:.3f} | {m['half_max_area']} | {tuple(m['centre'])} |")
    lines += ["", _picture("erf.png", "effective receptive field heat maps"), "",
              _picture("erf_steps.png", "effective receptive field over training"), ""]
  else:
    lines += _skipped(result, "erf")

  lines += ["## Linear probes", ""]
  if "probes" in result:
    d = result["probes"]
    lines += [f"Logistic regression on each stage's globally pooled features (Alain & Bengio 2016), fitted on "
              f"{d['train_examples']} training examples, tested on {d['test_examples']}; chance (the most "
              f"frequent class) {d['chance']:.4f}.", "",
              "| stage | features | train accuracy | test accuracy |", "|---|---|---|---|"]
    for s, r in d["stages"].items():
      lines.append(f"| {s} | {r['features']} | {r['train_accuracy']:.4f} | {r['test_accuracy']:.4f} |")
    lines += ["", _picture(d["png"], "linear probes"), ""]
  else:
    lines += _skipped(result, "probes")

  lines += ["## Attention", ""]
  if "attention" in result:
    d = result["attention"]
    lines += ["Attention weights per layer (rows) and head (columns) for each test example shown: "
              + ", ".join(f"`{p}` {'x'.join(map(str, s))}" for p, s in d["layers"].items()) + ".", ""]
    lines += [_picture(p, f"attention, test example {k}") + "\n" for k, p in enumerate(d["png"])]
  else:
    lines += _skipped(result, "attention")
  return "\n".join(lines).rstrip() + "\n"
