"""Routing on held-out problems: every fixed arm against the router at several settings (a Pareto plot).

Every arm is run once on every held-out problem (``arm_table``) and the signals are computed once. A
router setting's accuracy on a problem is then the correctness of the arm it picks for that problem, its
tokens that arm's tokens plus the signals' (or only the signals' when it picks the System-1 answer the
signals already hold). Routers and fixed arms are thus compared on the very same draws.
"""

from __future__ import annotations

import numpy as np

from .arms import ArmTable, arm_table
from .policy import pareto_front, slow_share_for_gap
from .predictor import auroc
from .router import Router
from .signals import Signals, compute_signals
from ..chat import Mode


def routed_outcome(router: Router, table: ArmTable, sig: Signals, pick: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per problem: correct, tokens (signals + the picked arm's unless it reuses a signal's answer)."""
    rows = np.arange(len(pick))
    source = np.array(router.reused(), object)[pick]
    correct = np.where(source == "s1", sig.s1_correct,
                       np.where(source == "s2check", sig.s2_correct, table.correct[rows, pick]))
    tokens = sig.tokens + np.where(source == None, table.tokens[rows, pick], 0)  # noqa: E711 (elementwise)
    return correct, tokens


def by_level(levels: np.ndarray, correct: np.ndarray, tokens: np.ndarray) -> dict:
    return {str(lv): {"n": int((levels == lv).sum()), "accuracy": float(correct[levels == lv].mean()),
                      "mean_tokens": float(tokens[levels == lv].mean())} for lv in sorted(set(levels.tolist()))}


TRADEOFFS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4)
BUDGET_FRACTIONS = (0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0)


def evaluate_routing(router: Router, engines: dict, task, problems, tradeoffs=TRADEOFFS,
                     budget_fractions=BUDGET_FRACTIONS, seed: int = 0, progress: bool = False, **bar) -> dict:
    """Run every arm and the signals on ``problems``, then score the fixed arms and the router settings."""
    table = arm_table(engines, task, problems, router.arms, seed=seed, progress=progress)
    fast = router.signal_model("fast")
    slow = router.signal_model("slow")
    sig = compute_signals(engines, task, problems, router.signals, fast, slow, router.signal_max_tokens, seed + 1,
                          router.s2_signal_max_tokens)
    return score_routing(router, table, sig, problems, tradeoffs, budget_fractions, **bar)


def score_routing(router: Router, table: ArmTable, sig: Signals, problems, tradeoffs=TRADEOFFS,
                  budget_fractions=BUDGET_FRACTIONS, bar_tokens: float = 0.35, bar_points: float = 1.0) -> dict:
    """Fixed arms and router settings on an arm table and its problems' signals."""
    levels = np.array([p.level for p in problems])
    acc, tok = table.accuracy(), table.mean_tokens()
    fixed = [{"name": a.name, "describe": a.describe(), "accuracy": float(acc[j]), "mean_tokens": float(tok[j]),
              "by_level": by_level(levels, table.correct[:, j], table.tokens[:, j])}
             for j, a in enumerate(router.arms)]
    top = acc.max()
    best = min((j for j in range(len(acc)) if acc[j] == top), key=lambda j: tok[j])  # cheapest of the most accurate
    p, _ = router.predict(sig.features)

    def point(label: str, pick: np.ndarray, **setting) -> dict:
        correct, tokens = routed_outcome(router, table, sig, pick)
        return {"label": label, **setting, "accuracy": float(correct.mean()), "mean_tokens": float(tokens.mean()),
                "arm_share": {a.name: float((pick == j).mean()) for j, a in enumerate(router.arms)},
                "by_level": by_level(levels, correct, tokens),
                "arm_share_by_level": {str(lv): {a.name: float((pick[levels == lv] == j).mean())
                                                 for j, a in enumerate(router.arms)} for lv in sorted(set(levels))}}

    routed = [point(f"router tradeoff {t:g}", router.choose(sig.features, tradeoff=t), tradeoff=t) for t in tradeoffs]
    for f in budget_fractions:
        b = f * tok[best]  # the signals are paid first, the rest goes to the arms
        pick = router.choose(sig.features, mean_budget=max(b - sig.tokens.mean(), 1.0))
        routed.append(point(f"router budget {b:.0f}", pick, mean_budget=b))
    # an oracle router (knows which arm is right) bounds what any predictor could reach with these arms
    oracle_pick = np.where(table.correct.any(1), np.where(table.correct, tok[None, :], np.inf).argmin(1), 0)
    oracle = point("oracle router (upper bound)", oracle_pick)

    qualifying = [r for r in routed if r["accuracy"] >= top - bar_points / 100]
    cheapest = min(qualifying, key=lambda r: r["mean_tokens"]) if qualifying else None
    s1 = next((j for j, a in enumerate(router.arms) if a.mode == Mode.SYSTEM1 and a.greedy), None)
    slow_share = slow_share_oracle = None
    if s1 is not None:
        # send first the questions whose System-1 answer is predicted least likely right
        slow_share = slow_share_for_gap(table.correct[:, s1], table.correct[:, best], -p[:, s1])
        # the best any ranking can do: first the questions only the slow path gets right
        gain = table.correct[:, best].astype(float) - table.correct[:, s1].astype(float)
        slow_share_oracle = slow_share_for_gap(table.correct[:, s1], table.correct[:, best], gain)
    points = [(f["mean_tokens"], f["accuracy"]) for f in fixed] + [(r["mean_tokens"], r["accuracy"]) for r in routed]
    return {
        "problems": len(problems), "per_level": {str(lv): int((levels == lv).sum()) for lv in sorted(set(levels))},
        "fixed": fixed, "routed": routed, "oracle": oracle,
        "best_fixed": {"name": router.arms[best].name, "accuracy": float(acc[best]), "mean_tokens": float(tok[best])},
        "mean_signal_tokens": float(sig.tokens.mean()),
        "predictor_auroc": {a.name: auroc(p[:, j], table.correct[:, j]) for j, a in enumerate(router.arms)},
        "slow_share_for_80pct_gap": slow_share,
        "slow_share_for_80pct_gap_random": None if slow_share is None else 0.8,
        "slow_share_for_80pct_gap_oracle": slow_share_oracle,
        "pareto": pareto_front(points),
        "bar": {"within_points": bar_points, "max_token_fraction": bar_tokens,
                "cheapest_router_within": None if cheapest is None else {
                    "label": cheapest["label"], "accuracy": cheapest["accuracy"],
                    "mean_tokens": cheapest["mean_tokens"],
                    "token_fraction_of_best": cheapest["mean_tokens"] / tok[best]},
                "met": bool(cheapest is not None and cheapest["mean_tokens"] <= bar_tokens * tok[best]),
                # when a fixed arm already meets the bar, the best fixed arm won by noise, not by its compute
                "fixed_arm_also_meets": next((f["name"] for f in sorted(fixed, key=lambda f: f["mean_tokens"])
                                              if f["accuracy"] >= top - bar_points / 100
                                              and f["mean_tokens"] <= bar_tokens * tok[best]), None)},
    }
