"""Evaluation on held-out problems: pass@1 (greedy), pass@k and majority@k, by level and mode; a test-time
strategy's accuracy and tokens by level; AUROC, the metric of the predictors and critics that judge answers.

Every accuracy comes with the number of problems it was measured on and its 95% Wilson interval
(``wilson_interval``), and a difference between two accuracies can be checked against the noise of their sizes
(``within_noise``): at 100 problems an accuracy near 50% is known to about +-10 points.
The task scores through ``tasks.guard``: a verifier crash on one completion counts it malformed."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from math import comb, sqrt

import numpy as np

from .chat import MODES, Mode, check_mode
from .tasks.base import Problem
from .tasks.guard import guard
from .tokenizer import render_prompt


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


Z95 = 1.959963984540054  # the standard normal's 97.5% quantile: two-sided 95%


def wilson_interval(k: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval (95% by default) of a proportion ``k`` of ``n``: unlike the normal approximation
    it stays inside [0, 1] and is not empty at 0 or n successes. ``k`` may be fractional (an average such as
    pass@k over problems: the interval is then approximate); ``n == 0`` knows nothing: (0, 1)."""
    if n < 0 or not -1e-9 <= k <= n + 1e-9:  # k from a mean times n may carry rounding
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p, zz = min(max(k / n, 0.0), 1.0), z * z
    centre = (p + zz / (2 * n)) / (1 + zz / n)
    half = z * sqrt(p * (1 - p) / n + zz / (4 * n * n)) / (1 + zz / n)
    # the interval holds p: rounding must not say otherwise (at k = n, centre + half falls short of 1 by 1e-16)
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def two_proportion_z(k1: float, n1: int, k2: float, n2: int) -> float:
    """The two-proportion z statistic of ``k2/n2 - k1/n1`` (pooled standard error; 0 when both are 0% or both
    100%). It treats the two samples as independent: two accuracies on the same problems usually succeed and fail
    together, and then it overstates the noise, so a difference it calls significant is."""
    if n1 <= 0 or n2 <= 0:
        raise ValueError(f"both samples need problems, got n1={n1}, n2={n2}")
    pooled = (k1 + k2) / (n1 + n2)
    se = sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return 0.0 if se == 0 else (k2 / n2 - k1 / n1) / se


def within_noise(p1: float, n1: int, p2: float, n2: int, z: float = Z95) -> bool:
    """Whether accuracies ``p1`` (on ``n1`` problems) and ``p2`` (on ``n2``) differ by less than the noise of those
    sizes: the two-proportion test does not reject equality at the 95% level."""
    return abs(two_proportion_z(p1 * n1, n1, p2 * n2, n2)) < z


def with_intervals(block: dict, keys) -> dict:
    """``block`` (with its ``n``) and, for each accuracy ``key`` in it, ``{key}_ci95``: its Wilson interval."""
    return {**block, **{f"{key}_ci95": list(wilson_interval(block[key] * block["n"], block["n"])) for key in keys}}


def majority(answers: list[str | None]) -> str | None:
    """Most common extracted answer (ties: the one seen first); None answers never win."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == best)


def auroc(scores, labels) -> float:
    """Area under the ROC curve (ties count half); NaN when only one class is present."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels, bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


@dataclass
class ModeResult:
    greedy_correct: list[bool]
    greedy_tokens: list[int]
    sample_correct: list[list[bool]]  # per problem, k samples (empty when k == 1)
    majority_correct: list[bool]


def _prompts(task, tok, problems: list[Problem], mode: Mode) -> list[list[int]]:
    return [render_prompt(tok, task.prompt(p, mode), mode) for p in problems]


def run_mode(engine, task, tok, problems: list[Problem], mode: Mode, k: int = 1, temperature: float = 1.0,
             max_tokens: int = 256, seed: int = 0, episodes=None) -> ModeResult:
    """``episodes``: a rollout worker's ``episodes(problems, mode, n, sampling)`` (one with tools): each problem is
    then answered in a multi-turn episode and scored by its environment (slowthink/env)."""
    from .engine import SamplingParams

    if episodes is not None:
        from .env.evaluate import run_mode_episodes

        return run_mode_episodes(episodes, problems, mode, k, temperature, max_tokens, seed)
    task = guard(task)
    prompts = _prompts(task, tok, problems, mode)
    greedy = engine.generate(prompts, n=1, sampling=SamplingParams(max_tokens=max_tokens, temperature=0.0))
    g_scores = [task.score(p, c[0].text, mode) for p, c in zip(problems, greedy)]
    sample_correct: list[list[bool]] = [[] for _ in problems]
    maj: list[bool] = [s.correct for s in g_scores]
    if k > 1:
        sampled = engine.generate(prompts, n=k, sampling=SamplingParams(max_tokens=max_tokens,
                                                                         temperature=temperature, seed=seed))
        maj = []
        for i, (p, comps) in enumerate(zip(problems, sampled)):
            scores = [task.score(p, c.text, mode) for c in comps]
            sample_correct[i] = [s.correct for s in scores]
            voted = majority([s.answer for s in scores])
            maj.append(voted is not None and task.score(p, _as_completion(voted, mode), mode).correct)
    return ModeResult([s.correct for s in g_scores], [len(c[0].token_ids) for c in greedy], sample_correct, maj)


