"""`xnn cost MODEL`: per-layer MACs, parameters, memory and receptive field (docs/cost.md).

``--config FILE[:ARG]`` costs the model exactly as that config builds it for training (``model.kwargs``,
the data set's classes, ``model.dtype``, the input after ``data.image_size``/``crop_size``/``channels``);
``--kwargs NAME=VALUE,...`` adds factory arguments; ``--by-level`` prints one row per resolution level
(``xnn.cost.levels``)."""

from __future__ import annotations

import argparse
import os
import sys

from xnn.commands import ArgumentParser, CommandError, positive_int


def _parse_input(text: str) -> tuple[int, ...]:
  try:
    dims = tuple(int(t) for t in text.split(","))
  except ValueError:
    dims = ()
  if not dims or any(d <= 0 for d in dims):
    raise argparse.ArgumentTypeError(
        f"invalid value {text!r}: expected positive integers separated by commas, e.g. 224,224,3 (H,W,C)")
  return dims


def parser() -> argparse.ArgumentParser:
  p = ArgumentParser(prog="xnn cost", description=__doc__)
  p.add_argument("model", nargs="?", default=None,
                 help="registered model name (see 'xnn models'); with --config, replaces the config's model.name")
  p.add_argument("--config", default=None, metavar="FILE[:ARG]",
                 help="cost the model as this config (a file or a recipe name) builds it: kwargs, classes, dtype, "
                      "input size")
  p.add_argument("--kwargs", default=None, metavar="NAME=VALUE,...",
                 help="model factory arguments, e.g. 'shortcut=B,widths=(32,64,128)' (added to the config's "
                      "model.kwargs)")
  p.add_argument("--by-level", action="store_true",
                 help="one row per resolution level: blocks, output, parameters, memory, MACs, receptive field")
  p.add_argument("--input", type=_parse_input, default=None, help="input shape without batch, e.g. 224,224,3")
  p.add_argument("--batch", type=positive_int, default=1, help="batch size (default 1)")
  p.add_argument("--train", action="store_true", help="also cost the backward pass and training memory")
  p.add_argument("--per-layer", action="store_true", help="print every layer (default: totals only)")
  p.add_argument("--depth", type=positive_int, default=None, help="collapse rows to module-path depth K")
  p.add_argument("--format", choices=("table", "markdown", "csv", "json"), default="table")
  p.add_argument("--device", default=None, help="roofline preset (h100, h200, tpu-v4, tpu-v5e) or 'measure'")
  p.add_argument("--erf", default=None, metavar="PNG", help="compute the effective receptive field, save a heat map")
  return p


def _kwargs(text: str | None) -> dict:
  """``--kwargs``' NAME=VALUE pairs (values read by ``xnn.configs.args.parse_value``)."""
  if not text:
    return {}
  from xnn.configs.args import parse_arg
  try:
    return parse_arg(text, lazy=True)
  except ValueError as e:
    raise CommandError(f"--kwargs {text!r}: expected NAME=VALUE pairs separated by commas ({e})") from None


def _from_config(spec: str, name: str | None, kwargs: dict):
  """(config, model, example inputs of batch 1) as ``xnn train`` builds them from the config ``spec``."""
  from xnn.configs import load_config, schema
  from xnn.data import pipeline
  from xnn.data.datasets import describe_dataset
  from xnn.train import tasks as tasks_lib
  from xnn.train.train import build_model, check_config
  config = load_config(spec)
  with config.unlocked():
    if name:
      config.model.name = name
    for k, v in kwargs.items():
      config.model.kwargs[k] = v
  cfg = check_config(config, None)
  ds = describe_dataset(cfg.data)
  # the size of the training set is not known without reading it; the cost does not depend on it
  schema.check_against_data(cfg, num_train=cfg.train.batch_size,
                            image_shape=ds.element_shape if ds.kind == "image" else None)
  model = build_model(cfg, ds)
  task = tasks_lib.task_for(ds, cfg.data, cfg.train.label_smoothing)
  inputs = task.inputs(next(pipeline.eval_batches(ds, cfg.data, 1)))
  return cfg, model, inputs


