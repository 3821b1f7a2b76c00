"""Answer checkers: pure functions ``check(gold, answer_text) -> CheckResult`` that read a completion's final
answer and compare it with a data set's gold answer, by name in :data:`CHECKERS`.

- ``number``: numeric answers (GSM8K's ``#### 42``; commas, ``$``, ``%``, units, decimals, signs, fractions);
- ``math``: mathematical answers compared by math-verify (fractions, expressions, intervals, tuples, sets),
  in a child process with a per-call deadline;
- ``exact``: the text, white space and case normalised; ``exact_strict``: character for character;
- ``choice``: a multiple-choice letter A-E.

Every checker reads ``\\boxed{}``, ``####`` and ``the answer is`` the same way (``base``), and a completion that
states two different final answers is not correct. docs/data.md has the details.
"""

from __future__ import annotations

from collections.abc import Callable

from . import choice, exact, number
from . import math as math_checker
from .base import CheckResult

Checker = Callable[[str, str], CheckResult]

CHECKERS: dict[str, Checker] = {
    "number": number.check,
    "math": math_checker.check,
    "exact": exact.check,
    "exact_strict": exact.check_strict,
    "choice": choice.check,
}


def get_checker(name: str) -> Checker:
    """The checker named ``name``, or a ValueError listing the names."""
    try:
        return CHECKERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"checker must be one of {', '.join(CHECKERS)}, got {name!r}") from None


__all__ = ["CHECKERS", "CheckResult", "Checker", "get_checker"]
