"""Search spaces declared next to a config: ``get_search_space(arg)`` beside ``get_config(arg)``.

A search space is a list of parameters over config fields (``model.kwargs.*`` is
open, as in ``xnn train``) and search variables (a name that is not a config field,
used by a ``derived`` field), plus how the search runs (``SearchSpace``)::

    from xnn import search as s

    def get_search_space(arg=None):
      return s.SearchSpace(
          s.branch("block", {
              "basic": [s.fixed("model.name", "resnet20"),
                        s.choice("model.kwargs.widths", [(8, 16, 32), (16, 32, 64)]),
                        s.choice("model.kwargs.shortcut", ["A", "B", "none"])],   # residual on/off
              "inverted_residual": [
                  s.fixed("model.name", "mobilenet_v2_28"),
                  s.choice("model.kwargs.stage_sizes", [(1, 1, 1), (2, 3, 2)]),
                  s.choice("expansion", [2, 4, 6]),                                # a search variable
                  s.fixed("model.kwargs.outputs", (16, 32, 64)),
                  s.derived("model.kwargs.expands", expands)]}),
          s.real("optimizer.learning_rate", 3e-4, 3e-3, log=True),
          constraints=s.Constraints(max_macs=5e6, min_receptive_field=1.0),
          trials=12)

Each parameter becomes one Optuna suggestion (``choice``: categorical, ``integer``:
int, ``real``: float; ``branch``: a categorical whose value decides which of its
sub-spaces is sampled next, Optuna's define-by-run conditional space). A candidate
is the config diff that a sample makes (``SearchSpace.overrides``: fields only, not
variables), and its name is built from that diff (``candidate_name``), so the same
network always gets the same run folder, however it was sampled.
"""

from __future__ import annotations

import ast
import dataclasses
import zlib
from typing import Any, Callable, Sequence

from xnn.sweeps.spec import run_name

SAMPLERS = ("tpe", "random", "nsga2")
PRUNERS = ("none", "successive_halving", "hyperband")
OBJECTIVES = {"accuracy": "maximize", "macs": "minimize"}
MAX_NAME = 160          # longer candidate names keep their start and end in a hash of the whole


class SpaceError(ValueError):
  """A search space that cannot run: one line naming the parameter and what was expected."""


def _primitive(v: Any) -> bool:
  return v is None or isinstance(v, (bool, int, float, str))


@dataclasses.dataclass(frozen=True)
class Choice:
  """One of ``values`` (any Python literals; tuples are kept as tuples)."""
  name: str
  values: tuple

  def __post_init__(self):
    if not self.values:
      raise SpaceError(f"choice {self.name!r} has no values")
    encoded = [self.encode(v) for v in self.values]
    if len(set(map(repr, encoded))) < len(encoded):
      raise SpaceError(f"choice {self.name!r} lists a value twice: {list(self.values)}")

  @property
  def encoded(self) -> bool:
    """Whether Optuna sees the values as their ``repr`` (it stores only None, bool, int, float, str)."""
    return not all(_primitive(v) for v in self.values)

  def encode(self, v: Any) -> Any:
    return repr(tuple(v) if isinstance(v, list) else v) if self.encoded else v

  def decode(self, v: Any) -> Any:
    return ast.literal_eval(v) if self.encoded else v

  def suggest(self, trial) -> Any:
    return self.decode(trial.suggest_categorical(self.name, [self.encode(v) for v in self.values]))

  def check(self, v: Any) -> None:
    if repr(self.encode(v)) not in {repr(self.encode(x)) for x in self.values}:
      raise SpaceError(f"{self.name}={v!r} is not one of the choices {list(self.values)}")

  def describe(self) -> dict[str, Any]:
    return {"name": self.name, "choice": [self.encode(v) for v in self.values]}


@dataclasses.dataclass(frozen=True)
class Integer:
  """An integer in [low, high] (``step`` apart; ``log``: sampled on a log scale)."""
  name: str
  low: int
  high: int
  step: int = 1
  log: bool = False

  def __post_init__(self):
    if not (isinstance(self.low, int) and isinstance(self.high, int) and self.low <= self.high and self.step >= 1):
      raise SpaceError(f"integer {self.name!r}: expected integers low <= high and step >= 1, got "
                       f"low={self.low!r}, high={self.high!r}, step={self.step!r}")
    if self.log and (self.low < 1 or self.step != 1):
      raise SpaceError(f"integer {self.name!r}: a log scale needs low >= 1 and step 1")

  def suggest(self, trial) -> int:
    return trial.suggest_int(self.name, self.low, self.high, step=self.step, log=self.log)

  def check(self, v: Any) -> None:
    if not (isinstance(v, int) and self.low <= v <= self.high and (v - self.low) % self.step == 0):
      raise SpaceError(f"{self.name}={v!r} is not an integer in [{self.low}, {self.high}] (step {self.step})")

  def describe(self) -> dict[str, Any]:
    return {"name": self.name, "int": [self.low, self.high, self.step, self.log]}


