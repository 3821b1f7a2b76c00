"""Weighted majority vote: each well-formed sample votes for its answer with its verifier score as the
weight (outcome score, or aggregated step scores); the heaviest answer wins (ties: more votes, then seen first). The
returned completion is the highest-scoring sample with the winning answer."""

from __future__ import annotations

from .base import BudgetExhausted, Policy, Solution, require_verifier, verifier_tokens
from .best_of_n import scored_samples


def weighted_vote(answers: list[str | None], weights: list[float | None]) -> str | None:
    """Answer with the largest total weight; None answers never vote; ties: the answer with more votes, then
    the one seen first. (A 0/1 verifier that confirms no sample thus leaves plain majority, not the first
    sample.)"""
    totals: dict[str, float] = {}
    votes: dict[str, int] = {}
    for a, w in zip(answers, weights):
        if a is not None:
            totals[a] = totals.get(a, 0.0) + float(w or 0.0)
            votes[a] = votes.get(a, 0) + 1
    if not totals:
        return None
    return max(totals, key=lambda a: (totals[a], votes[a]))  # max keeps the first of equals


def solve(problem, policy: Policy, verifier=None, budget: int | None = None, *, n: int = 8, agg: str = "min",
          use: str = "auto") -> Solution:
    require_verifier(verifier, "weighted_majority")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    meter = policy.new_meter(problem, budget, "weighted_majority")
    v0 = verifier_tokens(verifier)
    n = min(n, budget) if budget is not None else n
    try:
        comps, parsed, vs = scored_samples(problem, policy, verifier, meter, n, agg, use)
    except BudgetExhausted:
        return policy.solution(problem, "", meter, verifier, v0, budget_exhausted=True)
    answers = [p.answer if p.well_formed else None for p in parsed]
    winner = weighted_vote(answers, vs)
    totals: dict[str, float] = {}
    for a, w in zip(answers, vs):
        if a is not None:
            totals[a] = totals.get(a, 0.0) + w
    pick = 0
    if winner is not None:
        pick = max((i for i, a in enumerate(answers) if a == winner), key=lambda i: (vs[i], -i))
    return policy.solution(problem, comps[pick].text, meter, verifier, v0, weights=totals, scores=vs, n=n)
