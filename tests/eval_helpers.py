"""Shared by the trainer tests: a saved model's greedy accuracy computed here, from the engine and the task's own
score, to check the held-out numbers a trainer logs against the model it saved."""

from __future__ import annotations

from slowthink.engine import Engine, SamplingParams
from slowthink.models import load_model
from slowthink.tokenizer import render_prompt


def greedy_accuracy(model_dir, task, problems: list, mode: str, max_tokens: int) -> float:
    """Share of ``problems`` the model in ``model_dir`` answers correctly in ``mode`` at temperature 0."""
    model, tok = load_model(model_dir)
    prompts = [render_prompt(tok, task.prompt(p, mode), mode) for p in problems]
    out = Engine(model, tok).generate(prompts, sampling=SamplingParams(max_tokens=max_tokens, temperature=0))
    return sum(task.score(p, cs[0].text, mode).correct for p, cs in zip(problems, out)) / len(problems)