@dataclasses.dataclass(frozen=True)
class Real:
  """A float in [low, high] (``log``: sampled on a log scale, e.g. a learning rate)."""
  name: str
  low: float
  high: float
  log: bool = False

  def __post_init__(self):
    if not self.low <= self.high or (self.log and self.low <= 0):
      raise SpaceError(f"real {self.name!r}: expected low <= high (and low > 0 on a log scale), got "
                       f"low={self.low!r}, high={self.high!r}")

  def suggest(self, trial) -> float:
    return trial.suggest_float(self.name, self.low, self.high, log=self.log)

  def check(self, v: Any) -> None:
    if not (isinstance(v, (int, float)) and self.low <= v <= self.high):
      raise SpaceError(f"{self.name}={v!r} is not a number in [{self.low}, {self.high}]")

  def describe(self) -> dict[str, Any]:
    return {"name": self.name, "real": [self.low, self.high, self.log]}


@dataclasses.dataclass(frozen=True)
class Fixed:
  """A field every candidate of its (sub-)space sets to ``value`` (e.g. the model of a branch)."""
  name: str
  value: Any

  def describe(self) -> dict[str, Any]:
    return {"name": self.name, "fixed": repr(self.value)}


@dataclasses.dataclass(frozen=True)
class Derived:
  """A field computed from the values sampled before it: ``fn(values) -> value`` (e.g. widths x a ratio)."""
  name: str
  fn: Callable[[dict[str, Any]], Any]

  def describe(self) -> dict[str, Any]:
    return {"name": self.name, "derived": getattr(self.fn, "__name__", repr(self.fn))}


@dataclasses.dataclass(frozen=True)
class Branch:
  """A choice between sub-spaces (e.g. the block type): the label is sampled, then that sub-space."""
  name: str
  options: dict[str, tuple]

  def __post_init__(self):
    if not self.options:
      raise SpaceError(f"branch {self.name!r} has no options")

  def check(self, v: Any) -> None:
    if v not in self.options:
      raise SpaceError(f"{self.name}={v!r} is not one of the branches {list(self.options)}")

  def describe(self) -> dict[str, Any]:
    return {"name": self.name, "branch": {k: [p.describe() for p in ps] for k, ps in self.options.items()}}


Param = Choice | Integer | Real | Fixed | Derived | Branch
SUGGESTED = (Choice, Integer, Real)


def choice(name: str, values: Sequence[Any]) -> Choice:
  return Choice(name, tuple(values))


def integer(name: str, low: int, high: int, step: int = 1, log: bool = False) -> Integer:
  return Integer(name, low, high, step, log)


def real(name: str, low: float, high: float, log: bool = False) -> Real:
  return Real(name, float(low), float(high), log)


def fixed(name: str, value: Any) -> Fixed:
  return Fixed(name, value)


def derived(name: str, fn: Callable[[dict[str, Any]], Any]) -> Derived:
  return Derived(name, fn)


def branch(name: str, options: dict[str, Sequence[Param]]) -> Branch:
  return Branch(name, {str(k): tuple(v) for k, v in options.items()})


@dataclasses.dataclass(frozen=True)
class Constraints:
  """Limits checked on abstract shapes before a candidate trains (``xnn.search.constraints``); None: no limit.

  ``max_macs``: forward MACs per example (as ``xnn cost``); ``max_params``;
  ``max_peak_memory_mib``: peak live memory of a training step at the global batch
  on one device (``xnn cost --train``); ``min_receptive_field``: the last feature
  map's receptive field over the input's side (1.0: every unit sees the whole
  image); ``max_latency_ms``: the roofline's forward time at ``latency_batch`` on
  the ``device`` preset (``xnn.cost.roofline``).
  """
  max_macs: float | None = None
  max_params: float | None = None
  max_peak_memory_mib: float | None = None
  min_receptive_field: float | None = None
  max_latency_ms: float | None = None
  device: str = "h100"
  latency_batch: int = 1

  def __post_init__(self):
    for f in ("max_macs", "max_params", "max_peak_memory_mib", "min_receptive_field", "max_latency_ms"):
      v = getattr(self, f)
      if v is not None and not (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0):
        raise SpaceError(f"Constraints({f}={v!r}): expected a positive number or None")
    if not (isinstance(self.latency_batch, int) and self.latency_batch >= 1):
      raise SpaceError(f"Constraints(latency_batch={self.latency_batch!r}): expected an integer >= 1")

  @property
  def limits(self) -> dict[str, float]:
    """The limits that are set, by name."""
    names = ("max_macs", "max_params", "max_peak_memory_mib", "min_receptive_field", "max_latency_ms")
    return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


