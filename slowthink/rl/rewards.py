"""Rewards for RL on verifiable tasks: correctness from the task's verifier, plus optional shaping.

A reward is a sum of small terms, each a pure function:

- ``correctness(score)``: the task's own reward (``task.score(...).reward``; 1.0 when correct for the
  built-in tasks). The task decides what counts as an answer: a completion that states several
  different answers ("12 13") is neither well formed nor correct.
- ``verified_steps(task, problem, text, mode)``: for ``RewardFn(verify_steps=True)``, whether every step of
  the worked solution is right by the task's own ground truth (``task.step_labels``). A correct final
  answer reached through wrong steps then earns no correctness: with outcome reward alone, about one in
  five correct-answer samples of a half-trained arithmetic model had a wrong step (dev/LOG.md), and RL
  reinforces those steps too. A program still checks everything; no learned critic is involved.
- ``format_reward(score, bonus)``: ``bonus`` when the completion followed the output format (closed its
  think block once and ended with one parsable answer), else 0.
- ``soft_overlong_penalty(length, max_tokens, buffer)``: DAPO's soft overlong punishment
  (arXiv:2503.14476, eq. 13): 0 up to ``max_tokens - buffer`` tokens, then falling linearly to
  ``-penalty`` at ``max_tokens``. A completion *cut* at ``max_tokens`` (finish_reason "length") can also
  be dropped from the loss altogether ("overlong filtering"); that is the trainer's job (``is_truncated``).

``RewardFn`` adds the terms it is configured with and returns a ``Reward`` that keeps each term, so a
trainer can log them separately. The task it is given is guarded (``tasks.guard``; the rollout worker guards
its task): a completion on which ``score`` or ``step_labels`` crashed gets correctness 0, no format bonus
and, with ``verify_steps``, no verified step.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..chat import Mode, split_completion
from ..tasks.base import Problem, Score


@dataclass(frozen=True)
class Reward:
    total: float  # what the advantages are computed from
    score: Score  # the task's verdict (correct, well_formed, extracted answer)
    correctness: float
    format: float = 0.0
    length: float = 0.0  # <= 0
    steps_ok: bool | None = None  # every step right (only checked with verify_steps, for correct answers)


def correctness(score: Score) -> float:
    """The task's reward for the completion (1.0 correct, 0.0 otherwise for the built-in tasks)."""
    return float(score.reward)


def verified_steps(task, problem: Problem, text: str, mode: Mode) -> bool:
    """True when every step of the completion's reasoning is right by ``task.step_labels``
    (System-1 completions have no steps: True)."""
    if mode == Mode.SYSTEM1:
        return True
    reasoning = split_completion(text, mode).reasoning
    labels = task.step_labels(problem, reasoning or "")
    if labels is None:
        raise ValueError(f"task {task.name!r} cannot label steps (no step_labels / solution_lines); "
                         "turn verify_steps off")
    return bool(labels) and all(labels)


def format_reward(score: Score, bonus: float) -> float:
    """``bonus`` if the completion followed the output format, else 0."""
    return bonus if score.well_formed else 0.0


def soft_overlong_penalty(length: int, max_tokens: int, buffer: int, penalty: float = 1.0) -> float:
    """DAPO soft overlong punishment: 0 for ``length <= max_tokens - buffer``, then linear down to
    ``-penalty`` at ``length == max_tokens`` (and ``-penalty`` beyond). ``buffer == 0`` turns it off."""
    if buffer <= 0:
        return 0.0
    free = max_tokens - buffer
    if length <= free:
        return 0.0
    return -penalty * min(1.0, (length - free) / buffer)


def is_truncated(finish_reason: str) -> bool:
    """True for a completion cut by the token limit (the candidates for overlong filtering)."""
    return finish_reason == "length"


@dataclass(frozen=True)
class RewardFn:
    """correctness + format bonus + overlong penalty, configured once per run.

    ``max_tokens`` is the generation limit the penalty is measured against (needed only when
    ``overlong_buffer > 0``).
    """

    format_bonus: float = 0.0
    overlong_buffer: int = 0
    overlong_penalty: float = 1.0
    max_tokens: int = 0
    verify_steps: bool = False

    def __post_init__(self):
        if self.overlong_buffer < 0:
            raise ValueError(f"overlong_buffer must be >= 0, got {self.overlong_buffer}")
        if self.overlong_buffer and not 0 < self.overlong_buffer <= self.max_tokens:
            raise ValueError(f"overlong_buffer ({self.overlong_buffer}) must be in 1..max_tokens "
                             f"({self.max_tokens}) when the length penalty is on")

    def __call__(self, task, problem: Problem, text: str, num_tokens: int, mode: Mode = Mode.SYSTEM2) -> Reward:
        score = task.score(problem, text, mode)
        c = correctness(score)
        steps_ok = None
        if self.verify_steps and score.correct:
            steps_ok = verified_steps(task, problem, text, mode)
            c = c if steps_ok else 0.0
        f = format_reward(score, self.format_bonus)
        ln = soft_overlong_penalty(num_tokens, self.max_tokens, self.overlong_buffer, self.overlong_penalty)
        return Reward(total=c + f + ln, score=score, correctness=c, format=f, length=ln, steps_ok=steps_ok)
