"""A fixed setting on a question: ``n`` choices of ``k`` samples each in one engine job, the budget shared as
``effort.budget`` says, think blocks forced closed at a thinking budget (``effort.forcing``), then one
sample per choice by vote (``effort.vote``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from ..chat import Mode
from .budget import sample_split
from .forcing import sample
from .question import Answered, Model, Question, generated
from .table import Setting
from .vote import vote


def model_for(models: Mapping[str, Model], name: str, mode: Mode) -> Model:
    """The model named ``name``; else, with two models, "slow" for System-2 and "fast" for System-1; else
    "main"; else the only one."""
    for key in (name, "slow" if mode == Mode.SYSTEM2 else "fast", "main"):
        if key in models:
            return models[key]
    if len(models) == 1:
        return next(iter(models.values()))
    raise ValueError(f"no model {name!r} to run it on; models given: {sorted(models)}")


def temperature_of(question: Question, setting: Setting) -> float:
    """The client's temperature; else the setting's; else the caller's default."""
    for t in (question.temperature, setting.temperature):
        if t is not None:
            return t
    return question.sampling.temperature


async def run_setting(question: Question, setting: Setting, models: Mapping[str, Model], route: dict | None = None,
                      budget: int | None = None) -> Answered:
    """``question``'s choices under one fixed setting. ``budget``: tokens per choice (default: the
    question's); ``route``: what to report as having run (the sampling details are added to it)."""
    budget = question.budget if budget is None else budget
    model = model_for(models, setting.model, setting.mode)
    ids = model.prompt(question, setting.mode)
    temperature = temperature_of(question, setting)
    k = 1 if temperature == 0 else setting.n  # greedy samples are identical: one is the vote
    k, per_sample = sample_split(k, budget, setting.max_tokens, model.room(ids))
    thinking = (question.thinking_budget or setting.thinking_budget) if setting.mode == Mode.SYSTEM2 else None
    sampling = dataclasses.replace(question.sampling, temperature=temperature, max_tokens=per_sample)
    samples, forced = await sample(model, ids, question.n * k, sampling, thinking)
    weights, checked = verifier_scores(question, setting, samples) if k > 1 else (None, 0)
    chosen = vote(samples, k, setting.mode, question.answer_of, weights)
    if route is not None:
        route = {**route, "samples_per_choice": k, "temperature": temperature, "tokens_per_sample": per_sample}
        if thinking:
            route.update(thinking_token_budget=thinking, forced_close=forced)
    return Answered(setting.mode, ids, chosen, generated(samples), len(samples), checked, route)


def verifier_scores(question: Question, setting: Setting, samples) -> tuple[list[float] | None, int]:
    """The setting's verifier's score of each sample and the tokens it read (None, 0: a plain vote)."""
    if not setting.verifier:
        return None, 0
    if setting.verifier not in question.verifiers:
        raise ValueError(f"setting {setting.name!r} needs verifier {setting.verifier!r}; verifiers given: "
                         f"{sorted(question.verifiers)}")
    return question.verifiers[setting.verifier]([c.text for c in samples])