def main(argv: list[str]) -> int:
  args = parser().parse_args(argv)
  import xnn.models as M
  from xnn.cost import get_device
  from xnn.cost.render import render, render_levels

  if args.model is None and args.config is None:
    raise CommandError("give a registered MODEL (see 'xnn models') or --config FILE[:ARG]")
  kwargs = _kwargs(args.kwargs)
  device = get_device(args.device) if args.device else None     # ValueError naming the presets
  if args.erf and not os.path.isdir(os.path.dirname(os.path.abspath(args.erf))):
    raise CommandError(f"--erf {args.erf}: folder {os.path.dirname(os.path.abspath(args.erf))} does not exist")
  if args.config:
    cfg, model, inputs = _from_config(args.config, args.model, kwargs)
    name, info = cfg.model.name, M.info(cfg.model.name)
    shape = tuple(args.input or inputs[0].shape[1:])
    if args.input:
      inputs = (jax_struct((args.batch, *shape), inputs[0].dtype), *inputs[1:])
    else:
      inputs = tuple(jax_struct((args.batch, *x.shape[1:]), x.dtype) for x in inputs)
    source = f" as {args.config} builds it"
  else:
    name, info = args.model, M.info(args.model)   # an unknown name raises UnknownNameError, listing the registered ones
    shape, model, inputs, source = tuple(args.input or info.input_shape), None, None, ""
  rep = _analyze(name, info, shape, args.batch, args.train, model, inputs, kwargs)
  erf = None
  if args.erf:
    try:
      erf = _erf(name, shape, args.erf, model, kwargs)
    except OSError as e:
      raise CommandError(f"--erf {args.erf}: cannot write the heat map: {e.strerror or e}") from e
    except Exception as e:  # e.g. a model without spatial feature maps
      raise CommandError(f"cannot compute the effective receptive field of {name} at input "
                         f"{','.join(map(str, shape))}: {type(e).__name__}: {e}") from e
  axes = {3: " (H,W,C)", 2: " (T,F)"}.get(len(shape), "")
  title = (f"{name}{source}: input {'x'.join(map(str, shape))}{axes}, batch {args.batch}"
           f"{', training step' if args.train else ''}")
  if args.by_level:
    try:
      text = render_levels(rep, args.format, title=title)
    except ValueError as e:
      raise CommandError(f"--by-level: {name} at input {','.join(map(str, shape))}: {e}") from None
  else:
    text = render(rep, args.format, per_layer=args.per_layer or args.depth is not None or args.format == "json",
                  depth=args.depth, device=device, title=title)
  if erf is not None:
    if args.format == "json":
      import json
      d = json.loads(text)
      d["effective_receptive_field"] = {"radius": erf["radius"], "size": erf["size"], "sigma": erf["sigma"],
                                        "centre": list(erf["centre"]), "png": args.erf}
      text = json.dumps(d, indent=1)
    else:
      text += (f"\neffective receptive field (95% of the gradient mass): {erf['size']}x{erf['size']} pixels "
               f"(radius {erf['radius']}) around the peak at row {erf['centre'][0]}, column {erf['centre'][1]}; "
               f"fitted Gaussian sigma {erf['sigma']:.2f} pixels; heat map {args.erf}")
  print(text)
  return 0


def jax_struct(shape: tuple[int, ...], dtype):
  import jax
  return jax.ShapeDtypeStruct(shape, dtype)


def _analyze(name: str, info, shape: tuple[int, ...], batch: int, train: bool, model=None, inputs=None,
             kwargs: dict | None = None):
  """The cost at (batch, *shape) of the registered model ``name`` (with ``kwargs``), or of ``model`` on
  ``inputs``; an input the model cannot take is a ``CommandError`` naming both."""
  from xnn.cost import analyze_model, analyze_module
  axes = {3: " (H,W,C)", 2: " (T,F)"}.get(len(info.input_shape), "")
  default = ",".join(map(str, info.input_shape))
  at = f"cannot analyse {name} at input {','.join(map(str, shape))}"
  if len(shape) != len(info.input_shape) and model is None:
    raise CommandError(f"{at}: expected {len(info.input_shape)} dimensions{axes} like its default input {default}")
  small = any(s < d for s, d in zip(shape, info.input_shape))
  why = "too small for the network" if small else "the network does not take it"
  try:
    if model is None:
      rep = analyze_model(name, input_shape=shape, batch=batch, train=train, **(kwargs or {}))
    else:
      rep = analyze_module(model, *inputs, train=train, rng_streams=info.rng_streams)
  except TypeError as e:
    if model is None and kwargs and "argument" in str(e):
      raise CommandError(f"--kwargs {kwargs} do not fit model {name!r}: {e}") from None
    raise CommandError(f"{at}{axes}: {why} (its default input is {default}); "
                       f"underlying error {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
  except Exception as e:  # any failure to trace at this shape is a usage error
    first = str(e).splitlines()[0] if str(e) else ""
    raise CommandError(f"{at}{axes}: {why} (its default input is {default}); "
                       f"underlying error {type(e).__name__}: {first}") from e
  empty = next((L for L in rep.layers if L.output_shape is not None and 0 in tuple(L.output_shape)), None)
  if empty is not None:
    raise CommandError(f"{at}{axes}: too small for the network, layer {empty.name} would output shape "
                       f"{tuple(empty.output_shape)} (its default input is {default})")
  return rep


def _erf(name: str, shape: tuple[int, ...], png: str, model=None, kwargs: dict | None = None):
  """Luo et al. 2016 ERF of the last sown stage at random initial weights; the heat map (``xnn.inspect.erf``)
  saved to ``png``."""
  import jax
  import xnn.models as M
  from xnn.cost import effective_receptive_field
  from xnn.inspect.erf import heatmap_png, stage_function, theoretical_field
  from xnn.inspect.stages import sown_order, stage_paths
  from xnn.train.metrics import atomic_write

  model = model if model is not None else M.build(name, **(kwargs or {}))
  x = jax.numpy.zeros((1, *shape))
  variables = jax.jit(model.init)(jax.random.key(0), x)   # one compilation
  stage = stage_paths(sown_order(model, variables, x))[-1]
  features = stage_function(model, stage)
  samples = 8
  erf = effective_receptive_field(lambda x: features(variables, x), shape, samples=samples)
  theoretical = theoretical_field(features, jax.eval_shape(lambda: variables), shape)
  atomic_write(png, heatmap_png(erf["map"], erf, f"{name}, {stage}", theoretical,
                                f"{samples} standard-normal inputs and their channels, random initial weights"))
  return erf


if __name__ == "__main__":
  from xnn.cli import run
  sys.exit(run("cost", sys.argv[1:]))
