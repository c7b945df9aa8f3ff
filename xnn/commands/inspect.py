"""``xnn inspect WORKDIR [--step N] [--images K] [--out DIR] [--only SECTIONS]``: look inside a trained run.

The run's own config (``WORKDIR/config.json``) rebuilds its model and data, as ``xnn eval`` does; the newest
checkpoint that verifies (or step ``N``) gives the weights. Written to ``DIR`` (default
``WORKDIR/inspect``), each file atomically and only once everything is computed:

* ``feature_maps_STAGE.png``: every stage's output for the first K test images (``xnn.inspect.feature_maps``)
* ``filters.png``: the first convolution's filters (``xnn.inspect.filters``)
* ``saliency.png``: gradient, SmoothGrad and integrated gradients of the predicted class score
  (``xnn.inspect.saliency``)
* ``feature_vis_channels.png``, ``feature_vis_classes.png``: inputs optimised to excite channels of the last
  stage and each class (``xnn.inspect.feature_vis``)
* ``erf.png``, ``erf_steps.png``: the effective receptive field of the last stage's centre unit at the
  run's initialisation and at every stored checkpoint, beside the theoretical field (``xnn.inspect.erf``)
* ``probes.png``: linear-probe test accuracy per stage (``xnn.inspect.probes``)
* ``attention_K.png``: attention weights per layer and head (``xnn.inspect.attention``)
* ``inspect.json``: every number above; ``index.md``: the pictures together, with what each shows.

A section that does not apply to the model (filters of a Transformer, a receptive field of a sequence model,
saliency of integer tokens) is listed as skipped with the reason; named in ``--only``, it is an error. Like
``xnn eval``, nothing of the run is touched and a run still training may be inspected. Compiled programs go to
the run's persistent compilation cache (``train.compilation_cache``; none when it is the run's ``workdir``), so
inspecting a run again compiles nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import time
from typing import Any, Callable

from xnn.commands import ArgumentParser, CommandError, positive_int
from xnn.commands.eval import check_checkpoints, restore_checkpoint, run_config

SECTIONS = ("feature_maps", "filters", "saliency", "feature_vis", "erf", "probes", "attention")
OUTPUT, INDEX = "inspect.json", "index.md"
VIS_CHANNELS = 8


@dataclasses.dataclass(frozen=True)
class Options:
  images: int = 4                    # test images shown
  vis_steps: int = 256               # feature visualisation steps
  erf_inputs: int = 32               # test images the ERF is averaged over
  probe_examples: int = 10_000       # training examples the probes are fitted on (the first ones)
  smoothgrad_samples: int = 32
  ig_steps: int = 32


def _sections(text: str) -> tuple[str, ...]:
  names = tuple(t.strip() for t in text.split(",") if t.strip())
  bad = [n for n in names if n not in SECTIONS]
  if not names or bad:
    raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected section names separated by commas, "
                                     f"from {', '.join(SECTIONS)}")
  return names


def parser() -> argparse.ArgumentParser:
  p = ArgumentParser(prog="xnn inspect", description="Look inside a trained run: feature maps, filters, saliency, "
                     "feature visualisation, effective receptive field over training, linear probes, attention; "
                     f"writes pictures, {OUTPUT} and {INDEX} to DIR (default WORKDIR/inspect).")
  p.add_argument("workdir", metavar="WORKDIR", help="a run folder (xnn train --workdir, or one run of a sweep)")
  p.add_argument("--step", type=positive_int, default=None, help="this checkpoint step (default: the newest)")
  p.add_argument("--images", type=positive_int, default=Options.images, help="test images shown (default 4)")
  p.add_argument("--out", default=None, metavar="DIR", help="output folder (default WORKDIR/inspect)")
  p.add_argument("--only", type=_sections, default=None, metavar="SECTIONS",
                 help=f"only these sections, comma-separated: {', '.join(SECTIONS)}")
  p.add_argument("--vis-steps", type=positive_int, default=Options.vis_steps,
                 help="feature visualisation steps (default 256)")
  p.add_argument("--erf-inputs", type=positive_int, default=Options.erf_inputs,
                 help="test images the effective receptive field is averaged over (default 32)")
  p.add_argument("--probe-examples", type=positive_int, default=Options.probe_examples,
                 help="training examples the linear probes are fitted on (default 10000)")
  return p


def main(argv: list[str]) -> int:
  args = parser().parse_args(argv)
  options = Options(images=args.images, vis_steps=args.vis_steps, erf_inputs=args.erf_inputs,
                    probe_examples=args.probe_examples)
  result = inspect_run(args.workdir, step=args.step, out=args.out, only=args.only, options=options)
  print(summary(result))
  return 0


def _warn(text: str) -> None:
  print(f"xnn inspect: warning: {text}", file=sys.stderr, flush=True)


def _out_folder(workdir: str, out: str | None) -> str:
  """The output folder, checked (it need not exist yet, its parent must) before anything is computed."""
  out = out or os.path.join(workdir, "inspect")
  if os.path.exists(out) and not os.path.isdir(out):
    raise CommandError(f"--out {out}: exists and is not a folder")
  parent = os.path.dirname(os.path.abspath(out))
  if not os.path.isdir(parent):
    raise CommandError(f"--out {out}: folder {parent} does not exist")
  if not os.access(out if os.path.isdir(out) else parent, os.W_OK):
    raise CommandError(f"--out {out}: not writable")
  return out


class Prefix:
  """The first ``n`` records of a data source (the probes' training examples)."""

  def __init__(self, source: Any, n: int):
    self.source, self.n = source, min(n, len(source))

  def __len__(self) -> int:
    return self.n

  def __getitem__(self, i: int) -> Any:
    if not 0 <= i < self.n:
      raise IndexError(i)
    return self.source[i]


@dataclasses.dataclass
class Run:
  """A run as ``xnn inspect`` reads it: config, data, model, task, one checkpoint's weights."""
  workdir: str
  cfg: Any
  ds: Any
  model: Any
  task: Any
  step: int
  weights: dict
  steps: list[int]

  @property
  def name(self) -> str:
    return f"{self.cfg.model.name} on {self.cfg.data.name}"

  @functools.cached_property
  def preprocess(self) -> Any:
    """The evaluation preprocessing (its normalisation: per-channel statistics are read once)."""
    from xnn.data.pipeline import make_preprocess
    return make_preprocess(self.ds, self.cfg.data, train=False)

  def batches(self, split: str, batch_size: int, limit: int | None = None):
    """The split in order, preprocessed as for evaluation; ``limit``: its first examples only."""
    from xnn.data import pipeline
    source = self.ds.test if split == "test" else self.ds.train
    if limit is not None:
      source = Prefix(source, limit)
    return pipeline.eval_batches(dataclasses.replace(self.ds, test=source), self.cfg.data, batch_size)

  def first(self, n: int) -> dict:
    """The first ``n`` test examples as one batch."""
    return next(iter(self.batches("test", n, limit=n)))

  def example_inputs(self) -> tuple:
    return self.task.inputs({k: v[:1] for k, v in self.first(1).items()})

  def initial_weights(self) -> dict:
    """The run's own initialisation: ``create_train_state``'s ``model.init`` with the run's seed on one test
    example, as ``xnn.train`` draws it."""
    import jax
    import jax.numpy as jnp
    rng = jax.random.key(self.cfg.seed)
    variables = jax.jit(lambda: self.model.init({"params": rng, "dropout": rng},
                                                *map(jnp.asarray, self.example_inputs()), train=False))()
    return {k: v for k, v in variables.items() if k in ("params", "batch_stats")}

  def abstract_variables(self) -> Any:
    from xnn.cost.analysis import abstract_variables
    return abstract_variables(self.model, *self.example_inputs())


def load_run(workdir: str, step: int | None, dataset: Any = None) -> Run:
  """The run's config, checkpoints (checked before the data is read), data, model and weights."""
  cfg = run_config(workdir)
  steps = check_checkpoints(workdir, "inspect")
  if step is not None and step not in steps:
    raise CommandError(f"--step {step}: {workdir!r} has no checkpoint at step {step}; it has "
                       f"step{'s' if len(steps) > 1 else ''} {', '.join(map(str, steps))}")
  from xnn.train import tasks as tasks_lib
  from xnn.train.train import build_model, load_data
  ds = load_data(cfg, dataset)
  model = build_model(cfg, ds)
  task = tasks_lib.task_for(ds, cfg.data, cfg.train.label_smoothing)
  step, weights = restore_checkpoint(workdir, step, command="inspect")
  return Run(workdir, cfg, ds, model, task, step, weights, steps)


# --- which sections apply -------------------------------------------------------------------------------


def _image_input(run: Run) -> bool:
  return run.ds.kind == "image" and not run.cfg.data.as_sequence


def _classifies(run: Run) -> bool:
  return run.task.name in ("image_classification", "sequence_classification")


def not_applicable(run: Run, section: str, stages: dict[str, Any], attention: list[str]) -> str | None:
  """Why ``section`` does not apply to the run's model (None: it does)."""
  model = run.cfg.model.name
  spatial = [s for s, v in stages.items() if len(v.shape) == 4]
  if section == "feature_maps" and not stages:
    return f"{model} sows no stage outputs into 'intermediates'"
  if section == "filters" and _first_conv(run) is None:
    return f"{model} has no 2-D convolution"
  if section == "saliency":
    if not _classifies(run):
      return f"saliency needs one class per example; {model} is trained for {run.task.name}"
  if section in ("feature_vis", "erf"):
    if not _image_input(run):
      return (f"{section} needs image inputs (N, H, W, C); {model} reads "
              f"{'images as sequences' if run.ds.kind == 'image' else 'sequences'}")
    if not spatial:
      return f"{section} needs a stage with spatial feature maps; {model} sows none"
  if section == "probes":
    if not _classifies(run):
      return f"linear probes need one class per example; {model} is trained for {run.task.name}"
    if not stages:
      return f"{model} sows no stage outputs into 'intermediates'"
  if section == "attention" and not attention:
    return f"{model} has no attention layer"
  return None


def _first_conv(run: Run):
  from xnn.inspect.filters import first_conv
  return first_conv(run.model, *run.example_inputs())


# --- the sections -------------------------------------------------------------------------------------------


def _display_images(run: Run, x) -> Any:
  """Model inputs (K, H, W, C) back in [0, 1] (the run's normalisation undone), as RGB; None for sequences."""
  import numpy as np
  if not _image_input(run):
    return None
  pre = run.preprocess
  x = np.asarray(x, np.float32)
  if pre.mean is not None:
    x = x * np.asarray(pre.std, np.float32) + np.asarray(pre.mean, np.float32)
  return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x[..., :3]


def feature_maps_section(run: Run, stages: dict, images, files: dict) -> dict:
  from xnn.inspect.feature_maps import feature_maps_png
  from xnn.inspect.stages import shape_text
  out = {}
  for stage, value in stages.items():
    name = f"feature_maps_{stage.replace('/', '_')}.png"
    files[name] = feature_maps_png(stage, value, images, f"{run.name}, step {run.step}")
    out[stage] = {"shape": shape_text(value.shape), "png": name}
  return {"stages": out}


def filters_section(run: Run, files: dict) -> dict:
  import numpy as np
  from xnn.inspect.filters import filters_png, lookup
  path = _first_conv(run)
  kernel = np.asarray(lookup(run.weights["params"], path))
  grey = _image_input(run) and run.ds.element_shape[-1] == 1 and kernel.shape[2] > 1   # grey replicated
  files["filters.png"] = filters_png(kernel, path, f"{run.name}, step {run.step}", grey)
  return {"layer": "/".join(path[:-1]), "kernel_shape": list(kernel.shape), "grey_input_replicated": bool(grey),
          "png": "filters.png"}


def saliency_section(run: Run, batch: dict, images, options: Options, files: dict) -> dict:
  import jax
  import numpy as np
  from xnn.inspect import saliency as S
  x, *rest = run.task.inputs(batch)
  logits_fn = jax.jit(lambda x: run.model.apply(run.weights, x, *rest, train=False))
  predicted = np.asarray(np.argmax(logits_fn(x), axis=-1))
  score = jax.jit(S.class_score(logits_fn, predicted))
  maps = {"gradient": S.gradient(score, x),
          "SmoothGrad": S.smoothgrad(score, x, jax.random.key(run.cfg.seed), options.smoothgrad_samples),
          "integrated gradients": S.integrated_gradients(score, x, steps=options.ig_steps)}
  labels = np.asarray(batch[run.ds.label_key])
  captions = [f"label {int(y)}, predicted {int(p)}" for y, p in zip(labels, predicted)]
  how = "max over channels of |attribution|" if images is not None else "|attribution| (rows: steps, columns: features)"
  files["saliency.png"] = S.saliency_png(
      images, maps, captions, f"{run.name}, step {run.step}: what the predicted class score depends on\n"
      f"{how}; SmoothGrad: {options.smoothgrad_samples} samples, noise 15%; integrated gradients: "
      f"{options.ig_steps} steps from 0", sequences=None if images is not None else np.asarray(x))
  ig = list(maps.values())[2]
  baseline_scores = np.asarray(score(np.zeros_like(x)))
  return {"labels": labels.tolist(), "predicted": predicted.tolist(), "png": "saliency.png",
          # completeness of integrated gradients (Sundararajan et al., Prop. 1): sum = S(x) - S(baseline)
          "ig_sum": ig.reshape(len(ig), -1).sum(1).tolist(),
          "score_minus_baseline": (np.asarray(score(x)) - baseline_scores).tolist()}


def _to_model(run: Run) -> Callable:
  import jax.numpy as jnp
  pre = run.preprocess
  if pre.mean is None:
    return lambda x: x
  mean, std = jnp.asarray(pre.mean, jnp.float32), jnp.asarray(pre.std, jnp.float32)
  return lambda x: (x - mean) / std


def _channel_covariance(run: Run, x) -> Any:
  """The channel covariance of test images in [0, 1] (the colour decorrelation of feature visualisation)."""
  import numpy as np
  flat = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
  return np.cov(flat, rowvar=False).reshape(x.shape[-1], x.shape[-1])


def feature_vis_section(run: Run, stages: dict, erf_batch, options: Options, files: dict) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np
  from xnn.inspect import feature_vis as V
  from xnn.inspect.feature_maps import strongest_channels
  from xnn.inspect.stages import sown
  stage = [s for s, v in stages.items() if len(v.shape) == 4][-1]
  x = erf_batch
  shape = tuple(x.shape[1:])
  pixels = _display_images(run, x)[..., :shape[-1]] if shape[-1] in (1, 3) else None
  colour = V.colour_sqrt(_channel_covariance(run, pixels)) if pixels is not None else None
  settings = V.Settings(steps=options.vis_steps, seed=run.cfg.seed)
  to_model = _to_model(run)
  stage_maps = np.asarray(jax.jit(lambda v, x: sown(run.model, v, x)[1][stage])(run.weights, jnp.asarray(x)))
  channels = [int(c) for c in strongest_channels(stage_maps, VIS_CHANNELS)]
  classes = list(range(min(run.model.num_classes, 10)))
  # one batch, one compilation: the first images excite channels of the stage, the others classes
  is_class = jnp.asarray([False] * len(channels) + [True] * len(classes))
  index = jnp.asarray(channels + classes)

  def objective(xm):
    logits, values = sown(run.model, run.weights, xm)
    channel_means = values[stage].mean(axis=(1, 2))
    pick = lambda v: jnp.take_along_axis(v, jnp.minimum(index, v.shape[1] - 1)[:, None], axis=1)[:, 0]  # noqa: E731
    return jnp.where(is_class, pick(logits), pick(channel_means))

  images, history = V.visualise(objective, (len(index), *shape), settings, colour, to_model)
  out = {"stage": stage, "settings": dataclasses.asdict(settings)}
  parts = (("channels", channels, slice(0, len(channels)), f"{stage} channel",
            f"{len(channels)} channels of {stage} (its most active on test images; objective: mean activation)"),
           ("classes", classes, slice(len(channels), None), "class", f"{len(classes)} classes (objective: logit)"))
  for kind, targets, rows, what, which in parts:
    h = history[:, rows]
    name = f"feature_vis_{kind}.png"
    labels = [f"{what} {t}\n{h[0, i]:.2f} -> {h[-1, i]:.2f}" for i, t in enumerate(targets)]
    title = (f"{run.name}, step {run.step}: inputs optimised for {which}\n{settings.steps} Adam steps, lr "
             f"{settings.learning_rate}, jitter {settings.jitter} px, blur {settings.blur} px, "
             f"{'decorrelated (Fourier + colour)' if settings.decorrelate else 'pixel'} parameterisation; "
             "objective before -> after")
    files[name] = V.feature_vis_png(images[rows], labels, title)
    steps = np.diff(h, axis=0)
    out[kind] = {"targets": targets, "objective_start": h[0].tolist(), "objective_end": h[-1].tolist(),
                 "increased_every_step": [bool(np.all(steps[:, i] >= 0)) for i in range(len(targets))],
                 "steps_down": [int((steps[:, i] < 0).sum()) for i in range(len(targets))],
                 "largest_drop": [float(max(0.0, -steps[:, i].min())) for i in range(len(targets))],
                 "png": name}
  return out


def erf_section(run: Run, stages: dict, erf_batch, files: dict) -> dict:
  import numpy as np
  from xnn.cost.receptive_field import erf_map, erf_numbers
  from xnn.inspect import erf as E
  from xnn.train import checkpoint as ckpt
  stage = [s for s, v in stages.items() if len(v.shape) == 4][-1]
  features = E.stage_function(run.model, stage)
  shape = tuple(erf_batch.shape[1:])
  theoretical = E.theoretical_field(features, run.abstract_variables(), shape)
  entries = [(0, "initialisation", run.initial_weights())]
  for s in run.steps:
    if s == run.step:
      entries.append((s, f"step {s}", run.weights))
      continue
    try:
      entries.append((s, f"step {s}", ckpt.restore_weights(run.workdir, s, warn=_warn)[1]))
    except ckpt.CheckpointError as e:
      _warn(f"checkpoint at step {s} left out of the receptive-field plot: {e}")
  maps, numbers = [], []
  for s, label, weights in entries:
    m = erf_map(features, erf_batch, weights)
    n = erf_numbers(m)
    maps.append((label, m, n))
    numbers.append({"step": s, "label": label, **{k: v for k, v in n.items() if k != "mass"}})
  how = f"the first {len(erf_batch)} test images and their channels"
  title = f"{run.name}: effective receptive field of the centre unit of {stage} ({stages[stage].shape[1]}x" \
          f"{stages[stage].shape[2]}), at initialisation and at each checkpoint"
  files["erf.png"] = E.heatmaps_png(maps, theoretical, shape, title, how)
  files["erf_steps.png"] = E.over_steps_png([n["step"] for n in numbers], numbers, theoretical,
                                            f"{run.name}: effective receptive field of {stage} over training", shape)
  return {"stage": stage, "inputs": how, "theoretical": theoretical,
          "maps": [{**n, "centre": list(n["centre"])} for n in numbers],
          "mass": 0.95, "png": ["erf.png", "erf_steps.png"],
          "initialisation": "a fresh model.init with the run's seed" + (
              f" (the run itself started from the weights of {run.cfg.train.init_from})"
              if run.cfg.train.init_from else ""),
          "map_sum": [float(np.sum(m)) for _, m, _ in maps]}


def _pooled_features(run: Run, split: str, limit: int | None) -> tuple[dict, Any]:
  """({stage: pooled features (N, D)}, labels (N,)) over a split, padding dropped."""
  import jax
  import numpy as np
  from xnn.data.datasets import EVAL_PAD_KEY
  from xnn.inspect.probes import pool
  from xnn.inspect.stages import sown, sown_order, stage_paths

  stages = stage_paths(sown_order(run.model, run.weights, *run.example_inputs()))

  @jax.jit
  def stage_values(variables, *xs):
    values = sown(run.model, variables, *xs)[1]
    return [values[p] for p in stages]

  feats: list[list] = [[] for _ in stages]
  labels = []
  for batch in run.batches(split, run.cfg.train.eval_batch_size, limit):
    keep = np.asarray(batch[EVAL_PAD_KEY]) > 0
    for i, value in enumerate(stage_values(run.weights, *run.task.inputs(batch))):
      feats[i].append(pool(np.asarray(value))[keep])
    labels.append(np.asarray(batch[run.ds.label_key])[keep])
  return {s: np.concatenate(v) for s, v in zip(stages, feats)}, np.concatenate(labels).astype(np.int64)


def probes_section(run: Run, options: Options, files: dict) -> dict:
  from xnn.inspect import probes as P
  train, y_train = _pooled_features(run, "train", options.probe_examples)
  test, y_test = _pooled_features(run, "test", None)
  classes = run.model.num_classes
  width = max(v.shape[1] for v in train.values())          # one compiled fit for every stage
  results = {s: P.probe((train[s], y_train), (test[s], y_test), classes, width=width) for s in train}
  chance = P.chance(y_train, y_test, classes)
  files["probes.png"] = P.probes_png(list(results), results, chance,
                                     f"{run.name}, step {run.step}: linear probes on each stage's pooled features\n"
                                     f"fitted on {len(y_train)} training examples, tested on {len(y_test)}")
  return {"stages": results, "chance": chance, "train_examples": len(y_train), "test_examples": len(y_test),
          "png": "probes.png"}


def attention_section(run: Run, batch: dict, attention: dict, files: dict) -> dict:
  from xnn.inspect.attention import attention_png
  names = []
  for k in range(len(batch[run.ds.label_key])):
    name = f"attention_{k}.png"
    files[name] = attention_png(attention, k, f"{run.name}, step {run.step}: test example {k}")
    names.append(name)
  return {"layers": {p: list(v.shape[1:]) for p, v in attention.items()}, "png": names}


# --- the whole inspection -----------------------------------------------------------------------------------


def inspect_run(workdir: str, step: int | None = None, out: str | None = None, only: tuple[str, ...] | None = None,
                options: Options = Options(), dataset: Any = None, write: bool = True) -> dict[str, Any]:
  """``inspect.json``'s content for one checkpoint of the run in ``workdir``; with ``write``, the pictures,
  ``inspect.json`` and ``index.md`` in ``out``. ``dataset``: the data of a run trained on a ``Dataset``
  passed to ``train_and_evaluate``."""
  import jax
  import numpy as np
  from xnn.inspect import report
  from xnn.inspect.stages import attention_paths, sown, sown_order, stage_paths
  from xnn.ops import conv_setting
  if not os.path.isdir(workdir):
    raise CommandError(f"workdir {workdir!r} is not a folder")
  out = _out_folder(workdir, out) if write else out
  run = load_run(workdir, step, dataset)
  if options.images > len(run.ds.test):
    raise CommandError(f"--images {options.images}: the test split has only {len(run.ds.test)} examples")
  if run.cfg.train.compilation_cache != "workdir":      # the run's own cache, unless it lives in the run
    from xnn.train.compilation import enable_persistent_cache
    enable_persistent_cache(run.cfg.train.compilation_cache, workdir, run.cfg.train.compilation_cache_min_s,
                            run.cfg.train.compilation_cache_max_gb)
  files: dict[str, bytes] = {}
  with conv_setting(cpu=run.cfg.train.cpu_conv):      # the run's own convolutions
    batch = run.first(options.images)
    inputs = run.task.inputs(batch)
    _, values = jax.jit(lambda v, *xs: sown(run.model, v, *xs))(run.weights, *inputs)
    order = sown_order(run.model, run.weights, *inputs)
    stages = {p: np.asarray(values[p]) for p in stage_paths(order)}
    attention = {p: np.asarray(values[p]) for p in attention_paths(order)}
    why = {s: not_applicable(run, s, stages, list(attention)) for s in SECTIONS}
    for s in only or ():
      if why[s]:
        raise CommandError(f"--only {s}: {why[s]}")
    chosen = [s for s in (only or SECTIONS) if not why[s]]
    images = _display_images(run, inputs[0])
    erf_batch = None
    if "erf" in chosen or "feature_vis" in chosen:
      erf_batch = np.asarray(run.task.inputs(run.first(min(options.erf_inputs, len(run.ds.test))))[0])
    result: dict[str, Any] = {
        "workdir": workdir, "step": run.step, "checkpoints": run.steps, "model": run.cfg.model.name,
        "dataset": run.cfg.data.name, "task": run.task.name, "input_shape": list(inputs[0].shape[1:]),
        "images": options.images, "stages": {s: list(v.shape[1:]) for s, v in stages.items()},
        "skipped": {s: why[s] for s in (only or SECTIONS) if why[s]}}
    for section in chosen:
      started = time.perf_counter()
      if section == "feature_maps":
        result[section] = feature_maps_section(run, stages, images, files)
      elif section == "filters":
        result[section] = filters_section(run, files)
      elif section == "saliency":
        result[section] = saliency_section(run, batch, images, options, files)
      elif section == "feature_vis":
        result[section] = feature_vis_section(run, stages, erf_batch, options, files)
      elif section == "erf":
        result[section] = erf_section(run, stages, erf_batch, files)
      elif section == "probes":
        result[section] = probes_section(run, options, files)
      elif section == "attention":
        result[section] = attention_section(run, batch, attention, files)
      print(f"xnn inspect: {section} done in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
  result["files"] = sorted(files) + [OUTPUT, INDEX]
  result["out"] = out
  if write and jax.process_index() == 0:
    from xnn.train.metrics import atomic_write
    os.makedirs(out, exist_ok=True)
    for name, data in files.items():
      atomic_write(os.path.join(out, name), data)
    atomic_write(os.path.join(out, OUTPUT), json.dumps(report.json_safe(result), indent=1) + "\n")
    atomic_write(os.path.join(out, INDEX), report.index_markdown(result))
  return result


def summary(result: dict[str, Any]) -> str:
  """What ``xnn inspect`` prints: the run, the numbers of the ERF and the probes, skipped sections, files."""
  lines = [f"{result['workdir']}: step {result['step']}, {result['model']} on {result['dataset']}"]
  if "erf" in result:
    maps = result["erf"]["maps"]
    lines.append("  effective receptive field of " + result["erf"]["stage"] + " (radius holding 95% / 50% of the "
                 "gradient mass / sigma / pixels at or above half the peak): "
                 + ", ".join(f"{m['label']} {m['radius']} / {m['radius50']} / {m['sigma']:.2f} / {m['half_max_area']}"
                             for m in maps))
  if "probes" in result:
    p = result["probes"]
    lines.append("  linear-probe test accuracy: " + ", ".join(f"{s} {r['test_accuracy']:.4f}"
                                                               for s, r in p["stages"].items())
                 + f" (chance {p['chance']:.4f})")
  for s, why in result["skipped"].items():
    lines.append(f"  skipped {s}: {why}")
  lines.append(f"  wrote {len(result['files'])} files to {result['out']} (see {os.path.join(result['out'], INDEX)})")
  return "\n".join(lines)


if __name__ == "__main__":
  from xnn.cli import run as cli_run
  sys.exit(cli_run("inspect", sys.argv[1:]))
