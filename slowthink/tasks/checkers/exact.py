"""``exact``: the answer text equals the gold text, after light normalisation.

``exact`` collapses white space, ignores case and a final period, and reads a stated answer (``\\boxed{}``,
``####``, ``the answer is``: see ``base``) where there is one, else the whole answer text. ``exact_strict``
compares the stripped texts character for character. Two different stated answers are not correct.
"""

from __future__ import annotations

import re

from .base import MAX_ANSWER_CHARS, CheckResult, hash_answers, stated_answers, wrong


def normalise(text: str) -> str:
    """White space collapsed, case folded, a final period and surrounding quotes dropped."""
    text = re.sub(r"\s+", " ", text).strip().casefold()
    return text.removesuffix(".").strip().strip("\"'`").strip()


def gold_text(gold: str) -> str:
    """The gold's final answer: what follows its last ``####``, else all of it."""
    marked = hash_answers(gold)
    return marked[-1] if marked else gold.strip()


def check(gold: str, answer_text: str | None, normalised: bool = True) -> CheckResult:
    """Whether the answer text (its stated answers, all of them) equals the gold's."""
    if not answer_text or not answer_text.strip():
        return wrong(None, "no answer")
    stated = stated_answers(answer_text) if normalised else []
    stated = stated or [answer_text.strip()]
    if max(len(s) for s in stated) > MAX_ANSWER_CHARS:
        return wrong(None, "answer too long")
    form = normalise if normalised else str.strip
    seen = {form(s) for s in stated}
    if len(seen) > 1:
        return wrong(stated[-1], "hedged: states different final answers")
    ok = seen == {form(gold_text(gold))}
    return CheckResult(ok, stated[-1], "" if ok else "wrong answer")


def check_strict(gold: str, answer_text: str | None) -> CheckResult:
    """The stripped answer text equals the stripped gold, character for character."""
    return check(gold, answer_text, normalised=False)
