"""The search: ask Optuna for a candidate, cost it, train it through a launcher, report its epochs, tell.

For each trial (Optuna's ask-and-tell interface, ``Search.ask``):

1. the space is sampled through the trial and gives the candidate's config diff and
   name (``xnn.search.space``);
2. a candidate that an earlier trial already answered is answered the same way (its
   values, or its pruning), without training;
3. its cost is analysed on abstract shapes (``xnn.search.constraints``); over a limit,
   the trial is pruned and never trained: no run folder is made, the log says why;
4. a candidate whose run folder holds a ``final.json`` of this very config (a run
   that ended while no search was watching) is told from it;
5. otherwise its run, ``SEARCH/candidates/NAME`` -- a normal ``xnn train`` workdir --
   is started by the launcher (``LocalRuns``: ``parallel`` processes here;
   ``SlurmRuns``: submitit jobs). While it trains, every evaluation record of its
   ``metrics.jsonl`` is reported to the trial (the epoch is the step); when the
   pruner says so, the run is stopped (SIGTERM: it saves a checkpoint) and the trial
   pruned. A run that ends is told: its final accuracy (and MACs), or pruned when it
   failed on its own (a NaN loss: the sampler should avoid it), or failed and
   enqueued again when it was killed from outside.

Stopping the search (SIGTERM, Ctrl-C) stops its runs, which checkpoint; their trials
stay RUNNING, and the next launch enqueues them again (``study.recover_stale``): the
run resumes from its checkpoint. So a search can be killed at any moment and
relaunched, and no candidate is trained twice. After every trial the outputs are
written again (``xnn.search.results``).
"""

from __future__ import annotations

import ast
import dataclasses
import math
import os
import signal
import socket
import time
from typing import Any, Sequence

from xnn.cost.render import magnitude
from xnn.search import constraints as cons
from xnn.search import results
from xnn.search.space import OBJECTIVES, SearchSpace, candidate_name
from xnn.search.study import CONTROLLERS, make_sampler, open_study, optuna, recover_stale
from xnn.sweeps.launchers import RunSpec
from xnn.train.metrics import read_metrics

CANDIDATES = "candidates"
RECOVER_EVERY_S = 60.0
MAX_RETRIES = 2          # restarts of a candidate killed from outside before it counts as failed


def default_fields() -> set[str]:
  from xnn.configs.default import get_config
  from xnn.train.resume import as_plain, flatten
  return set(flatten(as_plain(get_config())))


def is_field_of(fields: set[str]):
  """``is_field(name)``: whether ``name`` is a config field (``model.kwargs.*`` is open)."""
  def is_field(name: str) -> bool:
    return name in fields or (name.startswith("model.kwargs.") and len(name) > len("model.kwargs."))
  return is_field


def as_values(overrides: dict[str, str]) -> dict[str, Any]:
  """A trial's recorded config diff (``{field: repr(value)}``) as values."""
  return {k: ast.literal_eval(v) for k, v in overrides.items()}


@dataclasses.dataclass
class Running:
  """A candidate being trained for a trial (and for later trials that asked for it meanwhile)."""
  trial: Any
  spec: RunSpec
  started: float
  reported: dict[int, float] = dataclasses.field(default_factory=dict)
  stopped_at: int | None = None         # the epoch after which the pruner stopped it
  stopped_step: int | None = None       # ... its training step (killed once its checkpoint is written)
  killed: bool = False
  waiting: bool = False                 # another process trains it: wait for its final.json
  followers: list = dataclasses.field(default_factory=list)


