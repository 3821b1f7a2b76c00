"""``choice``: a multiple-choice letter, A to E.

The gold is a letter, possibly written ``(B)``, ``B)``, ``B.`` or ``B) the text of the option``. A completion
gives its choice as a stated answer (``\\boxed{B}``, ``#### B``, ``the answer is (B)``, ``Answer: c``: see
``base``), or, with nothing stated, as the whole answer (``B``, ``(B)``, ``b.``) or at its start (``B) 42 because
...``, ``(B) 42``). A bare lower-case letter inside prose ("a cat") is not a choice. Two different letters
(``(B) or (C)``, ``Answer: B ... Answer: C``) are not correct; in a stated answer only its leading choice
counts (``the answer is B because A is wrong`` chooses B).
"""

from __future__ import annotations

import re

from .base import CheckResult, alternatives, stated_answers, wrong

# A choice at the start of a text: an upper-case letter standing alone ("B", "(B)", "B) 42", "B because",
# "option B"), or a lower-case one with brackets, a period or nothing after it ("(b)", "b.", "b"), since "a cat"
# is prose.
_LEADING = re.compile(r"\s*(?:(?:option|choice)\s+)?[(\[]?(?:([A-E])(?![A-Za-z])|([a-e])(?:[)\].:]|\s*$))")


def letter_of(text: str) -> str | None:
    """The letter a gold (or an unmarked answer) gives: alone or leading its option's text; else None."""
    m = _LEADING.match(text)
    return (m.group(1) or m.group(2)).upper() if m else None


def gold_letter(gold: str) -> str:
    letter = letter_of(gold)
    if letter is None:
        raise ValueError(f"choice checker: the gold answer {gold!r:.80} is not a letter A-E")
    return letter


def read_choices(answer_text: str) -> list[str]:
    """Every letter the completion chooses (more than one distinct letter: a hedge)."""
    stated = stated_answers(answer_text)
    if not stated:
        letter = letter_of(answer_text)
        return [letter] if letter else []
    letters = [letter_of(part) for s in stated for part in alternatives(s)]
    return [x for x in letters if x]


def check(gold: str, answer_text: str | None) -> CheckResult:
    """Whether the completion chooses the gold letter, and only it."""
    target = gold_letter(gold)
    if not answer_text or not answer_text.strip():
        return wrong(None, "no answer")
    chosen = read_choices(answer_text)
    if not chosen:
        return wrong(None, "no choice")
    if len(set(chosen)) > 1:
        return wrong(chosen[-1], "hedged: states different final answers")
    ok = chosen[0] == target
    return CheckResult(ok, chosen[0], "" if ok else "wrong choice")
