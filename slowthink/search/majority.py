"""Self-consistency (Wang et al. 2022): N samples, the most common parsed answer wins. Malformed samples
do not vote; ties go to the answer seen first. The returned completion is the first sample with the
winning answer."""

from __future__ import annotations

from collections import Counter

from ..evaluate import majority
from .base import BudgetExhausted, Policy, Solution


def solve(problem, policy: Policy, verifier=None, budget: int | None = None, *, n: int = 8) -> Solution:
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    meter = policy.new_meter(problem, budget, "majority")
    n = min(n, budget) if budget is not None else n  # at least one token per sample
    try:
        comps = policy.sample(problem, n, meter)
    except BudgetExhausted:
        return policy.solution(problem, "", meter, budget_exhausted=True)
    scores = [policy.task.score(problem, c.text, policy.mode) for c in comps]
    answers = [s.answer if s.well_formed else None for s in scores]
    votes = Counter(a for a in answers if a is not None)
    winner = majority(answers)
    pick = answers.index(winner) if winner is not None else 0
    return policy.solution(problem, comps[pick].text, meter, votes=dict(votes), n=n,
                           well_formed_samples=sum(a is not None for a in answers))