def _as_completion(answer: str, mode: Mode) -> str:
    return answer if mode == Mode.SYSTEM1 else f"\n</think>\n\n{answer}"


def summarize(problems: list[Problem], res: ModeResult, k: int) -> dict:
    def block(idx: list[int]) -> dict:
        out = {"n": len(idx), "pass@1": _mean(res.greedy_correct[i] for i in idx),
               "mean_tokens": _mean(res.greedy_tokens[i] for i in idx)}
        if k > 1:
            out[f"pass@{k}"] = _mean(pass_at_k(k, sum(res.sample_correct[i]), k) for i in idx)
            out["sampled_pass@1"] = _mean(pass_at_k(k, sum(res.sample_correct[i]), 1) for i in idx)
            out[f"maj@{k}"] = _mean(res.majority_correct[i] for i in idx)
        return with_intervals(out, [key for key in out if key not in ("n", "mean_tokens")])

    by_level: dict[int, list[int]] = defaultdict(list)
    for i, p in enumerate(problems):
        by_level[p.level].append(i)
    return {"overall": block(list(range(len(problems)))),
            "by_level": {str(lv): block(ix) for lv, ix in sorted(by_level.items())}}


def evaluate(engine, task, tok, problems: list[Problem], modes: tuple[str, ...] = MODES, k: int = 1,
             temperature: float = 1.0, max_tokens: int = 256, seed: int = 0, episodes=None) -> dict:
    """``{mode: {"overall": {...}, "by_level": {level: {...}}}}``; ``episodes`` as in :func:`run_mode`."""
    return {m: summarize(problems, run_mode(engine, task, tok, problems, check_mode(m), k, temperature,
                                            max_tokens, seed, episodes), k) for m in modes}


def _mean(xs) -> float:
    xs = list(xs)
    return float(sum(xs)) / len(xs) if xs else 0.0


def heldout_metrics(engine, task, tok, problems: list[Problem], modes: tuple[str, ...] = MODES,
                    max_tokens: int = 256, episodes=None) -> dict[str, float]:
    """Greedy pass@1 overall and per level, flattened for a metrics log: ``eval/{mode}_pass@1``,
    ``eval/{mode}_L{level}``, the number of problems ``eval/{mode}_n`` and the 95% interval
    ``eval/{mode}_pass@1_lo`` .. ``_hi``. Trainers call this for their periodic held-out evaluation."""
    out: dict[str, float] = {}
    for mode, r in evaluate(engine, task, tok, problems, modes=modes, k=1, max_tokens=max_tokens,
                            episodes=episodes).items():
        overall = r["overall"]
        out[f"eval/{mode}_pass@1"] = overall["pass@1"]
        out.update({f"eval/{mode}_L{lv}": b["pass@1"] for lv, b in r["by_level"].items()})
        out[f"eval/{mode}_n"] = overall["n"]
        out[f"eval/{mode}_pass@1_lo"], out[f"eval/{mode}_pass@1_hi"] = overall["pass@1_ci95"]
    return out


# ----------------------------------------------------------------------------- test-time strategies


def evaluate_strategy(solve, policy, verifier, problems: list[Problem], budget: int | None = None,
                      progress: bool = False) -> dict:
    """``{"overall": {...}, "by_level": {level: {...}}}`` with n, accuracy, well_formed, mean_policy_tokens and
    mean_verifier_tokens (per problem). Correctness is the task's own check of the chosen completion."""
    from tqdm.auto import tqdm

    task = guard(policy.task)
    rows = []
    for p in tqdm(problems, desc="solve", unit="problem", disable=not progress):
        sol = solve(p, policy, verifier, budget)
        rows.append((p.level, task.score(p, sol.completion, policy.mode).correct, sol))

    def block(rs) -> dict:
        n = len(rs)
        mean = (lambda xs: float(sum(xs)) / n if n else 0.0)
        return with_intervals({"n": n, "accuracy": mean(c for _, c, _ in rs),
                               "well_formed": mean(s.well_formed for _, _, s in rs),
                               "mean_policy_tokens": mean(s.policy_tokens for _, _, s in rs),
                               "mean_verifier_tokens": mean(s.verifier_tokens for _, _, s in rs),
                               "max_policy_tokens": max((s.policy_tokens for _, _, s in rs), default=0)}, ["accuracy"])

    by_level: dict[int, list] = defaultdict(list)
    for r in rows:
        by_level[r[0]].append(r)
    return {"overall": block(rows), "by_level": {str(lv): block(rs) for lv, rs in sorted(by_level.items())}}


def evaluate_strategy_by_mode(engine, task, problems: list[Problem], solvers: dict, budget: int | None = None,
                              **sampling) -> dict:
    """``{mode: evaluate_strategy(...)}`` for ``solvers`` (mode -> (solve, verifier)): one policy per mode on one
    engine; ``sampling`` is the policy's temperature, max_tokens and seed."""
    from .search import Policy

    return {mode: evaluate_strategy(solve, Policy(engine, task, mode, **sampling), verifier, problems, budget)
            for mode, (solve, verifier) in solvers.items()}
