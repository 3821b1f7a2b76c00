"""OpenAI ``tools`` / ``tool_choice`` on the chat template: the request side (the tool schemas in the prompt, tool
turns of the history) and the response side (the model's ``<tool_call>`` markup as ``message.tool_calls``).

The prompt follows the Qwen3 / Hermes templates, so a model tuned on them sees what it was trained on: a system
block listing the tools inside ``<tools></tools>`` (one JSON schema a line) and the ``<tool_call>`` format,
appended to the first system message (or a system message of its own); an assistant turn with ``tool_calls``
renders as its content followed by one ``<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>`` per call;
consecutive ``tool`` messages render as one user turn of ``<tool_response>\\n...\\n</tool_response>`` blocks.
This is done on the message list, before the chat template runs, so any template renders it the same way; the
system block's text is the environments' (``env.tools_system_prompt``), the one the trainers' tool episodes use.

``tool_choice``: ``none`` puts no tools in the prompt and parses no calls (tool turns of the history still
render); ``auto`` (the default with tools) lists every tool and returns the calls the model writes;
``required`` the same, but a completion without a call is returned as it is (``finish_reason: "stop"`` and no
``tool_calls``: nothing forces the model's text); a named function lists only that function. The model's
answer (the text after ``</think>``; all of it for System-1) is parsed by ``chat.parse_tool_calls``: each
well-formed call becomes an entry of ``message.tool_calls`` (``arguments`` a JSON string) and is cut from
``content``; a malformed one stays in ``content``. With at least one call ``finish_reason`` is ``"tool_calls"``.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

from .. import chat
from ..env.tool_env import with_tools_prompt
from .protocol import APIError, ChatCompletionRequest, ChatMessage


@dataclass(frozen=True)
class ToolUse:
    """The tools of one request as the prompt shows them and the answer is parsed for: ``schemas`` (OpenAI's
    ``{"type": "function", "function": {...}}``, the server's built-in tools first), ``choice`` ("auto",
    "required" or a function's name), ``names`` (the client's functions: their calls are returned) and
    ``builtin`` (the server's: their calls are run in the request, ``serve.episodes``)."""

    schemas: tuple[dict, ...]
    choice: str = "auto"
    names: frozenset[str] = field(default_factory=frozenset)
    builtin: frozenset[str] = field(default_factory=frozenset)


def tool_use(req: ChatCompletionRequest, builtin: list[dict] | tuple[dict, ...] = ()) -> ToolUse | None:
    """The request's tools after validation (400s naming the field), None when the prompt shows none.
    ``builtin``: schemas of the tools the server runs itself, offered unless ``tool_choice`` is ``none`` or
    names one of the client's functions."""
    tools = [t.model_dump(exclude_none=True) for t in req.tools or []]
    names = [t["function"]["name"] for t in tools]
    if len(set(names)) < len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise APIError(400, f"tools: the function name {dup!r} appears more than once.", param="tools")
    clash = sorted(set(names) & {s["function"]["name"] for s in builtin})
    if clash:
        raise APIError(400, f"tools: {clash[0]!r} is the name of a tool this server runs itself (--builtin-tools); "
                            "rename yours.", param="tools")
    choice = req.tool_choice
    if choice is not None and not tools and not (builtin and isinstance(choice, str)):  # none: no built-ins either
        raise APIError(400, "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
                            "specified.", param="tool_choice")
    if choice is not None and not isinstance(choice, str):
        if choice.function.name not in names:
            raise APIError(400, f"Invalid value for 'tool_choice': no function named {choice.function.name!r} in "
                                f"'tools' (functions: {', '.join(names)}).", param="tool_choice")
        tools, names, builtin = [t for t in tools if t["function"]["name"] == choice.function.name], \
            [choice.function.name], ()
        choice = choice.function.name
    if choice == "none" or not (tools or builtin):
        return None
    return ToolUse(tuple(builtin) + tuple(tools), choice or "auto", frozenset(names),
                   frozenset(s["function"]["name"] for s in builtin))


def call_markup(name: str, arguments: str | dict) -> str:
    """One call as the model writes it (``arguments``: a JSON string, inserted as is, or an object)."""
    args = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return f'{chat.TOOL_CALL_OPEN}\n{{"name": "{name}", "arguments": {args}}}\n{chat.TOOL_CALL_CLOSE}'


def _assistant(m: ChatMessage, out: dict) -> dict:
    calls = "\n".join(call_markup(c.function.name, c.function.arguments) for c in m.tool_calls or [])
    if calls:
        out["content"] = (out["content"] + "\n" + calls) if out["content"] else calls
    return out


def check_tool_turns(messages: list[ChatMessage]) -> None:
    """Every ``tool`` message answers a call of the assistant turn before it (other tool messages between);
    400 naming the message otherwise."""
    open_calls: set[str] | None = None  # ids of the last assistant turn's calls, while tool messages follow it
    for i, m in enumerate(messages):
        if m.role == "assistant":
            open_calls = {c.id for c in m.tool_calls or []}
        elif m.role == "tool":
            if not open_calls:
                raise APIError(400, f"messages[{i}]: a 'tool' message must follow an assistant message with "
                                    "'tool_calls' (and answer one of them).", param=f"messages.{i}")
            if m.tool_call_id not in open_calls:
                raise APIError(400, f"messages[{i}].tool_call_id {m.tool_call_id!r} is not the id of a call of the "
                                    f"assistant message before it ({', '.join(sorted(open_calls))}).",
                               param=f"messages.{i}.tool_call_id")
        else:
            open_calls = None
        if m.tool_calls and m.role != "assistant":
            raise APIError(400, f"messages[{i}]: only assistant messages have 'tool_calls'.",
                           param=f"messages.{i}.tool_calls")


def template_messages(messages: list[ChatMessage], use: ToolUse | None) -> list[dict]:
    """The messages as the chat template renders them: tool turns as the Qwen3 template writes them, and
    ``use``'s tools in the system prompt."""
    check_tool_turns(messages)
    out: list[dict] = []
    for m in messages:
        d = m.to_template()
        if m.role == "tool":
            block = chat.format_tool_response(d["content"])
            if out and out[-1].get("tool_responses"):  # consecutive tool messages share one user turn
                out[-1]["content"] += "\n" + block
                continue
            out.append({"role": "user", "content": block, "tool_responses": True})
            continue
        out.append(_assistant(m, d) if m.role == "assistant" else d)
    for d in out:
        d.pop("tool_responses", None)
    return out if use is None else with_tools_prompt(out, list(use.schemas))


# -- the response side ---------------------------------------------------------------------------------------
def call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def openai_call(name: str, arguments) -> dict:
    """One entry of ``message.tool_calls``: ``arguments`` as a JSON string (OpenAI's shape)."""
    args = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return {"id": call_id(), "type": "function", "function": {"name": name, "arguments": args}}


def call_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each ``<tool_call>...</tool_call>`` block of ``text``, in the order
    ``chat.parse_tool_calls`` reads them (an unclosed last block runs to the end)."""
    spans, at = [], 0
    while (start := text.find(chat.TOOL_CALL_OPEN, at)) >= 0:
        end = text.find(chat.TOOL_CALL_CLOSE, start + len(chat.TOOL_CALL_OPEN))
        at = len(text) if end < 0 else end + len(chat.TOOL_CALL_CLOSE)
        spans.append((start, at))
    return spans


def split_calls(answer: str, only: frozenset[str] | None = None) -> tuple[str | None, list[dict]]:
    """(content, tool_calls) of an answer: the well-formed calls (``chat.parse_tool_calls``; of the functions
    ``only`` names, when given) cut out of the text, each in OpenAI's shape; content None when nothing but
    calls was written. A malformed call stays in the content, so the client sees what the model wrote."""
    calls, kept, pos = [], [], 0
    for parsed, (start, end) in zip(chat.parse_tool_calls(answer), call_spans(answer)):
        if isinstance(parsed, chat.ToolCall) and (only is None or parsed.name in only):
            kept.append(answer[pos:start])
            pos = end
            calls.append(openai_call(parsed.name, parsed.arguments))
    if not calls:
        return answer, []
    return ("".join(kept) + answer[pos:]).strip() or None, calls


def tool_call_deltas(calls: list[dict]) -> list[dict]:
    """The stream deltas of a message's calls: per call, its index, id and name (empty arguments), then its
    arguments (the ``openai`` client's stream accumulator joins them)."""
    out = []
    for i, c in enumerate(calls):
        out.append({"tool_calls": [{"index": i, "id": c["id"], "type": "function",
                                    "function": {"name": c["function"]["name"], "arguments": ""}}]})
        out.append({"tool_calls": [{"index": i, "function": {"arguments": c["function"]["arguments"]}}]})
    return out
