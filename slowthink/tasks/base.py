"""The Task interface: a world simulator that makes problems and checks answers.

A task owns everything about its problems, side by side: how they are generated (seeded, at a chosen
difficulty level), how they are put to the model (the user message), what a worked solution and a
direct answer look like, how the final answer is pulled out of a completion, and how it is scored.
No human labels anywhere: the task is the verifier.

Completions are the text the model writes after the generation prompt. For System-2 that is
``reasoning</think>\\n\\nanswer`` (the template already opened ``<think>``); for System-1 it is the
bare answer (the template already wrote an empty think block).
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..chat import MODES, Mode, STEP_DELIMITER, Split, THINK_CLOSE, THINK_OPEN, check_mode, split_completion

@dataclass(frozen=True)
class Problem:
    """One generated problem. ``key`` identifies it (used for the held-out split and dedup)."""

    key: str
    level: int
    question: str  # the user message
    answer: str | None  # canonical final answer, as the verifier expects it; None only for a typed question whose
    # answer the task cannot work out (parse_question): such a problem is solved but not scored
    data: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Reference:
    """A reference assistant turn: optional chain of thought and the final answer."""

    answer: str
    reasoning: str | None = None

    def completion(self) -> str:
        """The text a model should generate after the generation prompt for this turn."""
        if self.reasoning is None:
            return self.answer
        return f"{self.reasoning}\n{THINK_CLOSE}\n\n{self.answer}"


@dataclass(frozen=True)
class Claim:
    """A fact one step of a worked solution relies on, as a question another solver can answer: the step
    claims ``question``'s answer is ``value`` (e.g. ``Claim("347*2", "694")``). A step-recomputing verifier
    (``slowthink.critics.recompute``) asks its own model every claim and compares."""

    question: str
    value: str


@dataclass(frozen=True)
class Score:
    reward: float  # 1.0 correct, 0.0 otherwise (RL rewards compose format/length terms on top)
    answer: str | None  # the extracted final answer, None when nothing could be extracted
    well_formed: bool  # the completion followed the output format
    correct: bool = False


def heldout_bucket(key: str, buckets: int = 10) -> int:
    """Stable bucket of a problem key; bucket 0 is held out from training, by construction."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") % buckets


# The one held-out set every command evaluates on by default: per level, the distinct bucket-0 problems in the
# order a generator seeded with this name and the level draws them. The seed depends on nothing else (not the
# task, not a run's seed), so a smaller set is a prefix of a larger one, and two commands that evaluate the same
# task, level and size evaluate the same problems.
HELDOUT_SET = "heldout-v1"
HELDOUT_PATIENCE = 200  # draws in a row without a new problem: the level has no more held-out problems


@runtime_checkable
class Task(Protocol):
    """What every task provides. See ``slowthink.tasks.arithmetic`` for a complete example."""

    name: str
    levels: tuple[int, ...]

    def sample(self, rng: random.Random, level: int) -> Problem: ...

    def prompt(self, problem: Problem, mode: Mode) -> list[dict[str, str]]: ...

    def reference(self, problem: Problem, mode: Mode) -> Reference | None: ...

    def score(self, problem: Problem, completion: str, mode: Mode = Mode.SYSTEM2) -> Score: ...


REQUIRED_METHODS = ("sample", "prompt", "reference", "score")
REQUIRED_ATTRIBUTES = ("name", "levels")
# Methods slowthink looks for and uses when a task has them (docs/custom-tasks.md), and what for.
OPTIONAL_METHODS = {
    "solution_lines": "the worked solution, one step per line: System-2 references for SFT and step labels",
    "steps": "how a reasoning text splits into steps",
    "step_labels": "the ground-truth correctness of each step",
    "step_claims": "the facts each step relies on, for a step-recomputing checker",
    "hinted_prompt": "STaR's prompt with the answer as a hint",
    "parse_question": "reading a question typed by a user (slowthink solve --question)",
}


