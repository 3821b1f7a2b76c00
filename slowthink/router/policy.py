"""Routing decisions from predictions: pure functions of predicted success ``p`` [Q, A] and predicted
cost ``c`` [Q, A] (tokens), one row per question, one column per arm.

* ``choose_within``: per question, the cheapest arm whose predicted success is within ``tradeoff`` of the
  best arm's (tradeoff 0: the arm predicted best; larger: cheaper, riskier).
* ``choose_for_budget``: over a batch, the arms that maximise the sum of predicted successes with mean cost
  at most ``mean_budget`` (compute-optimal allocation, Snell et al. 2024). Solved by its Lagrangian: each
  question takes argmax p - mu * c, and mu is bisected to the smallest value that fits the budget.
"""

from __future__ import annotations

import numpy as np


def choose_within(p: np.ndarray, c: np.ndarray, tradeoff: float) -> np.ndarray:
    if tradeoff < 0:
        raise ValueError(f"tradeoff must be >= 0, got {tradeoff}")
    ok = p >= p.max(1, keepdims=True) - tradeoff
    return np.where(ok, c, np.inf).argmin(1)


def _lagrangian_choice(p: np.ndarray, c: np.ndarray, mu: float) -> np.ndarray:
    v = p - mu * c
    # among (near-)ties prefer the cheaper arm, so mu = 0 does not buy tokens for nothing
    best = v.max(1, keepdims=True)
    return np.where(v >= best - 1e-12, c, np.inf).argmin(1)


def choose_for_budget(p: np.ndarray, c: np.ndarray, mean_budget: float, iters: int = 60) -> np.ndarray:
    if mean_budget <= 0:
        raise ValueError(f"mean_budget must be > 0 tokens, got {mean_budget}")
    rows = np.arange(len(p))
    pick = _lagrangian_choice(p, c, 0.0)
    if c[rows, pick].mean() <= mean_budget:
        return pick
    lo, hi = 0.0, 1.0
    while c[rows, _lagrangian_choice(p, c, hi)].mean() > mean_budget and hi < 1e9:
        hi *= 4
    for _ in range(iters):
        mid = (lo + hi) / 2
        if c[rows, _lagrangian_choice(p, c, mid)].mean() > mean_budget:
            lo = mid
        else:
            hi = mid
    return _lagrangian_choice(p, c, hi)  # the cheapest arms when even they exceed the budget


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the (tokens, accuracy) points no other point beats on both (fewer tokens, higher accuracy)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -np.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def slow_share_for_gap(fast_correct: np.ndarray, slow_correct: np.ndarray, score: np.ndarray,
                       recover: float = 0.8) -> float | None:
    """RouteLLM's figure: the smallest share of questions sent to the slow path (highest ``score`` first)
    that recovers ``recover`` of the accuracy gap between always-fast and always-slow. None when there is
    no gap to recover."""
    fast, slow = fast_correct.mean(), slow_correct.mean()
    if slow <= fast:
        return None
    target = fast + recover * (slow - fast)
    order = np.argsort(-np.asarray(score, np.float64), kind="mergesort")
    q = len(order)
    acc = fast
    for k, i in enumerate(order, 1):
        acc += (float(slow_correct[i]) - float(fast_correct[i])) / q
        if acc >= target - 1e-12:
            return k / q
    return 1.0
