"""An example of your own task: sort the letters of a word.

A task is a *world simulator*: it makes problems at a chosen difficulty, says what a worked solution
and a direct answer look like, and checks any answer by itself. Copy this file, change the four
methods (and, if you like, the optional ``parse_question``), and use it anywhere a task name is accepted::

    from slowthink.tasks import get_task
    task = get_task("examples/my_task.py:SortLetters", max_level=8)

(on the command line: ``--task examples/my_task.py:SortLetters --task-args max_level=8``).
``get_task`` checks the class when it loads it (required methods, ``levels``, and that the reference
solution scores as correct) and tells you what to fix. Run ``python examples/my_task.py`` (with
slowthink installed, e.g. ``pip install -e .``) to see one problem, its worked solution and how
answers are scored.

The problem: level n gives n random lowercase letters (``Sort: dbca``); the answer is the letters
in alphabetical order (``abcd``). The worked solution is a selection sort, one step per line: each
line moves the smallest remaining letter to the end of the sorted part, written ``sorted|remaining``::

    a|dbc
    ab|dc
    abc|d
    abcd|
    </think>

    abcd

Every step depends only on the line above it, which is what makes a format easy to learn for a
small model (docs/custom-tasks.md, "Worked-solution format").
"""

from __future__ import annotations

import random
import string

from slowthink.tasks import BaseTask, Problem, Score
from slowthink.chat import Mode, split_completion
from slowthink.chat import check_mode

MAX_ANSWER_CHARS = 64


class SortLetters(BaseTask):
    # `name` and `levels` are required. Levels are the difficulty knob: here, the number of letters.
    name = "sort_letters"

    def __init__(self, max_level: int = 10):
        # Constructor arguments come from get_task(..., **kwargs) / `--task-args max_level=8`.
        # Check them early and say what is allowed.
        if not 2 <= int(max_level) <= 26:
            raise ValueError(f"sort_letters: max_level must be in 2..26, got {max_level!r}")
        self.levels = tuple(range(2, int(max_level) + 1))

    # -- generation: a seeded rng and a level in, a Problem out ---------------------------------------
    def sample(self, rng: random.Random, level: int) -> Problem:
        self.check_level(level)
        letters = "".join(rng.choice(string.ascii_lowercase) for _ in range(level))
        return self.make_problem(letters)

    def make_problem(self, letters: str) -> Problem:
        # `key` identifies the problem: it decides the held-out split (sample_split / heldout_set)
        # and deduplication, so it must determine the answer.
        return Problem(key=letters, level=len(letters), question=f"Sort: {letters}",
                       answer="".join(sorted(letters)), data={"letters": letters})

    # -- optional: a question typed by a user (`slowthink solve --question "Sort: dbca"`) ------------
    def parse_question(self, question: str) -> Problem:
        letters = question.removeprefix("Sort:").strip()
        if not (letters.isascii() and letters.isalpha() and letters.islower()):
            raise ValueError(f"sort_letters: expected lowercase letters, like 'Sort: dbca', got {question!r}")
        return self.make_problem(letters)

    # prompt(problem, mode) is inherited from BaseTask: one user message with `problem.question`.

    # -- the worked solution, one step per line (BaseTask turns it into references and step labels)
    def solution_lines(self, problem: Problem) -> list[str]:
        done, rest, lines = "", problem.data["letters"], []
        while rest:
            smallest = min(rest)
            done, rest = done + smallest, rest.replace(smallest, "", 1)
            lines.append(f"{done}|{rest}")
        return lines

    # -- verification: never trust the completion; anything malformed scores 0 without raising ------
    def score(self, problem: Problem, completion: str, mode: Mode = "system2") -> Score:
        # split_completion separates `reasoning\n</think>\n\nanswer` (system2) or a bare answer
        # (system1) and flags a broken format (missing or repeated </think>, think tags in system1).
        parts = split_completion(completion, check_mode(mode))
        text = parts.answer_text
        well_formed = (parts.well_formed and text is not None and 0 < len(text) <= MAX_ANSWER_CHARS
                       and text.isascii() and text.isalpha())
        if not well_formed:
            return Score(reward=0.0, answer=None, well_formed=False)
        correct = text == problem.answer
        return Score(reward=1.0 if correct else 0.0, answer=text, well_formed=True, correct=correct)

    # reference() and step_labels() come from BaseTask, built on solution_lines(): the worked solution
    # is the lines joined, and a step is correct when it and all before it match the unique derivation.


if __name__ == "__main__":
    task = SortLetters()
    problem = task.sample(random.Random(0), 5)
    print("user message:", repr(problem.question))
    for mode in ("system1", "system2"):
        ref = task.reference(problem, mode)
        print(f"\n{mode} reference completion:\n{ref.completion()}")
        print("score:", task.score(problem, ref.completion(), mode))
    print("\nwrong answer:", task.score(problem, "abc", "system1"))
    print("malformed (think tags in system1):", task.score(problem, "<think>x</think>abc", "system1"))
    reasoning = task.reference(problem, "system2").reasoning
    broken = reasoning.replace(reasoning.splitlines()[1], "zz|zz")
    print("step labels, reference:", task.step_labels(problem, reasoning))
    print("step labels, 2nd step wrong:", task.step_labels(problem, broken))
