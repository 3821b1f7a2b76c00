"""Plugin tasks whose verifier crashes on some completions; tests check that nothing is lost when it does.

``CrashesMidRun`` passes the load-time check: that check scores completions of a lowest-level problem only, and
this task's level-1 check is sound. Its level-2 check reads the answer with a bare ``int()`` (``ValueError`` on
``7*94`` or on any non-number a model writes) and its step labels index the reasoning's second line
(``IndexError`` when there is none): crashes that turn up only once a model is running.
``CrashesOnGarbage`` reads every answer with a bare ``int()``: the load-time check catches it.
"""

import random

from slowthink.chat import split_completion
from slowthink.tasks import BaseTask, Problem, Reference, Score


class CrashesMidRun(BaseTask):
    name = "crashes_mid_run"
    levels = (1, 2)

    def sample(self, rng: random.Random, level: int) -> Problem:
        self.check_level(level)
        n = rng.randint(10 ** (level - 1), 10**level - 1)
        return Problem(key=str(n), level=level, question=f"{n}+1", answer=str(n + 1))

    def reference(self, problem, mode):
        if mode == "system1":
            return Reference(answer=problem.answer)
        return Reference(answer=problem.answer, reasoning=f"{problem.question}\n={problem.answer}")

    def score(self, problem, completion, mode="system2"):
        parts = split_completion(completion, mode)
        text = parts.answer_text or ""
        ok = parts.well_formed and (int(text) == int(problem.answer) if problem.level == 2 else text == problem.answer)
        return Score(reward=float(ok), answer=parts.answer_text, well_formed=parts.well_formed, correct=ok)

    def step_labels(self, problem, reasoning):
        lines = reasoning.split("\n")
        if problem.level == 2:
            return [lines[0] == problem.question, lines[1] == f"={problem.answer}"]
        return [line == expected for line, expected in zip(lines, [problem.question, f"={problem.answer}"])]


class CrashesOnGarbage(CrashesMidRun):
    name = "crashes_on_garbage"

    def score(self, problem, completion, mode="system2"):
        parts = split_completion(completion, mode)
        ok = parts.well_formed and bool(parts.answer_text) and int(parts.answer_text) == int(problem.answer)
        return Score(reward=float(ok), answer=parts.answer_text, well_formed=parts.well_formed, correct=ok)