@dataclasses.dataclass
class SearchSpace:
  """What ``get_search_space(arg)`` returns: the parameters and how the search runs.

  ``objectives``: ``("accuracy",)`` (maximise the final evaluation accuracy) or
  ``("accuracy", "macs")`` (the accuracy-vs-MACs Pareto front, e.g. with NSGA-II).
  ``sampler``: ``tpe`` | ``random`` | ``nsga2`` (Optuna's samplers, seeded by ``seed``;
  ``startup_trials``: TPE's random trials before it models, NSGA-II's population).
  ``pruner``: ``none`` | ``successive_halving`` | ``hyperband`` (Optuna's, on the
  per-epoch evaluation accuracy; rungs from ``min_epochs`` up by ``reduction_factor``;
  single objective only). ``trials``: trials within the constraints (trained, or
  answered from an earlier identical candidate); ``parallel``: candidates training at
  once. ``start``: candidates tried first, as ``{parameter: value}`` (e.g. the
  hand-designed network). ``final``: fields that ``best.py`` sets when it retrains a
  candidate (e.g. the full training split and the test split, where the search
  evaluated on a held-out part of the training split).
  """
  params: tuple
  constraints: Constraints = dataclasses.field(default_factory=Constraints)
  objectives: tuple[str, ...] = ("accuracy",)
  sampler: str = "tpe"
  pruner: str = "hyperband"
  trials: int = 20
  parallel: int = 1
  seed: int = 0
  startup_trials: int = 10
  min_epochs: int = 1
  reduction_factor: int = 3
  start: tuple[dict[str, Any], ...] = ()
  final: dict[str, Any] = dataclasses.field(default_factory=dict)

  def __init__(self, *params: Param, constraints: Constraints | None = None, objectives: Sequence[str] = ("accuracy",),
               sampler: str = "tpe", pruner: str = "hyperband", trials: int = 20, parallel: int = 1, seed: int = 0,
               startup_trials: int = 10, min_epochs: int = 1, reduction_factor: int = 3,
               start: Sequence[dict[str, Any]] = (), final: dict[str, Any] | None = None):
    self.params = tuple(params)
    self.constraints = constraints or Constraints()
    self.objectives, self.sampler, self.pruner = tuple(objectives), sampler, pruner
    self.trials, self.parallel, self.seed, self.startup_trials = trials, parallel, seed, startup_trials
    self.min_epochs, self.reduction_factor = min_epochs, reduction_factor
    self.start, self.final = tuple(dict(s) for s in start), dict(final or {})
    self.check()

  # --- checks ---------------------------------------------------------------------------------

  def check(self) -> None:
    """Everything that needs no config: settings in range, names, start candidates."""
    if not self.params:
      raise SpaceError("the search space has no parameters")
    if self.objectives not in (("accuracy",), ("accuracy", "macs")):
      raise SpaceError(f"objectives={self.objectives!r}: expected ('accuracy',) or ('accuracy', 'macs')")
    _one_of("sampler", self.sampler, SAMPLERS)
    _one_of("pruner", self.pruner, PRUNERS)
    if len(self.objectives) > 1 and self.pruner != "none":
      raise SpaceError(f"pruner={self.pruner!r} needs a single objective (Optuna prunes single-objective "
                       "studies only); use pruner='none' with objectives=('accuracy', 'macs')")
    for f, lo in (("trials", 1), ("parallel", 1), ("startup_trials", 1), ("min_epochs", 1), ("reduction_factor", 2)):
      v = getattr(self, f)
      if not (isinstance(v, int) and not isinstance(v, bool) and v >= lo):
        raise SpaceError(f"{f}={v!r}: expected an integer >= {lo}")
    self.distributions()                         # a name sampled two ways is an error
    for s in self.start:
      self.start_params(s)

  def distributions(self) -> dict[str, Param]:
    """Every suggested parameter and branch by name; a name declared twice differently is a ``SpaceError``."""
    out: dict[str, Param] = {}

    def walk(params: Sequence[Param], path: tuple[str, ...]) -> None:
      seen: set[str] = set()
      for p in params:
        if not isinstance(p, SUGGESTED + (Fixed, Derived, Branch)):
          raise SpaceError(f"{p!r} is not a search parameter (use choice, integer, real, fixed, derived, branch)")
        if p.name in seen:
          raise SpaceError(f"{p.name!r} is set twice in the same (sub-)space {'/'.join(path) or '(top)'}")
        seen.add(p.name)
        if isinstance(p, SUGGESTED + (Branch,)):
          if p.name in out and out[p.name].describe() != p.describe():
            raise SpaceError(f"{p.name!r} is sampled two different ways (in two branches); give one of them "
                             "another name or the same values")
          out[p.name] = p
        if isinstance(p, Branch):
          for label, sub in p.options.items():
            walk(sub, (*path, f"{p.name}={label}"))
    walk(self.params, ())
    return out

  def start_params(self, values: dict[str, Any]) -> dict[str, Any]:
    """A ``start`` candidate as the Optuna parameters that ``study.enqueue_trial`` takes."""
    dist = self.distributions()
    unknown = sorted(set(values) - set(dist))
    if unknown:
      raise SpaceError(f"start candidate {values!r} sets {unknown}, which the space does not sample "
                       f"(sampled: {', '.join(dist)})")
    out = {}
    for name, v in values.items():
      dist[name].check(v)
      out[name] = dist[name].encode(v) if isinstance(dist[name], Choice) else v
    return out

  def check_fields(self, is_field: Callable[[str], bool]) -> None:
    """Every name that is a config field must exist; names that are not (variables) must not look like fields."""
    def walk(params: Sequence[Param]) -> None:
      for p in params:
        if isinstance(p, Branch):
          for sub in p.options.values():
            walk(sub)
          continue
        if "." in p.name and not is_field(p.name):
          raise SpaceError(f"search parameter {p.name!r} is not a config field (model.kwargs.* is open)")
        if isinstance(p, Derived) and not is_field(p.name):
          raise SpaceError(f"derived {p.name!r} is not a config field; a derived value sets a field")
    walk(self.params)
    for f in self.final:
      if not is_field(f):
        raise SpaceError(f"final field {f!r} is not a config field")

  # --- sampling -------------------------------------------------------------------------------

  def sample(self, trial) -> dict[str, Any]:
    """The values of one candidate (fields and variables), suggested through the Optuna ``trial``."""
    values: dict[str, Any] = {}

    def walk(params: Sequence[Param]) -> None:
      for p in params:
        if isinstance(p, Branch):
          label = trial.suggest_categorical(p.name, list(p.options))
          values[p.name] = label
          walk(p.options[label])
        elif isinstance(p, Fixed):
          values[p.name] = p.value
        elif isinstance(p, Derived):
          values[p.name] = p.fn(dict(values))
        else:
          values[p.name] = p.suggest(trial)
    walk(self.params)
    return values

  def overrides(self, values: dict[str, Any], is_field: Callable[[str], bool]) -> dict[str, Any]:
    """The config diff of a sample: its fields (tuples for sequences), without the search variables."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in sorted(values.items()) if is_field(k)}

  def describe(self) -> dict[str, Any]:
    """What identifies the search (recorded in its study; a relaunch must match it)."""
    return {"params": [p.describe() for p in self.params], "constraints": dataclasses.asdict(self.constraints),
            "objectives": list(self.objectives), "sampler": self.sampler, "pruner": self.pruner,
            "seed": self.seed, "startup_trials": self.startup_trials, "min_epochs": self.min_epochs,
            "reduction_factor": self.reduction_factor,
            "start": [{k: repr(v) for k, v in sorted(s.items())} for s in self.start]}


def _one_of(what: str, value: Any, allowed: Sequence[str]) -> None:
  if value not in allowed:
    raise SpaceError(f"{what}={value!r}: expected one of {', '.join(allowed)}")


def candidate_name(overrides: dict[str, Any]) -> str:
  """The run folder's name of a candidate: its config diff, as a sweep names its runs
  (``xnn.sweeps.spec.run_name``); a name longer than ``MAX_NAME`` keeps its start, and a
  hash of the whole diff makes it unique."""
  name = run_name(overrides)
  if len(name) <= MAX_NAME:
    return name
  return f"{name[:MAX_NAME - 10]}__{zlib.crc32(name.encode()):08x}"


def load_search_space(spec: str) -> SearchSpace:
  """``FILE[:ARG]``'s ``get_search_space(arg)`` (FILE may be a recipe name); a ``ConfigError`` naming the file
  when it cannot be loaded, defines none, fails or returns something else."""
  from xnn.configs import ConfigError, config_path, describe_error, load_module
  path, sep, arg = config_path(spec).partition(":")
  module = load_module(path, "_xnn_search_config")
  fn = getattr(module, "get_search_space", None)
  if not callable(fn):
    raise ConfigError(f"config {path!r} defines no get_search_space(arg); a search config needs one beside "
                      "get_config (see xnn/search/space.py)")
  try:
    space = fn(arg if sep else None)
  except SpaceError as e:
    raise ConfigError(f"config {path!r}: {e}") from None
  except Exception as e:  # the user's code
    raise ConfigError(f"config {path!r}: get_search_space failed: {describe_error(e)}",
                      hint="--debug shows the traceback") from e
  if not isinstance(space, SearchSpace):
    raise ConfigError(f"config {path!r}: get_search_space returned {type(space).__name__}; expected an "
                      "xnn.search.SearchSpace")
  return space