class Search:
  """One controller of a search; ``run()`` works until the trial budget is used, then writes the outputs."""

  def __init__(self, config: str, search_dir: str, space: SearchSpace, runs, *, extra: Sequence[str] = (),
               storage: str = "sqlite", trials: int | None = None, log=print, poll_s: float = 0.5):
    self.config, self.dir, self.space, self.runs = config, search_dir, space, runs
    self.extra, self.storage_kind, self.log, self.poll_s = list(extra), storage, log, poll_s
    self.trials = trials or space.trials
    self.max_over_budget = max(50, 10 * self.trials)
    self.is_field = is_field_of(default_fields())
    space.check_fields(self.is_field)
    self.analyst = cons.Analyst(config, extra)
    self.resolved: dict[str, dict[str, Any]] = {}
    try:
      self.base = self.resolve({})               # the base config as xnn train parses it, extra included
    except BaseException:
      self.analyst.close()
      raise
    self.max_epochs = max_epochs(self.base)
    if space.pruner != "none" and self.base["train"]["eval_every_epochs"] != 1:
      self.analyst.close()
      raise ValueError(f"pruner={space.pruner!r} counts epochs: the base config needs train.eval_every_epochs=1, "
                       f"got {self.base['train']['eval_every_epochs']}")
    self.controller = f"{socket.gethostname()}-{os.getpid()}"
    self.inflight: dict[str, Running] = {}
    self.costs: dict[str, tuple[cons.CandidateCost | None, str | None]] = {}
    self.retries: dict[str, int] = {}
    self.stop_signal: int | None = None
    self.study = None

  # --- configs --------------------------------------------------------------------------------

  def resolve(self, overrides: dict[str, Any]) -> dict[str, Any]:
    """The config ``xnn train`` would run for these overrides (the same parser, the same checks), as JSON types."""
    name = candidate_name(overrides)
    if name not in self.resolved:
      self.resolved[name] = self.analyst.resolve(overrides)
    return self.resolved[name]

  @property
  def candidates_dir(self) -> str:
    return os.path.join(self.dir, CANDIDATES)

  # --- the loop -------------------------------------------------------------------------------

  def run(self) -> None:
    from xnn.train.workdir_lock import hold_workdir
    try:
      self.study = open_study(self.space, self.dir, self.storage_kind, self.base, self.max_epochs)
    except BaseException:
      self.analyst.close()
      raise
    with hold_workdir(os.path.join(self.dir, CONTROLLERS, self.controller), process_index=0, command="xnn search"):
      recover_stale(self.study, self.dir, self.log)
      recovered_at = time.time()
      old = {sg: signal.signal(sg, self._on_signal) for sg in (signal.SIGTERM, signal.SIGINT)}
      try:
        while True:
          self.poll()
          if self.stop_signal is not None:
            if not self.runs:
              break
          else:
            if time.time() - recovered_at > RECOVER_EVERY_S:
              recover_stale(self.study, self.dir, self.log)
              recovered_at = time.time()
            self.fill()
            if not self.inflight and self.done(self.study.get_trials(deepcopy=False)):
              break
          time.sleep(self.poll_s)
      finally:
        for sg, h in old.items():
          signal.signal(sg, h)
        self.analyst.close()
        self.write()
    if self.stop_signal is not None:
      raise KeyboardInterrupt(f"search stopped by signal {self.stop_signal}; its runs saved a checkpoint: launch it "
                              "again to resume")
    counts = results.counts(self.study.get_trials(deepcopy=False))
    if counts["over"] >= self.max_over_budget and counts["within"] < self.trials:
      self.log(f"stopping: {counts['over']} candidates over the budget against {counts['within']} within it; "
               "the constraints leave too little of the space")
    self.log(f"search done: {counts['within']} trials within the budget ({counts['trained']} trained, "
             f"{counts['stopped']} stopped early by the pruner, {counts['repeats']} repeats), "
             f"{counts['over']} over the budget and never trained ({results.over_budget_summary(self.study)})")

  def _on_signal(self, signum, frame) -> None:
    del frame
    self.stop_signal = signum
    self.runs.signal(signal.SIGTERM)

  def done(self, trials) -> bool:
    """Whether no more trials are to be asked: the budget is used, or the constraints leave too little."""
    c = results.counts(trials)
    return c["within"] + c["running"] >= self.trials or c["over"] >= self.max_over_budget

  def fill(self) -> None:
    """Asks trials while a launcher slot is free and the budget is not used up (polling the runs in between:
    a trial over the budget takes no slot, and its cost analysis takes seconds)."""
    while self.runs.has_room and self.stop_signal is None:
      trials = self.study.get_trials(deepcopy=False)
      if self.done(trials):
        return
      self.ask(len(trials))
      self.poll()

  # --- one trial ------------------------------------------------------------------------------

  def ask(self, number_hint: int) -> None:
    og = optuna()
    space = self.space
    self.study.sampler = make_sampler(space, number_hint)
    trial = self.study.ask()
    trial.set_user_attr("controller", self.controller)
    try:
      values = space.sample(trial)
    except Exception as e:  # the space's own code (a derived function)
      self.study.tell(trial, state=og.trial.TrialState.FAIL)
      raise ValueError(f"sampling the search space failed in trial {trial.number}: {type(e).__name__}: {e}") from e
    overrides = space.overrides(values, self.is_field)
    name = candidate_name(overrides)
    trial.set_user_attr("candidate", name)
    trial.set_user_attr("overrides", {k: repr(v) for k, v in overrides.items()})
    earlier = self.earlier(name, trial.number)
    if earlier is not None:
      self.repeat(trial, earlier)
      return
    cost, invalid = self.cost(name, overrides)
    self.set_constraints(trial, cons.amounts(cost, space.constraints))
    if invalid is not None:
      trial.set_user_attr("invalid", invalid)
      self.tell_pruned(trial, f"not trained: {invalid}")
      return
    trial.set_user_attr("cost", cost.to_dict())
    over = cons.violations(cost, space.constraints)
    if over:
      trial.set_user_attr("over_budget", over)
      self.tell_pruned(trial, f"over the budget, not trained: {name}: {'; '.join(over)}")
      return
    if name in self.inflight:
      self.inflight[name].followers.append(trial)
      self.log(f"trial {trial.number}: {name} is training for trial {self.inflight[name].trial.number}; "
               "it gets the same answer")
      return
    spec = RunSpec(name, overrides, os.path.join(self.candidates_dir, name))
    self.start(trial, spec)

  def set_constraints(self, trial, amounts: list[float]) -> None:
    """The candidate's constraint values, for the samplers (Optuna's ``Trial.set_constraint``) and the record."""
    trial.set_user_attr("violations", amounts)
    for limit, amount in zip(self.space.constraints.limits, amounts):
      trial.set_constraint(limit, amount)

  def earlier(self, name: str, number: int):
    """A finished trial (complete or pruned) of the same candidate, or None."""
    og = optuna()
    states = (og.trial.TrialState.COMPLETE, og.trial.TrialState.PRUNED)
    for t in self.study.get_trials(deepcopy=False, states=states):
      if t.number != number and t.user_attrs.get("candidate") == name and "repeat_of" not in t.user_attrs:
        return t
    return None

  def repeat(self, trial, earlier) -> None:
    """Answers ``trial`` as ``earlier`` was answered (same candidate): nothing is trained."""
    og = optuna()
    for k, v in earlier.user_attrs.items():
      if k not in ("controller", "start", "retry_of", "violations"):
        trial.set_user_attr(k, v)
    self.set_constraints(trial, earlier.user_attrs.get("violations", []))
    trial.set_user_attr("repeat_of", earlier.number)
    if len(self.space.objectives) == 1:
      for step, v in sorted(earlier.intermediate_values.items()):
        trial.report(v, step)
    if earlier.state == og.trial.TrialState.COMPLETE:
      self.study.tell(trial, earlier.values)
      self.log(f"trial {trial.number}: {earlier.user_attrs.get('candidate')} again: answered as trial "
               f"{earlier.number} (accuracy {earlier.values[0]:.4f}), not trained again")
    else:
      self.study.tell(trial, state=og.trial.TrialState.PRUNED)
      self.log(f"trial {trial.number}: {earlier.user_attrs.get('candidate')} again: pruned as trial {earlier.number}")
    self.write()

  def cost(self, name: str, overrides: dict[str, Any]) -> tuple[cons.CandidateCost | None, str | None]:
    """(cost, None), or (None, why the candidate cannot be built); analysed once per candidate."""
    if name not in self.costs:
      recorded = next((t.user_attrs["cost"] for t in self.study.get_trials(deepcopy=False)
                       if t.user_attrs.get("candidate") == name and "cost" in t.user_attrs), None)
      if recorded is not None:
        self.costs[name] = (cons.CandidateCost.from_dict(recorded), None)
      else:
        try:
          self.costs[name] = (self.analyst.cost(overrides, self.space.constraints), None)
        except ValueError as e:
          self.costs[name] = (None, " ".join(str(e).split()))
    return self.costs[name]

  def start(self, trial, spec: RunSpec) -> None:
    from xnn.train import resume
    cfg = self.resolve(spec.run)
    final = resume.finished(spec.workdir, cfg)
    running = Running(trial, spec, time.time())
    if final is not None:              # trained to the end while no search watched: its final.json answers
      self.log(f"trial {trial.number}: {spec.name} finished earlier; its final.json answers (not trained again)")
      self.conclude(running, final)
      return
    why = self.runs.start(spec)
    if why is not None:
      self.log(f"trial {trial.number}: {spec.name}: {why}; waiting for it")
      running.waiting = True
    else:
      c = trial.user_attrs["cost"]
      self.log(f"trial {trial.number}: training {spec.name} ({magnitude(c['macs'])} MACs, "
               f"{c['params']:,} parameters; {self.runs.pid(spec.name)})")
    self.inflight[spec.name] = running

  # --- runs in flight -------------------------------------------------------------------------

  def evals(self, spec: RunSpec) -> dict[int, tuple[int, float]]:
    """The run's evaluations by epoch: (step, accuracy) of the last record of each epoch."""
    out = {}
    for r in read_metrics(os.path.join(spec.workdir, "metrics.jsonl")):
      if r.get("type") == "eval" and isinstance(r.get("test_accuracy"), (int, float)):
        out[int(round(r["epoch"]))] = (int(r["step"]), float(r["test_accuracy"]))
    return out

  def report(self, r: Running) -> bool:
    """Reports the run's new evaluations to its trial (none after the pruner stopped it); whether there were any."""
    if len(self.space.objectives) > 1 or r.stopped_at is not None:
      return False
    new = {e: sa for e, sa in self.evals(r.spec).items() if e not in r.reported and math.isfinite(sa[1])}
    for epoch, (step, acc) in sorted(new.items()):
      r.trial.report(acc, epoch)
      r.reported[epoch] = acc
      if self.space.pruner != "none" and r.trial.should_prune():
        r.stopped_at, r.stopped_step = epoch, step
        self.log(f"trial {r.trial.number}: {r.spec.name} stopped by the pruner after epoch {epoch} "
                 f"(accuracy {acc:.4f})")
        break
    return bool(new)

  def stop_pruned(self, r: Running) -> None:
    """Kills a run the pruner stopped as soon as the checkpoint of its last reported evaluation is written (or
    it has gone past it): it trains no further epoch, and its folder resumes from there."""
    from xnn.train.checkpoint import checkpoint_steps
    if r.killed:
      return
    past = any(e > r.stopped_at for e in self.evals(r.spec))
    if past or r.stopped_step in checkpoint_steps(r.spec.workdir):
      self.runs.signal(signal.SIGKILL, r.spec.name)
      r.killed = True

  def poll(self) -> None:
    for r in list(self.inflight.values()):
      if r.waiting:
        self.poll_waiting(r)
        continue
      self.report(r)
      if r.stopped_at is not None:
        self.stop_pruned(r)
    for spec, code, text in self.runs.poll():
      r = self.inflight.pop(spec.name)
      self.ended(r, code, text)

  def poll_waiting(self, r: Running) -> None:
    """A candidate another process trains: told from its final.json, or started here once that process is gone."""
    from xnn.train import resume
    from xnn.train.workdir_lock import probe_workdir
    final = resume.finished(r.spec.workdir, self.resolve(r.spec.run))
    if final is not None:
      del self.inflight[r.spec.name]
      self.conclude(r, final)
    elif probe_workdir(r.spec.workdir) is None and self.runs.has_room and self.stop_signal is None:
      del self.inflight[r.spec.name]
      self.start(r.trial, r.spec)

  def ended(self, r: Running, code: int, text: str) -> None:
    from xnn.sweeps.status import last_error
    from xnn.train import resume
    og = optuna()
    wall = r.trial.user_attrs.get("wall_s", 0.0) + time.time() - r.started
    r.trial.set_user_attr("wall_s", wall)
    self.report(r)
    final = resume.finished(r.spec.workdir, self.resolve(r.spec.run)) if code == 0 else None
    if r.stopped_at is not None:
      r.trial.set_user_attr("stopped_at", r.stopped_at)
      self.tell_pruned(r, None)
    elif final is not None:
      self.tell_finished(r, final)
    elif self.stop_signal is not None:
      self.log(f"trial {r.trial.number}: {r.spec.name} stopped ({text}); a relaunch resumes it")
    elif text.startswith("busy"):
      r.waiting = True
      self.inflight[r.spec.name] = r
    elif 0 < code < 128:
      r.trial.set_user_attr("failed", last_error(r.spec.workdir))
      self.tell_pruned(r, f"{r.spec.name} failed: {r.trial.user_attrs['failed']}")
    else:
      n = self.retries[r.spec.name] = self.retries.get(r.spec.name, 0) + 1
      for t in [r.trial, *r.followers]:
        self.study.tell(t, state=og.trial.TrialState.FAIL)
      if n <= MAX_RETRIES:
        self.study.enqueue_trial(dict(r.trial.params), user_attrs={"retry_of": r.trial.number})
      self.log(f"trial {r.trial.number}: {r.spec.name} {text}; "
               + ("enqueued again (it resumes)" if n <= MAX_RETRIES else "given up"))
      self.write()

  # --- telling --------------------------------------------------------------------------------

  def conclude(self, r: Running, final: dict[str, Any]) -> None:
    """A run that trained to the end while no search watched it: its evaluations are reported as if they had
    been watched, so the pruner decides as it would have (the answer depends on the numbers, not on timing)."""
    self.report(r)
    if r.stopped_at is not None:
      r.trial.set_user_attr("stopped_at", r.stopped_at)
      self.tell_pruned(r, None)
    else:
      self.tell_finished(r, final)

  def tell_finished(self, r: Running, final: dict[str, Any]) -> None:
    acc = final.get("test_accuracy")
    acc = float(acc) if isinstance(acc, (int, float, str)) else math.nan
    if not math.isfinite(acc):
      r.trial.set_user_attr("failed", f"final accuracy {acc}")
      self.tell_pruned(r, f"{r.spec.name}: its final accuracy is {acc}")
      return
    r.trial.set_user_attr("final_wall_s", final.get("wall_time_s"))
    r.trial.set_user_attr("epochs", final.get("epoch"))
    values = [acc] + ([r.trial.user_attrs["cost"]["macs"]] if len(self.space.objectives) > 1 else [])
    for t in [r.trial, *r.followers]:
      self.study.tell(t, values)
    self.log(f"trial {r.trial.number}: {r.spec.name}: accuracy {acc:.4f} after {final.get('epoch', 0):g} epochs")
    self.write()

  def tell_pruned(self, r, message: str | None) -> None:
    """Prunes a trial (a ``Running``'s trial and its followers, or a bare trial) and logs ``message``."""
    og = optuna()
    trials = [r.trial, *r.followers] if isinstance(r, Running) else [r]
    for t in trials:
      if t is not trials[0]:
        for k, v in trials[0].user_attrs.items():
          if k in ("stopped_at", "failed", "wall_s"):
            t.set_user_attr(k, v)
      self.study.tell(t, state=og.trial.TrialState.PRUNED)
    if message:
      self.log(f"trial {trials[0].number}: {message}")
    self.write()

  def write(self) -> None:
    if self.study is not None:
      results.write(self.study, self.dir, self.space, self.base, self.config)


