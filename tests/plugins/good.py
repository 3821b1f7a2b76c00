"""A minimal valid plugin task: add one to a number. Loaded by tests through get_task."""

import random

from slowthink.tasks import BaseTask, Problem, Reference, Score
from slowthink.chat import split_completion


class GoodTask(BaseTask):
    name = "add_one"
    levels = (1, 2, 3)

    def __init__(self, offset: int = 1):
        self.offset = offset

    def sample(self, rng: random.Random, level: int) -> Problem:
        self.check_level(level)
        n = rng.randint(10 ** (level - 1), 10**level - 1)
        return Problem(key=str(n), level=level, question=f"{n}+{self.offset}", answer=str(n + self.offset))

    def reference(self, problem, mode):
        if mode == "system1":
            return Reference(answer=problem.answer)
        return Reference(answer=problem.answer, reasoning=f"{problem.question}={problem.answer}")

    def score(self, problem, completion, mode="system2"):
        parts = split_completion(completion, mode)
        ok = parts.well_formed and parts.answer_text == problem.answer
        return Score(reward=float(ok), answer=parts.answer_text, well_formed=parts.well_formed, correct=ok)


class Helper:
    """Not a task: makes the file define two classes."""
