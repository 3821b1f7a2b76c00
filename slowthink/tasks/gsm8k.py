"""``gsm8k``: GSM8K grade-school math word problems (Cobbe et al., 2021) as a dataset task.

Each record has ``question`` and ``answer``; the answer is a worked solution whose last line is ``#### N``. The
gold is N (checker ``number``); the System-2 reference reasoning is the solution before ``####`` with its
calculator annotations (``<<48/2=24>>``) removed. ``path`` is a ``test.jsonl``/``train.jsonl`` file or the
folder holding both (then ``test`` is the held-out split); it defaults to ``../shared/data/gsm8k`` beside the
project, when that folder exists.
"""

from __future__ import annotations

import re
from typing import Any

from .checkers.math import DEFAULT_TIMEOUT
from .dataset import SHARED_DATA, DatasetTask

DEFAULT_PATH = SHARED_DATA / "gsm8k"
_CALCULATION = re.compile(r"<<[^<>]*>>")


def strip_calculations(text: str) -> str:
    """GSM8K's solution text without its calculator annotations: ``48/2 = <<48/2=24>>24`` -> ``48/2 = 24``."""
    return _CALCULATION.sub("", text)


class GSM8K(DatasetTask):
    """GSM8K word problems: question -> number (checker number); worked solutions from the answer field."""

    name = "gsm8k"

    def __init__(self, path: str | None = None, level: str | None = None, split: str | None = None,
                 checker: str = "number", checker_timeout: float = DEFAULT_TIMEOUT):
        if path is None and not DEFAULT_PATH.is_dir():
            raise ValueError(f"gsm8k: give path= (GSM8K's test.jsonl, train.jsonl or the folder of both); the default "
                             f"{DEFAULT_PATH} is not there")
        super().__init__(path=str(path or DEFAULT_PATH), question="question", answer="answer", solution="answer",
                         level=level, split=split, checker=checker, checker_timeout=checker_timeout)

    def row_answer(self, row: dict[str, Any], where: str) -> str:
        if "####" not in self._text(row, "answer", where):
            raise ValueError(f"gsm8k: field 'answer' has no '#### N' final answer in {where}")
        return super().row_answer(row, where)

    def row_solution(self, row: dict[str, Any], where: str) -> str | None:
        solution = super().row_solution(row, where)
        return None if solution is None else strip_calculations(solution)
