"""The chat format's vocabulary: the two modes, the think markers, and how a completion splits into reasoning
and answer. The one place these live; the tokenizer's chat template writes them, tasks score through them,
the server streams through them.

A System-2 completion is ``reasoning</think>\\n\\nanswer`` (the template already opened ``<think>``); a
System-1 completion is the bare answer (the template already wrote an empty think block).
"""

from __future__ import annotations

from collections.abc import Mapping
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


def strip_end_markers(text: str) -> str:
    """``text`` without the end-of-turn and padding markers (and white space) it ends with."""
    while True:
        stripped = text.rstrip()
        for marker in END_MARKERS:
            stripped = stripped.removesuffix(marker)
        if stripped == text:
            return text
        text = stripped


def split_completion(completion: str, mode: Mode) -> Split:
    """Separate reasoning from the answer, strictly (this decides whether an answer is scored at all).

    A System-2 completion must close its think block exactly once; text before ``</think>`` is the
    reasoning. A System-1 completion is all answer and must not open a think block. End-of-turn and padding
    markers are dropped from the end only: one inside the text stays, so ``1<|endoftext|>4`` is no answer, not 14.
    """
    text = strip_end_markers(completion)
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


# ----------------------------------------------------------------------------- tool calls (Qwen3/Hermes markup)
# A model calls a tool by writing ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, inside its think
# block or after it; what the tool returns is put back into the context as ``<tool_response>...</tool_response>``
# (text the model reads but never wrote: masked out of every loss, slowthink/env/).
# A tool with one required string parameter may also be called in plain text, the name on the first line and
# the argument after it (``<tool_call>calculator\n12*34\n</tool_call>``): Toolformer's short form, which a small
# model learns from a few examples because the argument is written exactly as it appears in the question.

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
TOOL_RESPONSE_OPEN = "<tool_response>"
TOOL_RESPONSE_CLOSE = "</tool_response>"


@dataclass(frozen=True)
class ToolCall:
    """One well-formed call: the tool's name and its arguments (a JSON object); ``text`` is the JSON as written."""

    name: str
    arguments: dict
    text: str


@dataclass(frozen=True)
class ToolCallError:
    """A ``<tool_call>`` block that could not be read as a call; ``message`` says why, for the model to read."""

    text: str
    message: str


def parse_tool_calls(text: str, parameters: Mapping[str, dict] | None = None) -> list[ToolCall | ToolCallError]:
    """Every ``<tool_call>...</tool_call>`` block of ``text``, in order, as a :class:`ToolCall` or, where the
    block is not ``{"name": str, "arguments": object}`` in JSON (or is never closed), a :class:`ToolCallError`.
    ``arguments`` may also be a JSON string holding an object (some models write it so); absent, it is ``{}``.
    ``parameters`` (each tool's JSON-schema parameters, by name) lets a block be a plain call, ``name`` then the
    argument on the next lines, for a tool whose only required parameter is a string; where ``parameters`` has
    one tool only, a block of one line is that tool's argument alone (a bare call, ``<tool_call>12*34</tool_call>``)."""
    import json

    out: list[ToolCall | ToolCallError] = []
    at = 0
    while (start := text.find(TOOL_CALL_OPEN, at)) >= 0:
        body_start = start + len(TOOL_CALL_OPEN)
        end = text.find(TOOL_CALL_CLOSE, body_start)
        if end < 0:
            out.append(ToolCallError(text[body_start:], f"{TOOL_CALL_OPEN} is never closed by {TOOL_CALL_CLOSE}"))
            break
        body = text[body_start:end].strip()
        plain = parameters is not None and not body.startswith("{")
        out.append(_read_plain_call(body, parameters) if plain else _read_call(body, json))
        at = end + len(TOOL_CALL_CLOSE)
    return out


def sole_string_parameter(schema: dict) -> str | None:
    """The name of the one parameter a plain call fills: the schema's only required one, when it is a string and
    no other is required; else None."""
    required = schema.get("required") or []
    if len(required) != 1:
        return None
    prop = (schema.get("properties") or {}).get(required[0], {})
    return required[0] if prop.get("type") == "string" else None


def _read_plain_call(body: str, parameters: Mapping[str, dict]) -> ToolCall | ToolCallError:
    name, _, argument = body.partition("\n")
    name, argument = name.strip(), argument.strip()
    if not argument and len(parameters) == 1 and name not in parameters:
        # a bare call, the argument alone on one line: with one tool there is no name to write
        name, argument = next(iter(parameters)), name
    if name not in parameters:
        known = ", ".join(sorted(parameters)) or "none"
        return ToolCallError(body, f"unknown tool {name!r} (a plain call is the tool's name, then its argument on "
                                   f"the next line); available tools: {known}")
    key = sole_string_parameter(parameters[name])
    if key is None:
        return ToolCallError(body, f"{name} is not called in plain text (that needs exactly one required string "
                                   'argument): write {"name": "...", "arguments": {...}} in JSON')
    return ToolCall(name, {key: argument}, body)


def _read_call(body: str, json) -> ToolCall | ToolCallError:
    try:
        call = json.loads(body)
    except json.JSONDecodeError as e:
        return ToolCallError(body, f"the tool call is not valid JSON ({e.msg} at position {e.pos}); write "
                                   '{"name": "...", "arguments": {...}}')
    if not isinstance(call, dict) or not isinstance(call.get("name"), str) or not call["name"]:
        return ToolCallError(body, 'the tool call must be a JSON object with a "name" string and an "arguments" '
                                   "object")
    args = call.get("arguments", {})
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            pass
    if args is None:
        args = {}
    if not isinstance(args, dict):
        return ToolCallError(body, f'"arguments" of {call["name"]!r} must be a JSON object, got '
                                   f"{type(args).__name__}")
    return ToolCall(call["name"], args, body)


def format_tool_response(text: str) -> str:
    """One tool response as it goes into the context (Qwen3's layout: the text on its own lines)."""
    return f"{TOOL_RESPONSE_OPEN}\n{text}\n{TOOL_RESPONSE_CLOSE}"


def strip_tool_markup(text: str) -> str:
    """``text`` without its tool-call and tool-response blocks: what a task scores once an episode is over (a
    call written after ``</think>`` must not be read as part of the answer)."""
    import re

    pattern = (f"{re.escape(TOOL_CALL_OPEN)}.*?(?:{re.escape(TOOL_CALL_CLOSE)}|$)|"
               f"{re.escape(TOOL_RESPONSE_OPEN)}.*?(?:{re.escape(TOOL_RESPONSE_CLOSE)}|$)")
    return re.sub(pattern, "", text, flags=re.S)
