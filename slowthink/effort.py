"""``reasoning_effort``: how hard to think, by name. The CLI (``eval``/``solve --reasoning-effort``) and
the server use these same meanings.

    effort   what runs                                                      tokens per sample
    none     System-1: answer directly, greedy                              256
    low      System-2: think, then answer; greedy                           256
    medium   System-2 greedy (the default)                                  1024
    high     System-2 self-consistency: majority vote of 8 samples, T=0.7   1024
    auto     the router saved beside the model (slowthink train router) picks, per question, the
             cheapest of its arms predicted to do about as well as the best; with no router saved,
             auto runs medium and says so

A request's explicit token limit (``max_completion_tokens``) replaces the per-sample default.
"""

from __future__ import annotations

import dataclasses

from .router.arms import Arm
from .chat import Mode

EFFORTS: dict[str, Arm | None] = {
    "none": Arm("none", Mode.SYSTEM1, 1, max_tokens=256),
    "low": Arm("low", Mode.SYSTEM2, 1, max_tokens=256),
    "medium": Arm("medium", Mode.SYSTEM2, 1, max_tokens=1024),
    "high": Arm("high", Mode.SYSTEM2, 8, temperature=0.7, max_tokens=1024),
    "auto": None,  # the router
}
DEFAULT_EFFORT = "medium"
AUTO_FALLBACK = "medium"


def check_effort(effort: str) -> str:
    if effort not in EFFORTS:
        raise ValueError(f"reasoning_effort must be one of {', '.join(EFFORTS)}; got {effort!r}")
    return effort


def effort_arm(effort: str, max_tokens: int | None = None, model: str = "main") -> Arm:
    """The fixed arm of a non-auto effort (with an optional per-sample token limit and model name)."""
    arm = EFFORTS[check_effort(effort)]
    if arm is None:
        raise ValueError("reasoning_effort 'auto' has no fixed arm: it is the router's choice")
    return dataclasses.replace(arm, max_tokens=max_tokens or arm.max_tokens, model=model)


def solve_with_effort(problem, effort: str, engines: dict, task, router=None, seed: int | None = 0,
                      max_tokens: int | None = None, tradeoff: float | None = None):
    """A ``search.Solution`` for one problem at a given effort. Its ``extra["effort"]`` says what ran and,
    for auto, why (``extra["route"]``)."""
    from .router.arms import run_arm
    from .router.solve import route_solve

    check_effort(effort)
    if effort == "auto" and router is not None:
        sol = route_solve(problem, router, engines, task, seed=seed, tradeoff=tradeoff)
        sol.extra["effort"] = "auto"
        return sol
    used = AUTO_FALLBACK if effort == "auto" else effort
    model = "slow" if "slow" in engines and EFFORTS[used].mode == Mode.SYSTEM2 else (
        "fast" if "fast" in engines else "main")
    sol = run_arm(effort_arm(used, max_tokens, model), problem, engines, task, seed)
    sol.extra["effort"] = effort
    if effort == "auto":
        sol.extra["route"] = {"arm": used, "why": "no router saved beside the model: auto runs "
                              f"{used} (train one with: slowthink train router --model MODEL_DIR)"}
    return sol
