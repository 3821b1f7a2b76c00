"""The chat format's vocabulary: the two modes, the think markers, and how a completion splits into reasoning
and answer. The one place these live; the tokenizer's chat template writes them, tasks score through them,
the server streams through them.

A System-2 completion is ``reasoning</think>\\n\\nanswer`` (the template already opened ``<think>``); a
System-1 completion is the bare answer (the template already wrote an empty think block).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Mode(str, Enum):
    """How the model answers: SYSTEM1 directly, SYSTEM2 after a chain of thought. Equal to (and hashed as) its
    string value, so ``Mode.SYSTEM2 == "system2"`` and either works as a dict key or in JSON."""

    SYSTEM1 = "system1"
    SYSTEM2 = "system2"

    def __str__(self) -> str:
        return self.value


MODES: tuple[Mode, ...] = (Mode.SYSTEM1, Mode.SYSTEM2)

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
STEP_DELIMITER = "\n"
END_MARKERS = ("<|im_end|>", "<|endoftext|>")


def check_mode(mode: str) -> Mode:
    """``mode`` as a :class:`Mode`, or a ValueError naming the valid ones."""
    try:
        return Mode(mode)
    except ValueError:
        raise ValueError(f"mode must be one of {[m.value for m in MODES]}, got {mode!r}") from None


@dataclass(frozen=True)
class Split:
    """The parts of a completion: reasoning (None when there was no think block) and answer text."""

    reasoning: str | None
    answer_text: str | None
    well_formed: bool


def split_completion(completion: str, mode: Mode) -> Split:
    """Separate reasoning from the answer, strictly (this decides whether an answer is scored at all).

    A System-2 completion must close its think block exactly once; text before ``</think>`` is the
    reasoning. A System-1 completion is all answer and must not open a think block.
    """
    text = completion
    for marker in END_MARKERS:
        text = text.replace(marker, "")
    if mode == Mode.SYSTEM1:
        if THINK_OPEN in text or THINK_CLOSE in text:
            return Split(None, None, False)
        return Split(None, text.strip(), True)
    if text.count(THINK_CLOSE) != 1 or THINK_OPEN in text:
        return Split(None, None, False)
    reasoning, answer = text.split(THINK_CLOSE)
    return Split(reasoning.strip("\n"), answer.strip(), True)


def split_output(text: str, mode: Mode) -> tuple[str | None, str]:
    """(reasoning, answer) of a finished completion, leniently, for showing it: an unclosed think block is all
    reasoning and no answer; System-1 has no reasoning (None)."""
    if mode == Mode.SYSTEM1:
        return None, text.strip()
    if THINK_CLOSE not in text:
        return text.strip("\n"), ""
    reasoning, answer = text.split(THINK_CLOSE, 1)
    return reasoning.strip("\n"), answer.strip()


def held_back(text: str, markers: list[str] | tuple[str, ...]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of one of ``markers``: what a stream
    must hold back because more text could turn it into a marker."""
    hold = 0
    for m in markers:
        for k in range(min(len(m) - 1, len(text)), hold, -1):
            if text.endswith(m[:k]):
                hold = k
                break
    return hold


def split_think(content: str, final: bool = True) -> tuple[str | None, str]:
    """(reasoning or None, answer) of content that may start with a whole ``<think>…</think>`` block (how
    servers without a reasoning parser return it). ``final=False``: the part that is safe to send while more
    text may follow (every result is a prefix of the final one)."""
    s = content.lstrip()
    if not final and len(s) < len(THINK_OPEN) and THINK_OPEN.startswith(s):
        return None, ""  # could still become <think>: hold
    if not s.startswith(THINK_OPEN):
        return None, content
    inner = s[len(THINK_OPEN):]
    if THINK_CLOSE in inner:
        reasoning, answer = inner.split(THINK_CLOSE, 1)
        return reasoning.strip(), answer.strip()
    if not final:
        inner = inner[:len(inner) - held_back(inner, (THINK_CLOSE,))]
    return inner.strip(), ""
