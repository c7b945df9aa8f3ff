"""What the ``experiments/*/run.py`` and ``plots.py`` scripts share.

``run.py``: ``argparser`` (--quick | --tiny, --workdir, --parallel), ``run_sweeps``
(each sweep locally, then its ``xnn report``) and ``sibling`` (loads the folder's
``plots.py`` by path). ``plots.py``: ``plots_main`` (its ``plots.py FOLDER``
command line).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from types import ModuleType
from typing import Callable

from xnn.sweeps.launchers import launch_local, run_specs
from xnn.sweeps.report import write_report
from xnn.sweeps.spec import load_sweep
from xnn.train.metrics import atomic_write


def argparser(doc: str, quick_help: str) -> argparse.ArgumentParser:
  """The command line shared by ``experiments/*/run.py``: --quick | --tiny, --workdir, --parallel."""
  p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
  mode = p.add_mutually_exclusive_group()
  mode.add_argument("--quick", action="store_true", help=quick_help)
  mode.add_argument("--tiny", action="store_true", help="the shortest version (the test suite's)")
  p.add_argument("--workdir", required=True)
  p.add_argument("--parallel", type=int, default=1)
  return p


def run_sweeps(config_specs: dict[str, str], workdir: str, *, parallel: int = 1) -> dict[str, str]:
  """Runs each ``{subfolder: "FILE:ARG"}`` sweep locally into ``workdir/subfolder`` ("" for
  ``workdir`` itself) and writes its ``xnn report``; returns the runs that did not finish."""
  failed = {}
  for sub, config in config_specs.items():
    out = os.path.join(workdir, sub) if sub else workdir
    status = launch_local(run_specs(load_sweep(config), out), config, parallel=parallel)
    failed.update({os.path.join(sub, k): v for k, v in status.items() if not v.startswith("done")})
    write_report(out)
  if failed:
    print(f"runs not finished: {failed}", file=sys.stderr)
  return failed


def sibling(file: str, name: str) -> ModuleType:
  """The module ``name``.py in the folder of ``file``, loaded by path (``run.py`` loads its ``plots.py``)."""
  folder = os.path.dirname(os.path.abspath(file))
  path = os.path.join(folder, f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"_xnn_experiment_{os.path.basename(folder)}_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def plots_main(argv: list[str], doc: str, build: Callable[[str], tuple[dict, str, str]]) -> int:
  """Command line of an experiment's ``plots.py FOLDER``: ``build(folder)`` returns
  ``({png_name: draw(path)}, table_name, markdown)``; the PNGs and the table are written
  into the folder (atomically) and the table is printed."""
  if len(argv) != 1:
    print(doc)
    return 2
  figures, table_name, text = build(argv[0])
  for name, draw in figures.items():
    draw(os.path.join(argv[0], name))
  atomic_write(os.path.join(argv[0], table_name), text)
  print(text)
  return 0
