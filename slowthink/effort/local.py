"""The effort service on in-process engines (``slowthink eval|solve --reasoning-effort``): a task's problem
in, a ``search.Solution`` out. Votes count the task's parsed answers; a single sample is greedy."""

from __future__ import annotations

import asyncio

from ..chat import split_completion
from ..engine import Engine, SamplingParams, derive_seed
from ..router.signals import prompt_hidden
from ..search.base import Solution, verifier_tokens
from .question import Answered, Check, Model, Question
from .service import run_effort


def engine_model(engine: Engine) -> Model:
    """An engine as the service's model (its calls block: one question runs at a time)."""

    async def generate(prompt_ids, n, sampling):
        return engine.generate([prompt_ids], n, sampling)[0]

    async def hidden(prompt_ids):
        return prompt_hidden(engine.model, [prompt_ids])[0]

    return Model(engine.tokenizer, generate, hidden)


def checker(verifier, problem) -> Check:
    """A verifier's outcome scores of completions of ``problem``, and the tokens it read for them."""

    def check(texts: list[str]) -> tuple[list[float], int]:
        before = verifier_tokens(verifier)
        scores = verifier.score_batch([(problem, t) for t in texts])
        return [float(s) for s in scores], verifier_tokens(verifier) - before

    return check


def task_question(problem, task, verifiers: dict | None = None, seed: int | None = 0,
                  budget: int | None = None) -> Question:
    def answer_of(text, mode):
        score = task.score(problem, text, mode)
        return score.answer if score.well_formed else None

    sampling = SamplingParams(temperature=0.0, seed=None if seed is None else derive_seed(seed, problem.key))
    return Question(messages=lambda mode: task.prompt(problem, mode), sampling=sampling, budget=budget,
                    answer_of=answer_of, verifiers=verifiers or {})


def solve_with_effort(problem, effort: str, engines: dict, task, router=None, seed: int | None = 0,
                      max_completion_tokens: int | None = None, tradeoff: float | None = None) -> Solution:
    """A ``search.Solution`` for one problem at a given effort. ``engines``: models by name ("main", or
    "fast" + "slow") and verifiers (e.g. the router's checker). ``max_completion_tokens``: every token
    generated for the problem. ``extra`` holds the effort, the mode that answered and, when more than one
    sample per choice ran or the router chose, ``route`` (what ran and why)."""
    models = {name: engine_model(e) for name, e in engines.items() if isinstance(e, Engine)}
    verifiers = {name: checker(v, problem) for name, v in engines.items() if not isinstance(v, Engine)}
    question = task_question(problem, task, verifiers, seed, max_completion_tokens)
    answered = asyncio.run(run_effort(question, effort, models, router, tradeoff))
    return solution(answered, problem, task, effort)


def solution(answered: Answered, problem, task, effort: str) -> Solution:
    [c] = answered.choices
    score = task.score(problem, c.text, answered.mode)
    extra = {"samples": answered.samples, "mode": answered.mode, "effort": effort}
    if answered.route is not None:
        extra["route"] = answered.route
    return Solution(answer=score.answer if score.well_formed else None,
                    reasoning=split_completion(c.text, answered.mode).reasoning, completion=c.text,
                    policy_tokens=answered.generated, verifier_tokens=answered.verifier_tokens,
                    well_formed=score.well_formed, extra=extra)


def evaluate_effort(problems, effort: str, engines: dict, task, router=None, seed: int | None = 0,
                    progress: bool = True) -> dict:
    """An effort's held-out accuracy, policy tokens and the settings it chose, by level and over ``"all"``
    (each block with ``n`` and a 95% interval on the accuracy)."""
    from collections import Counter

    from tqdm.auto import tqdm

    from ..evaluate import with_intervals

    rows = []
    for p in tqdm(problems, desc=f"effort {effort}", unit="problem", disable=not progress):
        sol = solve_with_effort(p, effort, engines, task, router, seed=seed)
        mode = sol.extra["mode"]  # auto may have answered in System-1
        rows.append((p.level, task.score(p, sol.completion, mode).correct, sol.policy_tokens,
                     sol.extra.get("route", {}).get("arm", effort)))
    by_level: dict = {}
    for lv in sorted({r[0] for r in rows}) + ["all"]:
        rs = [r for r in rows if lv == "all" or r[0] == lv]
        by_level[str(lv)] = with_intervals({"n": len(rs), "accuracy": sum(r[1] for r in rs) / len(rs),
                                            "mean_policy_tokens": sum(r[2] for r in rs) / len(rs),
                                            "chosen": dict(Counter(r[3] for r in rs))}, ["accuracy"])
    return by_level


def load_effort_engines(model_dir: str, router_dir: str | None, device: str, task):
    """(engines by name, router or None) for ``model_dir``: the router saved beside it (or ``router_dir``); a
    two-model router brings its own fast and slow models, a router with checker arms its checker."""
    from ..router import Router, find_router
    from ..router.train import load_engines

    router = Router.load(router_dir) if router_dir else find_router(model_dir)
    models = router.models if router is not None else {}
    checker = models.get("check", "")
    if "fast" in models:
        engines, _ = load_engines(models["slow"], models["fast"], device=device, checker=checker, task=task)
    else:
        engines, _ = load_engines(model_dir, device=device, checker=checker, task=task)
    return engines, router