def problem_from_question(task, question: str) -> Problem:
    """The Problem of a question typed by a user (``slowthink solve --question``), read by the task's optional
    ``parse_question(question) -> Problem``; a ValueError when the task has none or cannot read this question."""
    parse = getattr(task, "parse_question", None)
    if parse is None:
        raise ValueError(f"task {task.name!r} cannot read a typed question: it has no parse_question(question) "
                         "method (docs/custom-tasks.md); leave --question out to solve a generated problem of "
                         "--level, drawn from --seed")
    try:
        problem = parse(question.strip())
    except ValueError:
        raise  # the task's own message about what a question looks like
    except Exception as e:  # noqa: BLE001 - the task's own code on a user's text: report it, do not crash
        raise ValueError(f"task {task.name!r}: parse_question({question!r}) raised {type(e).__name__}: {e}") from e
    if not isinstance(problem, Problem):
        raise ValueError(f"task {task.name!r}: parse_question() must return a slowthink.tasks.Problem, got "
                         f"{type(problem).__name__}")
    return problem


class BaseTask:
    """Shared behaviour: user prompt, held-out split, steps. Subclasses implement the rest."""

    name: str = "task"
    levels: tuple[int, ...] = (1,)

    def prompt(self, problem: Problem, mode: Mode) -> list[dict[str, str]]:
        check_mode(mode)
        return [{"role": "user", "content": problem.question}]

    def steps(self, reasoning: str) -> list[str]:
        """Reasoning split into steps: one line per step in every built-in format."""
        return [s for s in reasoning.split(STEP_DELIMITER) if s.strip()]

    def reference(self, problem: Problem, mode: Mode) -> Reference | None:
        """The bare answer (System-1), or ``solution_lines`` as the worked solution (System-2).
        Tasks that define ``solution_lines(problem) -> list[str]`` get references for free."""
        check_mode(mode)
        if mode == Mode.SYSTEM1:
            return Reference(answer=problem.answer)
        lines = getattr(self, "solution_lines", None)
        return None if lines is None else Reference(answer=problem.answer, reasoning="\n".join(lines(problem)))

    def step_labels(self, problem: Problem, reasoning: str) -> list[bool] | None:
        """Ground-truth correctness of each step, where the task can compute it (else None).

        Default, for tasks whose correct derivation is unique (``solution_lines``): a step is correct
        when it and every step before it match that derivation; after a wrong step the right answer
        can no longer follow."""
        lines = getattr(self, "solution_lines", None)
        if lines is None:
            return None
        expected = lines(problem)
        labels, ok = [], True
        for i, line in enumerate(self.steps(reasoning)):
            ok = ok and i < len(expected) and line.strip() == expected[i].strip()
            labels.append(ok)
        return labels

    # -- data splits ----------------------------------------------------------------------------
    def sample_split(self, rng: random.Random, level: int, split: str, max_tries: int = 1000) -> Problem:
        """Sample a problem from the train split (held-out bucket excluded) or the held-out split."""
        if split not in ("train", "heldout"):
            raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
        for _ in range(max_tries):
            p = self.sample(rng, level)
            if (heldout_bucket(p.key) == 0) == (split == "heldout"):
                return p
        raise RuntimeError(f"{self.name}: no {split} problem found at level {level} in {max_tries} tries")

    def heldout_set(self, per_level: int, levels: tuple[int, ...] | None = None,
                    seed: int | None = None) -> list[Problem]:
        """The first ``per_level`` problems of each level's held-out sequence (fewer where a level has fewer):
        distinct, disjoint from anything ``sample_split('train')`` gives. Without ``seed``, the named set
        :data:`HELDOUT_SET`; a ``seed`` draws another sequence of the same split."""
        out: list[Problem] = []
        for level in levels or self.levels:
            out.extend(itertools.islice(self.heldout_stream(level, seed), per_level))
        return out

    def heldout_stream(self, level: int, seed: int | None = None) -> Iterator[Problem]:
        """The distinct held-out problems of ``level`` in a fixed order (see :meth:`heldout_set`); it ends once
        :data:`HELDOUT_PATIENCE` draws in a row bring nothing new."""
        rng = random.Random(f"{HELDOUT_SET}-{level}" if seed is None else f"{seed}-{self.name}-{level}")
        seen: set[str] = set()
        misses = 0
        while misses < HELDOUT_PATIENCE:
            p = self.sample_split(rng, level, "heldout")
            misses = misses + 1 if p.key in seen else 0
            if not misses:
                seen.add(p.key)
                yield p

    def check_level(self, level: int) -> int:
        if level not in self.levels:
            raise ValueError(f"{self.name}: level must be one of {self.levels}, got {level!r}")
        return level
