"""Sweeps: declare them in a config, launch them, report on them.

A config file's ``get_sweep(arg)`` builds its runs from this module's pieces::

    from xnn import sweeps as s

    def get_sweep(arg=None):
      return s.product(s.values("model.name", ["plain20", "resnet20"]), s.seeds(3))

Modules:
  xnn.sweeps.spec         -- declaration (values, seeds, product, zip), run names, load_sweep.
  xnn.sweeps.launchers    -- RunSpec, the run log and sweep.json that every launcher shares; the local launcher.
  xnn.sweeps.slurm        -- Slurm through submitit: one job array, requeued on preemption (``--launcher slurm``).
  xnn.sweeps.tpu          -- Cloud TPU queued resources and a supervisor per slice (``--launcher tpu``).
  xnn.sweeps.status       -- where every run of a sweep stands (``xnn sweep status``).
  xnn.sweeps.budget       -- training MACs and device-hours of a sweep before it runs (``xnn sweep --dry-run``).
  xnn.sweeps.report       -- a sweep folder's table, curves and Pareto plot (``xnn report``).
  xnn.sweeps.experiments  -- what ``experiments/*/run.py`` and ``plots.py`` share.
"""

from xnn.sweeps.spec import Run, load_sweep, named_runs, overrides, product, run_name, seeds, values, zip  # noqa: A004

__all__ = ["Run", "load_sweep", "named_runs", "overrides", "product", "run_name", "seeds", "values", "zip"]
