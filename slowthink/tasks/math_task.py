"""``math``: MATH competition problems (Hendrycks et al., 2021) as a dataset task.

Each record has ``problem``, ``solution`` (a worked solution whose final answer is in ``\\boxed{}``), ``level``
(``"Level 1"`` .. ``"Level 5"``; ``"Level ?"`` becomes level 6) and ``type``. The gold is the last ``\\boxed{}``
of the solution, or an ``answer`` field where a version of the data set has one (MATH-500: ``answer=answer``);
checker ``math`` (math-verify). The worked solution is the System-2 reference reasoning. ``path`` defaults to
``../shared/data/math`` beside the project, when that folder exists.
"""

from __future__ import annotations

from typing import Any

from .checkers.base import boxed_contents
from .checkers.math import DEFAULT_TIMEOUT
from .dataset import SHARED_DATA, DatasetTask

DEFAULT_PATH = SHARED_DATA / "math"


class MATH(DatasetTask):
    """MATH competition problems: problem -> boxed answer (checker math, math-verify), levels 1-5."""

    name = "math"

    def __init__(self, path: str | None = None, question: str = "problem", answer: str | None = None,
                 solution: str = "solution", level: str | None = "level", split: str | None = None,
                 checker: str = "math", checker_timeout: float = DEFAULT_TIMEOUT):
        if path is None and not DEFAULT_PATH.exists():
            raise ValueError(f"math: give path= (a MATH JSONL/Parquet file or folder); the default {DEFAULT_PATH} is "
                             "not there")
        # without an answer field the gold comes from the solution: the answer role reads the solution field
        super().__init__(path=str(path or DEFAULT_PATH), question=question, answer=answer or solution,
                         solution=solution, level=level, split=split, checker=checker, checker_timeout=checker_timeout)

    def row_answer(self, row: dict[str, Any], where: str) -> str:
        text = self._text(row, "answer", where)
        if self.fields["answer"] != self.fields["solution"]:
            return text
        boxed = boxed_contents(text)
        if not boxed:
            raise ValueError(f"math: field {self.fields['solution']!r} (solution=) has no \\boxed{{}} answer in "
                             f"{where}; map an answer field with answer=FIELD")
        return boxed[-1]
