"""Routing one question online: signals, decision, then the chosen arm through the search strategies."""

from __future__ import annotations

from ..search.base import Solution
from .arms import run_arm
from .router import Router
from .signals import compute_signals


def route_solve(problem, router: Router, engines: dict, task, seed: int | None = 0,
                tradeoff: float | None = None) -> Solution:
    """A Solution whose ``policy_tokens`` include the signals' tokens and whose ``extra["route"]`` holds the
    chosen arm, the predictions and the reason."""
    sig = compute_signals(engines, task, [problem], router.signals, router.signal_model("fast"),
                          router.signal_model("slow"), router.signal_max_tokens, (seed or 0) + 1)
    d = router.decide(sig, 0, tradeoff)
    arm = router.arms[d.arm]
    route = {"arm": arm.name, "describe": arm.describe(), "why": d.why, "signal_tokens": d.signal_tokens,
             "predicted_success": dict(zip(router.arm_names, map(float, d.success))),
             "predicted_tokens": dict(zip(router.arm_names, map(float, d.cost)))}
    if router.reuses_s1()[d.arm]:
        text = sig.s1_texts[0]
        s = task.score(problem, text, "system1")
        return Solution(answer=s.answer if s.well_formed else None, reasoning=None, completion=text,
                        policy_tokens=d.signal_tokens, well_formed=s.well_formed,
                        extra={"samples": 1, "mode": "system1", "route": route})
    sol = run_arm(arm, problem, engines, task, seed)
    sol.policy_tokens += d.signal_tokens
    sol.extra.update(mode=arm.mode, route=route)
    return sol
