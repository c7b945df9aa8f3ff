"""`xnn cost MODEL`: per-layer MACs, parameters, memory and receptive field (docs/cost.md)."""

from __future__ import annotations

import argparse
import sys


def _parse_input(text: str) -> tuple[int, ...]:
  try:
    dims = tuple(int(t) for t in text.split(","))
  except ValueError:
    dims = ()
  if not dims or any(d <= 0 for d in dims):
    raise argparse.ArgumentTypeError(
        f"invalid --input {text!r}: expected positive integers separated by commas, e.g. 224,224,3 (H,W,C)")
  return dims


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="xnn cost", description=__doc__)
  p.add_argument("model", help="registered model name (see 'xnn models')")
  p.add_argument("--input", type=_parse_input, default=None, help="input shape without batch, e.g. 224,224,3")
  p.add_argument("--batch", type=int, default=1)
  p.add_argument("--train", action="store_true", help="also cost the backward pass and training memory")
  p.add_argument("--per-layer", action="store_true", help="print every layer (default: totals only)")
  p.add_argument("--depth", type=int, default=None, help="collapse rows to module-path depth K")
  p.add_argument("--format", choices=("table", "markdown", "csv", "json"), default="table")
  p.add_argument("--device", default=None, help="roofline preset (h100, h200, tpu-v4, tpu-v5e) or 'measure'")
  p.add_argument("--erf", default=None, metavar="PNG", help="compute the effective receptive field, save a heat map")
  return p


def main(argv: list[str]) -> int:
  args = parser().parse_args(argv)
  import xnn.models as M
  from xnn.cost import analyze_model, get_device
  from xnn.cost.report import render

  if args.model not in M.names():
    print(f"xnn cost: unknown model {args.model!r}; available: {', '.join(M.names())}", file=sys.stderr)
    return 2
  try:
    rep = analyze_model(args.model, input_shape=args.input, batch=args.batch, train=args.train)
  except Exception as e:  # noqa: BLE001 -- any failure to trace at this shape is a usage error
    shape = args.input or M.info(args.model).input_shape
    print(f"xnn cost: cannot analyse {args.model} at input {','.join(map(str, shape))}: {type(e).__name__}: {e}", file=sys.stderr)
    return 2
  try:
    device = get_device(args.device) if args.device else None
  except ValueError as e:
    print(f"xnn cost: {e}", file=sys.stderr)
    return 2
  erf = None
  if args.erf:
    erf = _erf(args.model, args.input, args.erf)
  text = render(rep, args.format, per_layer=args.per_layer or args.depth is not None or args.format == "json",
                depth=args.depth, device=device)
  if erf is not None:
    if args.format == "json":
      import json
      d = json.loads(text)
      d["effective_receptive_field"] = {"radius": erf["radius"], "size": erf["size"], "png": args.erf}
      text = json.dumps(d, indent=1)
    else:
      text += f"\neffective receptive field (95% mass): radius {erf['radius']} (size {erf['size']}), saved {args.erf}"
  print(text)
  return 0


def _erf(name, input_shape, png):
  """Luo et al. 2016 ERF of the last sown stage (random initial weights)."""
  import jax
  import xnn.models as M
  from xnn.cost import effective_receptive_field

  model = M.build(name)
  shape = tuple(input_shape or M.info(name).input_shape)
  variables = model.init(jax.random.key(0), jax.numpy.zeros((1, *shape)))

  def features(x):
    _, st = model.apply(variables, x, mutable=["intermediates"])
    inter = st["intermediates"]
    last = list(inter.keys())[-1]
    return inter[last][0] if isinstance(inter[last], tuple) else inter[last]

  return effective_receptive_field(features, shape, png=png)


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
