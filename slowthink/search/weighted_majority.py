"""Weighted majority vote: each well-formed sample votes for its answer with its verifier score as the
weight (outcome score, or aggregated step scores); the heaviest answer wins (ties: more votes, then seen first). The
returned completion is the highest-scoring sample with the winning answer."""

from __future__ import annotations

from .base import Policy, Solution
from .best_of_n import sample_and_score


def weighted_totals(answers: list[str | None], weights: list[float | None]) -> tuple[str | None, dict[str, float]]:
    """(winning answer, total weight per answer): the answer with the largest total weight; None answers never
    vote; ties: the answer with more votes, then the one seen first. (A 0/1 verifier that confirms no sample
    thus leaves plain majority, not the first sample.)"""
    totals: dict[str, float] = {}
    votes: dict[str, int] = {}
    for a, w in zip(answers, weights):
        if a is not None:
            totals[a] = totals.get(a, 0.0) + float(w or 0.0)
            votes[a] = votes.get(a, 0) + 1
    if not totals:
        return None, totals
    return max(totals, key=lambda a: (totals[a], votes[a])), totals  # max keeps the first of equals


def weighted_vote(answers: list[str | None], weights: list[float | None]) -> str | None:
    """The winning answer of :func:`weighted_totals`."""
    return weighted_totals(answers, weights)[0]


def solve(problem, policy: Policy, verifier=None, budget: int | None = None, *, n: int = 8, agg: str = "min",
          use: str = "auto") -> Solution:
    meter, v0, n, scored = sample_and_score("weighted_majority", problem, policy, verifier, budget, n, agg, use)
    if scored is None:
        return policy.solution(problem, "", meter, verifier, v0, budget_exhausted=True)
    comps, parsed, vs = scored
    answers = [p.answer if p.well_formed else None for p in parsed]
    winner, totals = weighted_totals(answers, vs)
    pick = 0
    if winner is not None:
        pick = max((i for i, a in enumerate(answers) if a == winner), key=lambda i: (vs[i], -i))
    return policy.solution(problem, comps[pick].text, meter, verifier, v0, weights=totals, scores=vs, n=n)
