"""Test-time search: spend more policy tokens (and verifier calls) on one problem to answer it better.

Every strategy is ``solve(problem, policy, verifier=None, budget=None, **options) -> Solution`` (see
``slowthink.search.base``); ``STRATEGIES`` maps names to them. Verifiers follow a two-method protocol
(``score_steps`` / ``score``): the ground-truth oracles here (``slowthink.search.oracle``) and the learned
ORM/PRM critics of ``slowthink.critics`` (``make_verifier`` loads either by name or folder).
"""

from __future__ import annotations

import functools
import inspect

from . import beam, best_of_n, budget_forcing, greedy, majority, mcts, reflect, weighted_majority
from .base import (
    AGGREGATIONS,
    BudgetExhausted,
    Meter,
    OutcomeVerifier,
    Policy,
    Solution,
    StepVerifier,
    agg_last,
    agg_min,
    agg_prod,
    aggregate,
)
from .oracle import TaskOutcomeOracle, TaskStepOracle, make_verifier

STRATEGIES = {"greedy": greedy.solve, "majority": majority.solve, "best_of_n": best_of_n.solve,
              "weighted_majority": weighted_majority.solve, "beam": beam.solve,
              "budget_forcing": budget_forcing.solve, "mcts": mcts.solve, "reflect": reflect.solve}
NEEDS_VERIFIER = frozenset({"best_of_n", "weighted_majority", "beam", "mcts"})
SYSTEM2_ONLY = frozenset({"beam", "budget_forcing", "mcts", "reflect"})


def strategy_options(name: str) -> list[str]:
    """Keyword options a strategy accepts beyond (problem, policy, verifier, budget)."""
    fn = get_strategy(name)
    return [p.name for p in inspect.signature(fn).parameters.values() if p.kind == p.KEYWORD_ONLY]


def get_strategy(name: str, **options):
    """The solve function of a strategy, with ``options`` bound (unknown options are an error)."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    fn = STRATEGIES[name]
    if not options:
        return fn
    known = [p.name for p in inspect.signature(fn).parameters.values() if p.kind == p.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"strategy {name!r} has no option(s) {unknown}; its options: {known or 'none'}")
    return functools.partial(fn, **options)


__all__ = [
    "AGGREGATIONS",
    "NEEDS_VERIFIER",
    "STRATEGIES",
    "SYSTEM2_ONLY",
    "BudgetExhausted",
    "Meter",
    "OutcomeVerifier",
    "Policy",
    "Solution",
    "StepVerifier",
    "TaskOutcomeOracle",
    "TaskStepOracle",
    "agg_last",
    "agg_min",
    "agg_prod",
    "aggregate",
    "get_strategy",
    "make_verifier",
    "strategy_options",
]
