"""Greedy decoding: one completion at temperature 0 (the baseline every search is compared with)."""

from __future__ import annotations

from .base import BudgetExhausted, Policy, Solution


def solve(problem, policy: Policy, verifier=None, budget: int | None = None) -> Solution:
    meter = policy.new_meter(problem, budget, "greedy")
    try:
        [c] = policy.sample(problem, 1, meter, temperature=0.0)
    except BudgetExhausted:
        return policy.solution(problem, "", meter, budget_exhausted=True)
    return policy.solution(problem, c.text, meter, finish_reason=c.finish_reason)
