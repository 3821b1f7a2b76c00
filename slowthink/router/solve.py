"""Routing one question online: the effort service's ``auto`` (``slowthink.effort.auto``) on in-process
engines."""

from __future__ import annotations

from ..search.base import Solution
from .router import Router


def route_solve(problem, router: Router, engines: dict, task, seed: int | None = 0,
                tradeoff: float | None = None) -> Solution:
    """A Solution whose ``policy_tokens`` include the signals' tokens and whose ``extra["route"]`` holds the
    chosen arm, the predictions and the reason."""
    from ..effort import solve_with_effort

    return solve_with_effort(problem, "auto", engines, task, router, seed=seed, tradeoff=tradeoff)
