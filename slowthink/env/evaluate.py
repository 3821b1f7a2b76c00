"""Held-out evaluation through episodes (a model with tools): greedy pass@1, and pass@k / majority@k from k
sampled episodes, each scored by its environment; the same ``ModeResult`` as the one-turn evaluation."""

from __future__ import annotations

from ..chat import Mode
from ..engine import SamplingParams
from ..tasks.base import Problem


def run_mode_episodes(episodes, problems: list[Problem], mode: Mode, k: int, temperature: float, max_tokens: int,
                      seed: int):
    """``episodes(problems, mode, n, sampling) -> list[list[Episode]]`` (``LocalRolloutWorker.episodes``).
    Greedy tokens are the model's own over all turns (tool responses are not counted)."""
    from ..evaluate import ModeResult, majority

    greedy = [eps[0] for eps in episodes(problems, mode, 1, SamplingParams(max_tokens=max_tokens, temperature=0.0))]
    correct = [bool(e.score and e.score.correct) for e in greedy]
    sample_correct: list[list[bool]] = [[] for _ in problems]
    maj = list(correct)
    if k > 1:
        sampled = episodes(problems, mode, k, SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=seed))
        maj = []
        for i, eps in enumerate(sampled):
            sample_correct[i] = [bool(e.score and e.score.correct) for e in eps]
            voted = majority([e.score.answer if e.score else None for e in eps])
            # the voted answer is right when a sample that gave it was scored correct (the task's own check)
            maj.append(voted is not None and any(e.score.answer == voted and e.score.correct for e in eps if e.score))
    return ModeResult(correct, [e.model_tokens for e in greedy], sample_correct, maj)
