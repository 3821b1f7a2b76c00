"""Best-of-N: N samples, the one the verifier scores highest wins (outcome score when the verifier has
``score``, else its step scores aggregated by ``agg``: min, prod or last). Malformed samples are not
scored and lose to any well-formed one; ties go to the earlier sample."""

from __future__ import annotations

from .base import (
    BudgetExhausted,
    Policy,
    Solution,
    require_verifier,
    score_completion,
    verifier_tokens,
)


def scored_samples(problem, policy: Policy, verifier, meter, n: int, agg: str, use: str):
    """(completions, parsed scores, verifier scores with None for malformed samples)."""
    comps = policy.sample(problem, n, meter)
    parsed = [policy.task.score(problem, c.text, policy.mode) for c in comps]
    vs = [score_completion(verifier, policy, problem, c.text, agg, use) if p.well_formed else None
          for c, p in zip(comps, parsed)]
    return comps, parsed, vs


def sample_and_score(name: str, problem, policy: Policy, verifier, budget: int | None, n: int, agg: str, use: str):
    """The start every verifier-ranked strategy shares: check the arguments, sample ``n`` (at most ``budget``)
    and score the well-formed samples. Returns ``(meter, v0, n, scored)``; ``scored`` is what
    :func:`scored_samples` returns, or None when the budget ran out first."""
    require_verifier(verifier, name)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    meter = policy.new_meter(problem, budget, name)
    v0 = verifier_tokens(verifier)
    n = min(n, budget) if budget is not None else n
    try:
        return meter, v0, n, scored_samples(problem, policy, verifier, meter, n, agg, use)
    except BudgetExhausted:
        return meter, v0, n, None


def solve(problem, policy: Policy, verifier=None, budget: int | None = None, *, n: int = 8, agg: str = "min",
          use: str = "auto") -> Solution:
    meter, v0, n, scored = sample_and_score("best_of_n", problem, policy, verifier, budget, n, agg, use)
    if scored is None:
        return policy.solution(problem, "", meter, verifier, v0, budget_exhausted=True)
    comps, _, vs = scored
    ranked = [i for i in range(len(comps)) if vs[i] is not None]
    pick = max(ranked, key=lambda i: (vs[i], -i)) if ranked else 0
    return policy.solution(problem, comps[pick].text, meter, verifier, v0, scores=vs, picked=pick, n=n)
