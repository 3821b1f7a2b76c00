"""Evaluation on held-out problems: pass@1 (greedy), pass@k and majority@k, by level and mode; a test-time
strategy's accuracy and tokens by level; AUROC, the metric of the predictors and critics that judge answers."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
import re
from math import comb

import numpy as np

from .chat import MODES, Mode, check_mode
from .tasks.base import Problem
from .tokenizer import render_prompt


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


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
             max_tokens: int = 256, seed: int = 0) -> ModeResult:
    from .engine import SamplingParams

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
        return out

    by_level: dict[int, list[int]] = defaultdict(list)
    for i, p in enumerate(problems):
        by_level[p.level].append(i)
    return {"overall": block(list(range(len(problems)))),
            "by_level": {str(lv): block(ix) for lv, ix in sorted(by_level.items())}}


def evaluate(engine, task, tok, problems: list[Problem], modes: tuple[str, ...] = MODES, k: int = 1,
             temperature: float = 1.0, max_tokens: int = 256, seed: int = 0) -> dict:
    """``{mode: {"overall": {...}, "by_level": {level: {...}}}}``."""
    return {m: summarize(problems, run_mode(engine, task, tok, problems, check_mode(m), k, temperature,
                                            max_tokens, seed), k) for m in modes}


def _mean(xs) -> float:
    xs = list(xs)
    return float(sum(xs)) / len(xs) if xs else 0.0


def heldout_metrics(engine, task, tok, problems: list[Problem], modes: tuple[str, ...] = MODES,
                    max_tokens: int = 256) -> dict[str, float]:
    """Greedy pass@1 overall and per level, flattened for a metrics log: ``eval/{mode}_pass@1``,
    ``eval/{mode}_L{level}``. Trainers call this for their periodic held-out evaluation."""
    out: dict[str, float] = {}
    for mode, r in evaluate(engine, task, tok, problems, modes=modes, k=1, max_tokens=max_tokens).items():
        out[f"eval/{mode}_pass@1"] = r["overall"]["pass@1"]
        out.update({f"eval/{mode}_L{lv}": b["pass@1"] for lv, b in r["by_level"].items()})
    return out


# ----------------------------------------------------------------------------- test-time strategies


def evaluate_strategy(solve, policy, verifier, problems: list[Problem], budget: int | None = None,
                      progress: bool = False) -> dict:
    """``{"overall": {...}, "by_level": {level: {...}}}`` with n, accuracy, well_formed, mean_policy_tokens and
    mean_verifier_tokens (per problem). Correctness is the task's own check of the chosen completion."""
    from tqdm.auto import tqdm

    rows = []
    for p in tqdm(problems, desc="solve", unit="problem", disable=not progress):
        sol = solve(p, policy, verifier, budget)
        rows.append((p.level, policy.task.score(p, sol.completion, policy.mode).correct, sol))

    def block(rs) -> dict:
        n = len(rs)
        mean = (lambda xs: float(sum(xs)) / n if n else 0.0)
        return {"n": n, "accuracy": mean(c for _, c, _ in rs), "well_formed": mean(s.well_formed for _, _, s in rs),
                "mean_policy_tokens": mean(s.policy_tokens for _, _, s in rs),
                "mean_verifier_tokens": mean(s.verifier_tokens for _, _, s in rs),
                "max_policy_tokens": max((s.policy_tokens for _, _, s in rs), default=0)}

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


ARITH = re.compile(r"^\s*(\d+)\s*([+*])\s*(\d+)\s*$")


def problem_from_question(task, question: str) -> Problem:
    """A Problem for a question typed by a user. Arithmetic questions (``47*86``) are parsed, so the answer
    can be checked and the ground-truth oracle used; other tasks: give a sampled problem instead."""
    from .tasks.arithmetic import OPS, Arithmetic

    if isinstance(task, Arithmetic):
        m = ARITH.match(question)
        if not m:
            raise ValueError(f"not an arithmetic question like 47*86 or 12+5: {question!r}")
        a, sym, b = int(m.group(1)), m.group(2), int(m.group(3))
        op = {v: k for k, v in OPS.items()}[sym]
        result = a + b if op == "add" else a * b
        q = f"{a}{sym}{b}"
        return Problem(key=q, level=max(len(str(a)), len(str(b))), question=q, answer=str(result),
                       data={"a": a, "b": b, "op": op})
    raise ValueError(f"--question is only parsed for the arithmetic task; for {task.name!r} use --level/--seed "
                     "to solve a generated problem")
