"""Deliberately broken plugin tasks, one defect each; tests check get_task's error messages."""

import random

from slowthink.tasks import BaseTask, Problem, Reference, Score


class _Base(BaseTask):
    name = "broken"
    levels = (1, 2)

    def sample(self, rng: random.Random, level: int) -> Problem:
        n = rng.randint(1, 9)
        return Problem(key=str(n), level=level, question=str(n), answer=str(n))

    def reference(self, problem, mode):
        return Reference(answer=problem.answer)

    def score(self, problem, completion, mode="system2"):
        ok = completion.strip() == problem.answer
        return Score(reward=float(ok), answer=completion, well_formed=True, correct=ok)


class NoScore:
    """Has no score() method and no levels attribute."""

    name = "no_score"

    def sample(self, rng, level):
        return None

    def prompt(self, problem, mode):
        return []

    def reference(self, problem, mode):
        return None


class ListLevels(_Base):
    levels = [1, 2]


class EmptyLevels(_Base):
    levels = ()


class StrLevels(_Base):
    levels = ("easy", "hard")


class SampleReturnsDict(_Base):
    def sample(self, rng, level):
        return {"question": "1+1", "answer": "2"}


class SampleRaises(_Base):
    def sample(self, rng, level):
        raise KeyError("vocabulary_file")


class ScoreReturnsFloat(_Base):
    def score(self, problem, completion, mode="system2"):
        return 1.0


class WrongReference(_Base):
    def reference(self, problem, mode):
        return Reference(answer=str(int(problem.answer) + 1))


class NeedsArgument(_Base):
    def __init__(self, path: str):
        self.path = path


def not_a_class():
    return None