# --- without a study ---------------------------------------------------------------------------


def max_epochs(cfg: dict[str, Any]) -> int:
  """The epochs a candidate of the (resolved, plain) config trains: the pruner's largest resource."""
  from xnn.data.datasets import DATASETS
  t, d = cfg["train"], cfg["data"]
  facts = DATASETS.get(d["name"]).facts
  if t["num_steps"] == 0 or facts is None:
    return t["num_epochs"]
  per_epoch = max(1, facts.examples(d["train_split"]) // t["batch_size"])
  return math.ceil(t["num_steps"] / per_epoch)


def dry_run(config: str, space: SearchSpace, n: int, extra: Sequence[str] = ()) -> list[dict[str, Any]]:
  """Samples ``n`` candidates at random (an in-memory study: nothing is written) and costs each; returns rows."""
  og = optuna()
  is_field = is_field_of(default_fields())
  space.check_fields(is_field)
  analyst = cons.Analyst(config, extra)
  try:
    analyst.resolve({})
    study = og.create_study(sampler=og.samplers.RandomSampler(seed=space.seed),
                            directions=[OBJECTIVES[o] for o in space.objectives])
    rows, seen = [], set()
    for _ in range(n):
      trial = study.ask()
      overrides = space.overrides(space.sample(trial), is_field)
      name = candidate_name(overrides)
      study.tell(trial, state=og.trial.TrialState.PRUNED)
      if name in seen:
        continue
      seen.add(name)
      try:
        cost = analyst.cost(overrides, space.constraints)
        over = cons.violations(cost, space.constraints)
        rows.append({"candidate": name, "cost": cost.to_dict(), "over_budget": over})
      except ValueError as e:
        rows.append({"candidate": name, "invalid": " ".join(str(e).split())})
  finally:
    analyst.close()
  return rows
