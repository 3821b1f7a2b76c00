"""From engine output to OpenAI's response shapes: the ``chat.completion`` object (and the trace rows of
its choices), and the ``chat.completion.chunk`` SSE events of a streamed request.

``message.reasoning`` (and ``message.reasoning_content``, the same text) is what precedes ``</think>``
(None for System-1), ``message.content`` the answer after it (both stripped as ``chat.split_output``
does); ``usage.completion_tokens_details.reasoning_tokens`` counts the tokens up to and including
``</think>`` (all of them if the think block never closed). A stream sends ``delta.reasoning`` (with
``delta.reasoning_content``) then ``delta.content`` chunks; each sequence's tokens are decoded whole and
diffed against what was sent, holding back text that could still become ``</think>`` or a stop string, so
the concatenated deltas equal the non-streaming message exactly.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

from fastapi.responses import StreamingResponse

from ..chat import Mode, THINK_CLOSE, TOOL_CALL_OPEN, held_back, split_output
from ..engine import Completion
from .prepare import Prepared
from .protocol import (AssistantMessage, ChatCompletion, Choice, assistant_message, chunk_event, error_body,
                       make_usage, reasoning_delta, sse, usage_event)
from .tool_calls import split_calls, tool_call_deltas


class SequenceStream:
    """Incremental decoding of one sequence: each ``feed`` returns the new (reasoning, content) text,
    always a prefix of what ``split_output`` gives for the finished completion. ``tools``: the answer may
    hold tool calls, so content stops at the first ``<tool_call>`` (the calls are sent once complete)."""

    def __init__(self, tok, eos_ids: set[int], mode: str, stops: list[str], tools: bool = False):
        self.tok, self.eos_ids, self.mode, self.stops, self.tools = tok, eos_ids, mode, stops, tools
        self.ids: list[int] = []
        self.sent_reasoning = 0
        self.sent_content = 0

    def _safe(self, text: str) -> tuple[str | None, str]:
        for s in self.stops:  # a complete stop string: the engine ends the sequence there
            if (i := text.find(s)) >= 0:
                text = text[:i]
        markers = list(self.stops) + ([TOOL_CALL_OPEN] if self.tools else [])
        if self.mode == Mode.SYSTEM2 and THINK_CLOSE not in text:
            markers.append(THINK_CLOSE)
        text = text[:len(text) - held_back(text, markers)]
        while text.endswith("\ufffd"):  # an incomplete multi-byte character
            text = text[:-1]
        if self.mode == Mode.SYSTEM1:
            return None, self._before_calls(text).strip()
        if THINK_CLOSE not in text:
            return text.strip("\n"), ""  # trailing newlines held: they may precede </think>
        reasoning, answer = text.split(THINK_CLOSE, 1)
        return reasoning.strip("\n"), self._before_calls(answer).strip()

    def _before_calls(self, answer: str) -> str:
        return answer.split(TOOL_CALL_OPEN, 1)[0] if self.tools else answer

    def feed(self, new_ids: list[int]) -> tuple[str, str]:
        self.ids.extend(new_ids)
        ids = [t for t in self.ids if t not in self.eos_ids]
        return self._diff(*self._safe(self.tok.decode(ids, skip_special_tokens=False)))

    def finish(self, completion: Completion, message: AssistantMessage | None = None) -> tuple[str, str]:
        """The rest of the text; ``message``: the final message when it is not ``split_output``'s (tool calls
        cut from its content)."""
        if message is not None:
            return self._diff(message.reasoning_content, message.content or "")
        return self._diff(*split_output(completion.text, self.mode))

    def _diff(self, reasoning: str | None, content: str) -> tuple[str, str]:
        r = (reasoning or "")[self.sent_reasoning:]
        c = content[self.sent_content:]
        self.sent_reasoning += len(r)
        self.sent_content += len(c)
        return r, c


def reasoning_token_count(tok, completion: Completion, mode: str) -> int:
    if mode == Mode.SYSTEM1:
        return 0
    ids = completion.token_ids
    close_id = tok.convert_tokens_to_ids(THINK_CLOSE) if THINK_CLOSE in tok.get_vocab() else None
    if close_id is not None and close_id in ids:
        return ids.index(close_id) + 1
    if THINK_CLOSE not in completion.text:
        return len(ids)
    lo, hi = 1, len(ids)  # </think> spans several tokens: the shortest prefix whose text contains it
    while lo < hi:
        mid = (lo + hi) // 2
        if THINK_CLOSE in tok.decode(ids[:mid], skip_special_tokens=False):
            hi = mid
        else:
            lo = mid + 1
    return lo


def build_result(tok, model_name: str, p: Prepared, completions: list[Completion], meta: dict, t0: float,
                 source: str, stream: bool, extra_tokens: int = 0,
                 route: dict | None = None) -> tuple[ChatCompletion, list[dict]]:
    """The chat.completion object and the trace rows of its choices (one per choice). ``extra_tokens``:
    tokens generated beyond the returned choices (router signals, samples that lost a vote), billed in
    usage as completion and reasoning tokens."""
    choices, records, completion_tokens, reasoning_tokens = [], [], 0, 0
    latency, finished = time.monotonic() - t0, time.time()
    for i, c in enumerate(completions):
        reasoning, content = split_output(c.text, p.mode)
        content, calls = split_calls(content) if p.tools is not None else (content, [])
        n_reasoning = reasoning_token_count(tok, c, p.mode)
        choices.append(Choice(index=i, finish_reason="tool_calls" if calls else c.finish_reason,
                              message=assistant_message(reasoning, content, calls or None)))
        completion_tokens += len(c.token_ids)
        reasoning_tokens += n_reasoning
        records.append({
            "id": meta["id"], "choice_index": i, "created": finished, "model": model_name, "source": source,
            "stream": int(stream), "messages": p.messages, "completion": c.text, "reasoning": reasoning,
            "answer": content or "", "reasoning_effort": p.effort, "mode": p.mode,
            "prompt_tokens": len(p.prompt_ids), "completion_tokens": len(c.token_ids),
            "reasoning_tokens": n_reasoning, "latency_s": latency, "finish_reason": c.finish_reason,
            "metadata": p.req.metadata})
    usage = make_usage(len(p.prompt_ids), completion_tokens + extra_tokens, reasoning_tokens + extra_tokens)
    return ChatCompletion(**meta, choices=choices, usage=usage, route=route), records


DONE = "data: [DONE]\n\n"  # the last event of every stream


class EventStream(StreamingResponse):
    """An SSE response that calls ``on_close`` once, when it is over: just before ``[DONE]`` goes out (a
    client that has read it may send its next request at once), or however else it ended."""

    on_close: Callable[[], None] | None = None

    def __init__(self, events: AsyncIterator[str], **kw):
        super().__init__(self._closing(events), **kw)

    async def _closing(self, events: AsyncIterator[str]) -> AsyncIterator[str]:
        try:
            async for event in events:
                if event == DONE:
                    self._close()
                yield event
        finally:  # closed early (the client left): so is the stream it wraps, which frees its engine slots
            await events.aclose()

    def _close(self) -> None:
        on_close, self.on_close = self.on_close, None
        if on_close is not None:
            on_close()

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._close()


def event_stream(events: AsyncIterator[str]) -> EventStream:
    """An SSE response over ``events`` (no caching or proxy buffering: each event goes out as it comes)."""
    return EventStream(events, media_type="text/event-stream",
                       headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def deltas(meta: dict, index: int, reasoning: str, content: str, usage_slot: bool):
    """The chunks of new reasoning and answer text of one choice (none for empty text)."""
    if reasoning:
        yield chunk_event(meta, index, reasoning_delta(reasoning), usage_slot=usage_slot)
    if content:
        yield chunk_event(meta, index, {"content": content}, usage_slot=usage_slot)


async def replay_events(result: ChatCompletion, meta: dict, include_usage: bool) -> AsyncIterator[str]:
    """The SSE events of a finished result (a vote, a route or built-in tools decide the answer only at the end):
    the same chunk sequence a live stream sends, reasoning then content per choice; with built-in tools each
    choice's finishing chunk carries what they ran for it (``tool_use``: that choice's entry)."""
    for c in result.choices:
        yield chunk_event(meta, c.index, {"role": "assistant", "content": ""}, usage_slot=include_usage)
    for c in result.choices:
        for event in deltas(meta, c.index, c.message.reasoning_content or "", c.message.content or "", include_usage):
            yield event
        for delta in tool_call_deltas(c.message.tool_calls or []):
            yield chunk_event(meta, c.index, delta, usage_slot=include_usage)
        ran = None if result.tool_use is None else {"tool_use": result.tool_use[c.index]}
        yield chunk_event(meta, c.index, {}, c.finish_reason, usage_slot=include_usage, fields=ran)
    if include_usage:
        yield usage_event(meta, result.usage.model_dump())
    yield DONE


async def sse_events(job, p: Prepared, meta: dict, include_usage: bool, tok, eos_ids: set[int],
                     finish: Callable[[list[Completion]], ChatCompletion],
                     cancel: Callable[[object], None]) -> AsyncIterator[str]:
    """The SSE events of a streamed request, from a scheduler job's updates. ``finish(completions)``
    builds (and records) the final result, whose usage the last chunk carries when asked;
    ``cancel(job)`` frees the engine slots when the stream ends early (client gone, error)."""
    req = p.req
    streams = [SequenceStream(tok, eos_ids, p.mode, req.stop_list, p.tools is not None) for _ in range(req.n)]
    done = False
    try:
        for i in range(req.n):
            yield chunk_event(meta, i, {"role": "assistant", "content": ""}, usage_slot=include_usage)
        while True:
            update = await job.updates.get()
            if update.error:
                yield sse(error_body(update.error, "server_error"))
                break
            for i, new in enumerate(update.new_tokens or []):
                if new:
                    for event in deltas(meta, i, *streams[i].feed(new), include_usage):
                        yield event
            if update.completions is not None:
                result = finish(update.completions)
                for i, (c, choice) in enumerate(zip(update.completions, result.choices)):
                    message = choice.message if p.tools is not None else None
                    for event in deltas(meta, i, *streams[i].finish(c, message), include_usage):
                        yield event
                    for delta in tool_call_deltas(choice.message.tool_calls or []):
                        yield chunk_event(meta, i, delta, usage_slot=include_usage)
                    yield chunk_event(meta, i, {}, choice.finish_reason, usage_slot=include_usage)
                if include_usage:
                    yield usage_event(meta, result.usage.model_dump())
                break
        done = True
        yield DONE
    finally:
        if not done:  # client disconnected (generator closed/cancelled) or error: free the slots
            cancel(job)
