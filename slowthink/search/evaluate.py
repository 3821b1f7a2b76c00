"""Evaluating a strategy on held-out problems (accuracy and policy tokens per level), and turning a
question typed on the command line into a Problem."""

from __future__ import annotations

import re
from collections import defaultdict

from ..tasks.base import Problem


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


ARITH = re.compile(r"^\s*(\d+)\s*([+*])\s*(\d+)\s*$")


def problem_from_question(task, question: str) -> Problem:
    """A Problem for a question typed by a user. Arithmetic questions (``47*86``) are parsed, so the answer
    can be checked and the ground-truth oracle used; other tasks: give a sampled problem instead."""
    from ..tasks.arithmetic import OPS, Arithmetic

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
