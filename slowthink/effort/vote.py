"""Choosing one sample per choice: plain majority over the answers, or weighted by a verifier's scores."""

from __future__ import annotations

from collections.abc import Callable

from ..chat import THINK_CLOSE, Mode, split_output
from ..engine import Completion
from ..evaluate import majority
from ..search.weighted_majority import weighted_vote

AnswerOf = Callable[[str, Mode], "str | None"]


def voted_answer(text: str, mode: Mode) -> str | None:
    """What a sample votes for without a task to parse it: its answer text; nothing when the think block
    never closed or the answer is empty."""
    if mode == Mode.SYSTEM2 and THINK_CLOSE not in text:
        return None
    return split_output(text, mode)[1] or None


def pick(answers: list[str | None], weights: list[float | None] | None = None) -> int:
    """The sample a group answers with: the first that gave the most common answer, or (with weights) the
    highest-weighted one of the heaviest answer; the first sample when none answered."""
    if weights is None:
        winner = majority(answers)
        return answers.index(winner) if winner is not None else 0
    winner = weighted_vote(answers, weights)
    if winner is None:
        return 0
    return max((i for i, a in enumerate(answers) if a == winner), key=lambda i: (weights[i] or 0.0, -i))


def vote(samples: list[Completion], k: int, mode: Mode, answer_of: AnswerOf = voted_answer,
         weights: list[float] | None = None) -> list[Completion]:
    """Per consecutive group of ``k`` samples, the one :func:`pick` chooses. Only samples with an answer
    carry their weight."""
    out = []
    for g in range(0, len(samples), k):
        group = samples[g:g + k]
        answers = [answer_of(c.text, mode) for c in group]
        w = None if weights is None else [x if a is not None else None for x, a in zip(weights[g:g + k], answers)]
        out.append(group[pick(answers, w)])
    return out
