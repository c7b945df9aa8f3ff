"""Architecture search under a cost budget: Optuna proposes, ``xnn.cost`` prunes, the sweep launchers train.

A config file's ``get_search_space(arg)`` declares the space next to ``get_config(arg)``
(see ``xnn.search.space``); ``xnn search CONFIG --workdir DIR`` runs it.

Modules:
  xnn.search.space        -- declaration (choice, integer, real, fixed, derived, branch; Constraints,
                             SearchSpace), candidate names, load_search_space.
  xnn.search.constraints  -- a candidate's cost on abstract shapes and the limits it exceeds.
  xnn.search.study        -- the Optuna study: storage (SQLite, journal), sampler, pruner, stale trials.
  xnn.search.loop         -- the search: ask, cost, train through a launcher, report epochs, prune, tell.
  xnn.search.results      -- the table of every candidate, pareto.png and best.py.
"""

from xnn.search.space import (Constraints, SearchSpace, SpaceError, branch, candidate_name, choice, derived, fixed,
                              integer, load_search_space, real)

__all__ = ["Constraints", "SearchSpace", "SpaceError", "branch", "candidate_name", "choice", "derived", "fixed",
           "integer", "load_search_space", "real"]
