"""``math``: a mathematical final answer (MATH and similar), compared by meaning with math-verify.

math-verify (``from math_verify import parse, verify``) reads LaTeX and plain expressions into sympy and
compares them: fractions (``\\frac{1}{2}`` == ``0.5`` == ``1/2``), equivalent expressions (``x+1`` == ``1+x``,
``2\\sqrt{2}`` == ``\\sqrt{8}``), intervals, tuples, sets, matrices. Here it is given one final answer at a
time: the stated answers of ``base`` (every ``\\boxed{}``, ``####``, ``the answer is``), each read as LaTeX;
with none stated, the whole answer text. Every stated answer must be right (math-verify itself would read
``\\boxed{3} or \\boxed{4}`` as the set {3, 4}).

:func:`verify_math` is the pure comparison, without a deadline. :func:`check` runs it in a child process
with a per-call deadline (``checkers.isolated`` says why math-verify's own timeouts do not do): an answer
that takes longer to compare scores "timeout", not correct, and the run goes on.
"""

from __future__ import annotations

import re

from .base import (ALTERNATIVE, MAX_ANSWER_CHARS, CheckResult, alternatives, boxed_contents, hash_answers,
                   stated_answers, wrong)
from .isolated import IsolatedChecker

DEFAULT_TIMEOUT = 5.0  # seconds per check; a normal answer takes milliseconds
_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")  # a word of two or more letters, not a LaTeX command
_runner = IsolatedChecker(f"{__name__}:verify_math")


def _parse(answer: str, prose: bool = False):
    """math-verify's reading of one answer: as LaTeX (in ``$...$`` unless it has its own delimiters), and as a
    plain expression when that fails; ``prose`` (a whole answer text in words): math-verify's own extraction from
    text first. No timeout here: :func:`check` puts a deadline around the whole check."""
    from math_verify import parse

    wrapped = answer if "$" in answer or "\\(" in answer or "\\[" in answer else f"${answer}$"
    first, second = (answer, wrapped) if prose else (wrapped, answer)
    return parse(first, parsing_timeout=None) or parse(second, parsing_timeout=None)


def gold_answer(gold: str) -> str:
    """The final answer of a gold text: its last ``\\boxed{}``, else what follows ``####``, else all of it."""
    boxed = boxed_contents(gold)
    if boxed:
        return boxed[-1]
    marked = hash_answers(gold)
    return marked[-1] if marked else gold.strip()


def verify_math(gold: str, answer_text: str | None) -> CheckResult:
    """Whether every final answer ``answer_text`` states equals ``gold`` mathematically (no deadline)."""
    from math_verify import verify

    target = _parse(gold_answer(gold))
    if not target:
        raise ValueError(f"math checker: math-verify cannot read the gold answer {gold!r:.80}")
    if not answer_text or not answer_text.strip():
        return wrong(None, "no answer")
    stated = stated_answers(answer_text)
    # nothing marked: the whole text; words in it ("so x = 5") are prose around the answer, not variables
    prose = not stated and _WORD.search(answer_text) is not None
    stated = stated or [answer_text.strip()]
    if max(len(s) for s in stated) > MAX_ANSWER_CHARS:
        return wrong(None, "answer too long")
    # "3 or 4" offers two answers, unless the gold itself is such a list ("1 \text{ or } 2")
    if not ALTERNATIVE.search(gold_answer(gold)):
        stated = [part for s in stated for part in alternatives(s)]
    extracted = stated[-1]
    verdicts = []
    for answer in stated:
        parsed = _parse(answer, prose)
        verdicts.append(bool(parsed) and verify(target, parsed, timeout_seconds=None))
        if prose and parsed:  # the answer math-verify found in the words, not the whole text (votes compare it)
            extracted = str(parsed[-1])
    if all(verdicts):
        return CheckResult(True, extracted)
    if len(set(stated)) > 1:
        return wrong(extracted, "hedged: states different final answers")
    return wrong(extracted, "wrong answer")


def check(gold: str, answer_text: str | None, timeout: float | None = DEFAULT_TIMEOUT) -> CheckResult:
    """:func:`verify_math` within ``timeout`` seconds (in a child process; None: in this process, no deadline).
    Past the deadline: not correct, reason "timeout"."""
    if timeout is None:
        return verify_math(gold, answer_text)
    if not answer_text or not answer_text.strip():
        return wrong(None, "no answer")
    return _runner(gold, answer_text, timeout)
