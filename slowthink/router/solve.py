"""Routing one question online: signals, decision, then the chosen arm through the search strategies."""

from __future__ import annotations

from ..search.base import Solution
from ..chat import Mode, split_completion
from .arms import run_arm
from .router import Router
from .signals import compute_signals


def route_solve(problem, router: Router, engines: dict, task, seed: int | None = 0,
                tradeoff: float | None = None) -> Solution:
    """A Solution whose ``policy_tokens`` include the signals' tokens and whose ``extra["route"]`` holds the
    chosen arm, the predictions and the reason."""
    sig = compute_signals(engines, task, [problem], router.signals, router.signal_model("fast"),
                          router.signal_model("slow"), router.signal_max_tokens, (seed or 0) + 1,
                          router.s2_signal_max_tokens)
    d = router.decide(sig, 0, tradeoff)
    arm = router.arms[d.arm]
    route = {"arm": arm.name, "describe": arm.describe(), "why": d.why, "signal_tokens": d.signal_tokens,
             "predicted_success": dict(zip(router.arm_names, map(float, d.success))),
             "predicted_tokens": dict(zip(router.arm_names, map(float, d.cost)))}
    source = router.reused()[d.arm]
    if source is not None:  # the signal already answered with this arm
        mode = Mode.SYSTEM1 if source == "s1" else Mode.SYSTEM2
        text = sig.s1_texts[0] if source == "s1" else sig.s2_texts[0]
        s = task.score(problem, text, mode)
        reasoning = split_completion(text, mode).reasoning if mode == Mode.SYSTEM2 else None
        return Solution(answer=s.answer if s.well_formed else None, reasoning=reasoning, completion=text,
                        policy_tokens=d.signal_tokens, well_formed=s.well_formed,
                        extra={"samples": 1, "mode": mode, "route": route})
    sol = run_arm(arm, problem, engines, task, seed)
    sol.policy_tokens += d.signal_tokens
    sol.extra.update(mode=arm.mode, route=route)
    return sol
