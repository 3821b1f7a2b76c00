"""Doubling: double a number k times, a task whose single step is local and whose k steps compose.

Level k asks for ``x * 2**k``, written ``2^k*x`` with x zero-padded to ``width`` digits (levels 1..9);
the answer is the product zero-padded to the same width::

    2^4*00000347                      ->  00005552

The worked solution writes the first k-1 doublings one per line, each line ``2^1*`` + the value so far +
how many doublings are left, then a blank line; the answer is the last doubling::

    2^1*00000694 left3
    2^1*00001388 left2
    2^1*00002776 left1

    </think>

    00005552

A digit of ``2x`` depends on two neighbouring digits of ``x`` (``(2*d_i + [d_(i+1) >= 5]) % 10``), a rule
a small model learns from direct answers at level 1; a digit of ``x * 2**k`` depends on a run of
neighbours that grows with k. The layout makes every doubling of a worked solution look, to a model that
reads by relative position, like a level-1 direct answer: in our chat template 11 tokens separate a
System-1 question from its answer (``<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n``)
and 7 open a System-2 answer, so with ``2^1*`` (4 tokens) before a value, `` leftN`` and a newline after it,
and the blank line before ``</think>``, every digit of a line and of the answer sits ``width + 11`` tokens
after the digit it doubles, with a ``1`` where a question has its k (the first line alone reads the
question's k). A one-doubling problem is a level-1 question: its worked solution is empty, and its
System-2 completion the System-1 one. That makes this the task of the zero-start experiment
(``benchmarks/star_zero.py``): a model that answers level 1 directly has every skill a worked solution
needs but the format, which STaR has to find from at most ten worked examples. The derivation is unique,
so the default ``step_labels`` (every line up to here matches it) checks steps.
"""

from __future__ import annotations

import random
import re

from .base import BaseTask, Problem, Reference, Score
from ..chat import Mode, check_mode, split_completion


class Doubling(BaseTask):
    name = "doubling"

    def __init__(self, width: int = 8, max_doublings: int = 6):
        if not isinstance(max_doublings, int) or not 1 <= max_doublings <= 9:
            raise ValueError(f"doubling: max_doublings must be an integer in 1..9, got {max_doublings!r}")
        # the start has at least two digits, and x * 2**k must fit in width digits
        if not isinstance(width, int) or not 2 + len(str(2**max_doublings)) <= width <= 30:
            raise ValueError(f"doubling: width must be an integer in {2 + len(str(2**max_doublings))}..30 for "
                             f"max_doublings={max_doublings}, got {width!r}")
        self.width = width
        self.levels = tuple(range(1, max_doublings + 1))
        self.answer_pattern = re.compile(f"[0-9]{{{width}}}")

    def sample(self, rng: random.Random, level: int) -> Problem:
        k = self.check_level(level)
        largest = (10**self.width - 1) // 2 ** max(self.levels)  # the same start range at every level
        x = rng.randint(10, largest)
        question = f"2^{k}*{x:0{self.width}d}"
        return Problem(key=question, level=k, question=question, answer=f"{x * 2**k:0{self.width}d}",
                       data={"x": x})

    def parse_question(self, question: str) -> Problem:
        """A typed question, ``2^4*347`` or zero-padded as the task writes it (``2^4*00000347``)."""
        m = re.fullmatch(r"2\^([0-9])\*([0-9]+)", question.replace(" ", ""))
        if m is None:
            raise ValueError(f"not a doubling question like 2^4*347: {question!r}")
        k, x = self.check_level(int(m[1])), int(m[2])
        if len(str(x * 2**k)) > self.width:
            raise ValueError(f"doubling: {x} doubled {k} times has more than width={self.width} digits")
        written = f"2^{k}*{x:0{self.width}d}"
        return Problem(key=written, level=k, question=written, answer=f"{x * 2**k:0{self.width}d}", data={"x": x})

    def solution_lines(self, problem: Problem) -> list[str]:
        x, k = problem.data["x"], problem.level
        return [f"2^1*{x * 2**j:0{self.width}d} left{k - j}" for j in range(1, k)]

    def reference(self, problem: Problem, mode: Mode) -> Reference | None:
        """The default reference, with the blank line that puts the answer a line's length after the last
        line (see the module docstring); empty reasoning for one doubling."""
        ref = super().reference(problem, mode)
        if mode == Mode.SYSTEM1 or not ref.reasoning:
            return ref
        return Reference(answer=ref.answer, reasoning=ref.reasoning + "\n")

    def score(self, problem: Problem, completion: str, mode: Mode = Mode.SYSTEM2) -> Score:
        parts = split_completion(completion, check_mode(mode))
        answer = parts.answer_text
        well_formed = parts.well_formed and answer is not None and bool(self.answer_pattern.fullmatch(answer))
        correct = well_formed and answer == problem.answer
        return Score(reward=1.0 if correct else 0.0, answer=answer if well_formed else None,
                     well_formed=well_formed, correct=correct)
