"""The Optuna study that records a search: storage, sampler, pruner, and what a relaunch finds in it.

Storage (``--storage``): ``sqlite`` (default) keeps the study in ``SEARCH/study.db``
(Optuna's RDB storage); ``journal`` in ``SEARCH/study.journal`` (Optuna's journal
file storage: appends under a file lock, for several hosts sharing a filesystem,
where SQLite's locking is unreliable); any other value is an Optuna storage URL
(``postgresql://...``). The study is the search's record: every trial, its
parameters, its state and its user attributes (the candidate's name and config diff,
its cost, why it was pruned, its wall time).

Samplers (Optuna's): TPE (``TPESampler``: multivariate, grouped for the branches of
a conditional space, constant liar for parallel trials), random, NSGA-II. The sampler
is made afresh for every trial with the seed ``seed + trial number``: the samplers
keep no state apart from their random generator (the history is in the storage),
so a search that was stopped and relaunched proposes the trials an uninterrupted
one would (one trial at a time; with several in parallel the order of finishing
decides). Each trial carries its constraint values (``xnn.search.constraints.amounts``,
``Trial.set_constraint``), which TPE and NSGA-II read.

Pruners: Optuna's ``SuccessiveHalvingPruner`` (asynchronous successive halving, Li
et al. 2020) and ``HyperbandPruner`` (Li et al. 2018) over the epochs a candidate has
evaluated, from ``min_epochs`` up by ``reduction_factor``.

Who owns a running trial: each ``xnn search`` process (a controller) holds the lock
of ``SEARCH/controllers/HOST-PID`` (``xnn.train.workdir_lock``) while it runs and
records that name on the trials it asks. A relaunch finds trials still RUNNING whose
controller holds no lock any more (killed, crashed, its host gone): it marks them
FAIL and enqueues their parameters again (as Optuna's ``RetryFailedTrialCallback``
does), so the interrupted candidate resumes from its checkpoint.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any

from xnn.search.space import OBJECTIVES, SearchSpace

STUDY_NAME = "xnn_search"
CONTROLLERS = "controllers"


def optuna():
  import optuna as _optuna
  _optuna.logging.set_verbosity(_optuna.logging.WARNING)
  warnings.filterwarnings("ignore", category=_optuna.exceptions.ExperimentalWarning)
  return _optuna


def storage(kind: str, search_dir: str):
  """The Optuna storage of ``--storage KIND`` (sqlite, journal or a URL) for the search folder."""
  og = optuna()
  if kind == "sqlite":
    return f"sqlite:///{os.path.abspath(os.path.join(search_dir, 'study.db'))}"
  if kind == "journal":
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
    path = os.path.join(search_dir, "study.journal")
    return og.storages.JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
  if "://" in kind:
    return kind
  raise ValueError(f"--storage {kind!r}: expected sqlite, journal or an Optuna storage URL (e.g. postgresql://...)")


def make_sampler(space: SearchSpace, trial_number: int):
  """The sampler for the trial numbered ``trial_number`` (seeded ``seed + trial_number``)."""
  og = optuna()
  seed = space.seed + trial_number
  if space.sampler == "random":
    return og.samplers.RandomSampler(seed=seed)
  if space.sampler == "nsga2":
    return og.samplers.NSGAIISampler(population_size=max(2, space.startup_trials), seed=seed)
  return og.samplers.TPESampler(n_startup_trials=space.startup_trials, seed=seed, multivariate=True, group=True,
                                constant_liar=True)


def make_pruner(space: SearchSpace, max_epochs: int):
  og = optuna()
  if space.pruner == "successive_halving":
    return og.pruners.SuccessiveHalvingPruner(min_resource=space.min_epochs, reduction_factor=space.reduction_factor)
  if space.pruner == "hyperband":
    return og.pruners.HyperbandPruner(min_resource=space.min_epochs, max_resource=max(max_epochs, space.min_epochs),
                                      reduction_factor=space.reduction_factor)
  return og.pruners.NopPruner()


def record(space: SearchSpace, base: dict[str, Any]) -> dict[str, Any]:
  """What identifies a search: the space, the objectives and the base config (as JSON types), without the
  fields that only say how a run is watched, cached or kept (``xnn.train.resume.MAY_CHANGE``; its length stays)."""
  from xnn.train.resume import LENGTH_FIELDS, MAY_CHANGE
  base = json.loads(json.dumps(base))
  for field in set(MAY_CHANGE) - set(LENGTH_FIELDS):
    section, _, key = field.rpartition(".")
    base.get(section, {}).pop(key, None)
  return json.loads(json.dumps({"space": space.describe(), "base_config": base}, sort_keys=True, default=repr))


def _clip(v: Any, width: int = 60) -> str:
  text = json.dumps(v)
  return text if len(text) <= width else text[:width - 3] + "..."


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
  out = []
  for key in sorted(set(old) | set(new)):
    a, b = old.get(key), new.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
      out += _differences(a, b, f"{prefix}{key}.")
    elif a != b:
      out.append(f"{prefix}{key}: {_clip(a)} -> {_clip(b)}")
  return out


def open_study(space: SearchSpace, search_dir: str, storage_kind: str, base: dict[str, Any], max_epochs: int):
  """The search's study: created (with the ``start`` candidates enqueued) or loaded; a study of another
  search (another space, objective or base config) is refused, naming what differs."""
  og = optuna()
  directions = [OBJECTIVES[o] for o in space.objectives]
  os.makedirs(search_dir, exist_ok=True)
  study = og.create_study(storage=storage(storage_kind, search_dir), study_name=STUDY_NAME, load_if_exists=True,
                          directions=directions, pruner=make_pruner(space, max_epochs))
  want = record(space, base)
  have = study.user_attrs.get("search")
  if have is None:
    study.set_user_attr("search", want)
    for values in space.start:
      study.enqueue_trial(space.start_params(values), user_attrs={"start": True})
  elif have != want:
    diff = _differences(have, want)
    raise ValueError(f"{search_dir} holds another search ({'; '.join(diff[:4])}{' ...' if len(diff) > 4 else ''}); "
                     "relaunch it with the same config, or use another --workdir")
  if [d.name.lower() for d in study.directions] != directions:
    raise ValueError(f"{search_dir} holds a study with directions {[d.name.lower() for d in study.directions]}, "
                     f"not {directions}; use another --workdir")
  return study


def controller_alive(search_dir: str, name: str | None) -> bool:
  """Whether the controller ``name`` still holds its lock (the trials it asked are its own)."""
  from xnn.train.workdir_lock import probe_workdir
  return bool(name) and probe_workdir(os.path.join(search_dir, CONTROLLERS, name)) is not None


def remove_dead_controllers(search_dir: str) -> None:
  """Removes the folders of controllers that are gone (a SIGKILLed one leaves its lock file behind)."""
  import contextlib
  import shutil
  folder = os.path.join(search_dir, CONTROLLERS)
  for name in os.listdir(folder) if os.path.isdir(folder) else []:
    if not controller_alive(search_dir, name):
      with contextlib.suppress(OSError):
        shutil.rmtree(os.path.join(folder, name))


def recover_stale(study, search_dir: str, log=print) -> list[int]:
  """Trials left RUNNING by a controller that is gone: FAIL, and their parameters enqueued again.

  Returns the numbers of the trials recovered.
  """
  og = optuna()
  remove_dead_controllers(search_dir)
  out = []
  for t in study.get_trials(deepcopy=False, states=(og.trial.TrialState.RUNNING,)):
    owner = t.user_attrs.get("controller")
    if controller_alive(search_dir, owner):
      continue
    study.tell(t.number, state=og.trial.TrialState.FAIL, skip_if_finished=True)
    attrs = {k: t.user_attrs[k] for k in ("start",) if k in t.user_attrs}
    study.enqueue_trial(dict(t.params), user_attrs={**attrs, "retry_of": t.number})
    out.append(t.number)
    log(f"trial {t.number} ({t.user_attrs.get('candidate', 'no candidate yet')}) was left running by "
        f"{owner or 'a controller'} that is gone: enqueued again (its run resumes from its checkpoint)")
  return out
