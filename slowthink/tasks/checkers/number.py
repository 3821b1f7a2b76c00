"""``number``: a numeric final answer (GSM8K and other word problems), compared by value.

The gold is a number, or GSM8K's worked answer, whose final answer follows ``####`` (``... #### 42`` is 42).
In a completion a number may carry thousands separators (``1,000``), a currency sign (``$5``, ``-$5``), a
percent sign, a unit (``12 apples``, ``5 km``), a decimal part, a sign (``-3``, ``−3``), or be a plain
fraction (``3/4``). The final answer is the one marked (``\\boxed{}``, ``####``, ``the answer is``: see
``base``); where a marked answer is a calculation (``5 + 7 = 12``), what follows its last ``=``; with
nothing marked, the last number of the text. Values are compared exactly (``42.0`` == ``42``, ``0.5`` ==
``1/2``), as fractions, so a 5,000-digit number is compared, not rounded and not refused.
"""

from __future__ import annotations

import re
from decimal import Decimal
from fractions import Fraction

from .base import CheckResult, alternatives, hash_answers, stated_answers, wrong

# A number, not glued to a word or a decimal point before it (``km2``, ``v1.2`` are not numbers): an optional
# sign and currency sign, digits with or without thousands separators, an optional decimal part, an optional
# "/denominator". Groups: sign, integer part, decimal part, denominator.
MAX_DIGITS = 20_000  # a longer run of digits is noise, not a number (10**5000 is still read and compared)
NUMBER = re.compile(r"(?<![\w.])([-−]?)\s?\$?\s?(\d{1,3}(?:,\d{3})+|\d+|(?=\.\d))(?:\.(\d+))?(?:\s?/\s?(\d+))?")


def numbers(text: str) -> list[tuple[Fraction, str]]:
    """Every number in ``text``: its value and how it reads without separators (``"$1,000.50"`` ->
    ``(Fraction(2001, 2), "1000.50")``). A zero denominator is no number."""
    out = []
    for m in NUMBER.finditer(text):
        sign, whole, decimals, denominator = m.groups()
        digits = whole.replace(",", "") or "0"
        if len(digits) + len(decimals or "") + len(denominator or "") > MAX_DIGITS:
            continue
        # through Decimal: int("1" * 5000) is refused by Python's guard on long integer strings
        value = Fraction(Decimal(f"{digits}.{decimals or 0}"))
        if denominator is not None:
            if not denominator.strip("0"):
                continue
            value /= Fraction(Decimal(denominator))
        negative = bool(sign)
        shown = ("-" if negative else "") + digits + (f".{decimals}" if decimals else "") + (
            f"/{denominator}" if denominator is not None else "")
        out.append((-value if negative else value, shown))
    return out


def gold_value(gold: str) -> Fraction:
    """The value of a gold answer: a number, or the number after the last ``####``."""
    marked = hash_answers(gold)
    found = numbers(marked[-1] if marked else gold)
    if not found:
        raise ValueError(f"number checker: the gold answer {gold!r:.80} holds no number")
    return found[0][0] if marked else found[-1][0]


def _value_of_statement(answer: str) -> tuple[Fraction, str] | None:
    """The number one stated answer gives: after its last ``=``, its first number."""
    found = numbers(answer.rsplit("=", 1)[-1])
    return found[0] if found else None


def read_answers(text: str) -> list[tuple[Fraction, str]] | None:
    """The final answers ``text`` states, each a (value, shown) pair; None when it states none it can read.
    Alternatives inside one statement (``3 or 4``) count as separate answers."""
    stated = stated_answers(text)
    if not stated:  # nothing marked: the last number, and the alternatives of the line it is on
        lines = [line for line in text.splitlines() if numbers(line)]
        if not lines:
            return None
        stated, last_only = [lines[-1]], True
    else:
        last_only = False
    out = []
    for statement in stated:
        for part in alternatives(statement):
            found = numbers(part) if last_only else [v] if (v := _value_of_statement(part)) else []
            if found:
                out.append(found[-1] if last_only else found[0])
    return out or None


def check(gold: str, answer_text: str | None) -> CheckResult:
    """Whether ``answer_text`` states the gold number, and only it."""
    target = gold_value(gold)
    if not answer_text or not answer_text.strip():
        return wrong(None, "no answer")
    answers = read_answers(answer_text)
    if answers is None:
        return wrong(None, "no number")
    shown = answers[-1][1]
    if len({value for value, _ in answers}) > 1:
        return wrong(shown, "hedged: states different final answers")
    return CheckResult(answers[0][0] == target, shown, "" if answers[0][0] == target else "wrong value")
