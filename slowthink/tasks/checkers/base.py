"""What every checker shares: its result, and where a completion states its final answer.

A checker is a pure function ``check(gold, answer_text) -> CheckResult``: ``gold`` is the data set's answer,
``answer_text`` the part of a completion that holds the answer (System-2: after ``</think>``; System-1: all of
it). Final answers are looked for in this order, the first kind found wins:

1. ``\\boxed{...}`` (and ``\\fbox{...}``), every one;
2. ``#### ...`` lines (GSM8K's marker), every one;
3. statements such as ``the answer is ...``, ``Answer: ...``, ``final answer = ...``, every one;
4. nothing marked: the checker's own fallback (the last number, the whole text, ...).

The common rule against hedging: every final answer a completion states must be right. Two different ones
(``\\boxed{3} ... \\boxed{4}``, ``the answer is 3 or 4``) are not correct, whichever of them is the gold.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_ANSWER_CHARS = 1000  # a stated final answer longer than this is not read (spam, not an answer)


@dataclass(frozen=True)
class CheckResult:
    """A checker's verdict: ``correct``; ``extracted``, the final answer as read (None when none was found);
    ``reason``, why it is not correct ("no answer", "hedged", "timeout", ...; empty when correct)."""

    correct: bool
    extracted: str | None
    reason: str = ""


def wrong(extracted: str | None, reason: str) -> CheckResult:
    return CheckResult(False, extracted, reason)


_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
# "The answer is 42.", "Final answer: B", "answer = 1/2"; up to the end of the line or of the sentence (a period
# followed by white space or the end: "3.5" keeps its decimal point). The statement is stripped afterwards: white
# space matched by the pattern after the lazy group would make a long run of spaces cost quadratic time.
_STATEMENT = re.compile(r"\banswer\s*(?:is\s*:?|:|=)\s*(.+?)(?:\.(?=\s|$)|\n|$)", re.IGNORECASE)
# Words that join alternatives inside one stated answer: "3 or 4", "either 3 or 4", "3 \text{ or } 4".
ALTERNATIVE = re.compile(r"\\text\s*\{\s*or\s*\}|\bor\b", re.IGNORECASE)


def boxed_contents(text: str) -> list[str]:
    """The contents of every ``\\boxed{...}`` / ``\\fbox{...}``, braces balanced; an unclosed one is ignored."""
    out, pos = [], 0
    while (m := _BOXED.search(text, pos)) is not None:
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth:
            break
        out.append(text[m.end():i - 1].strip())
        pos = i
    return out


def hash_answers(text: str) -> list[str]:
    """The rest of the line after every ``####`` (GSM8K writes its final answer as ``#### 42``)."""
    return [line.split("####", 1)[1].strip() for line in text.splitlines() if "####" in line]


def answer_statements(text: str) -> list[str]:
    """What follows every ``answer is`` / ``answer:`` / ``answer =``, to the end of its sentence or line."""
    return [m.group(1).strip() for m in _STATEMENT.finditer(text)]


def stated_answers(text: str) -> list[str]:
    """Every final answer ``text`` marks, of the first kind it has (module docstring); [] when none is marked."""
    for find in (boxed_contents, hash_answers, answer_statements):
        found = [a for a in find(text) if a]
        if found:
            return found
    return []


def alternatives(answer: str) -> list[str]:
    """The alternatives one stated answer offers: ``"3 or 4"`` -> ``["3", "4"]``, ``"42"`` -> ``["42"]``."""
    parts = [p.strip(" \t\n,;$") for p in ALTERNATIVE.split(answer)]
    parts = [re.sub(r"^either\b\s*", "", p, flags=re.IGNORECASE) for p in parts]
    return [p for p in parts if p]
