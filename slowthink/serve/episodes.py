"""Built-in tools run by the server inside one request (``slowthink serve --builtin-tools calculator,python,memory``).

Each choice is one episode of the environments' runner (``slowthink.env.EpisodeRunner``) over the scheduler's
``generate``: the model's turn stops at ``</tool_call>``, the server runs the call with the built-in tool, appends
the ``<tool_response>`` and the model goes on, until it answers, calls one of the client's own functions (the
choice then ends with that call in ``message.tool_calls``, for the client to run), or a limit ends it
(``max_tool_calls``, ``max_tool_turns``, ``max_tool_tokens`` of ``serve.limits``; ``finish_reason: "length"``).
The calls and their responses are shown in the final message's reasoning, where the model wrote them; the
content is what the model wrote after them. ``usage.completion_tokens`` counts every token the model
generated, over all turns; tool responses are context, not generated (``tool_use`` in the response says what
ran, per choice).

A job's episodes persist after each tool turn (the turn's token ids, log-probs, text, its calls and the
response text) through ``on_turn``; started again after a crash, a job replays what was persisted -- the same
completions for the model's turns and the same responses for the tools, nothing in them generated or run
again -- and continues from the first turn that was not finished (that turn runs again, its tool too if it
ran before the kill but was not committed: tools run at least once). Per-episode tool state is rebuilt on
replay: the episode's tools start fresh and the committed calls that built state (the memory tool's writes of
``episode`` notes, :func:`rebuilds_state`) run again into them, in order, so a later turn reads the notes; no
other call runs again (``python`` and a user's functions may have side effects; the long-term memory store
persists by itself).

The trace of a choice keeps the episode's structure: ``completion_ids`` and ``completion_mask`` (1 on the
model's tokens, 0 on the tool responses'), so training on exported traces never learns the tool responses.

Every choice runs one episode: efforts that vote (``high``, ``xhigh``) or route (``auto``) run a single
System-2 episode per choice with built-in tools, and ``thinking_token_budget`` is not applied.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import Callable

from ..chat import THINK_CLOSE, TOOL_RESPONSE_CLOSE, Mode, ToolCall, parse_tool_calls
from ..effort.question import Generate
from ..engine import Completion, derive_seed
from ..env.base import Limits as EpisodeLimits
from ..env.base import StepResult
from ..env.episode import Episode, ToolCallRecord
from ..env.runner import EpisodeRunner
from ..env.tool_env import ToolEnv, ends_in_call
from ..tasks.base import Problem
from .prepare import Prepared
from .protocol import ChatCompletion, Choice, assistant_message, make_usage
from .responses import reasoning_token_count
from .tool_calls import split_calls

log = logging.getLogger(__name__)


def runs_episodes(p: Prepared) -> bool:
    """Whether the request runs the server's built-in tools (one episode per choice)."""
    return p.tools is not None and bool(p.tools.builtin)


class Transcript:
    """One choice's finished tool turns: ``turns`` (JSON-ready; persisted by jobs) and the turns to replay
    (``saved``, from an earlier start). The generate wrapper records each completion; the environment closes
    the turn with its tool calls and response."""

    def __init__(self, saved: list[dict] | None = None):
        self.saved = list(saved or [])
        self.turns: list[dict] = list(self.saved)
        self.generated = 0
        self.pending: Completion | None = None

    def wrap(self, generate: Generate) -> Generate:
        async def replaying(prompt_ids, n, sampling):
            k, self.generated = self.generated, self.generated + 1
            c = completion_of(self.saved[k]["completion"]) if k < len(self.saved) else \
                (await generate(prompt_ids, n, sampling))[0]
            self.pending = c
            return [c]

        return replaying

    def close_turn(self, observation: str, calls: list[ToolCallRecord]) -> None:
        c = self.pending
        self.turns.append({"completion": {"token_ids": c.token_ids, "logprobs": c.logprobs, "text": c.text,
                                          "finish_reason": c.finish_reason},
                           "observation": observation, "calls": [dataclasses.asdict(x) for x in calls]})


def completion_of(d: dict) -> Completion:
    return Completion(list(d["token_ids"]), list(d["logprobs"]), d["text"], d["finish_reason"])


def rebuilds_state(call: ToolCallRecord) -> bool:
    """Whether a committed call is run again when its turn is replayed after a restart: only calls that build the
    episode's own tool state, i.e. the memory tool's writes of ``episode`` notes (the episode's tools start empty
    and later turns may read them). Nothing else runs again: reads change nothing, ``long_term`` notes are in
    their store already (writing them again could undo a later write of another episode), and ``python``, the
    calculator, retrieval and a user's functions keep no state between calls and may have side effects."""
    return (not call.error and call.name == "memory" and call.arguments.get("action") == "write"
            and call.arguments.get("scope", "episode") == "episode")


class RequestToolEnv(ToolEnv):
    """``ToolEnv``'s tool turns for a request, through its hooks: the prepared conversation instead of a task's
    prompt (its system block already lists the tools), no reward, and a call to one of the client's functions
    ends the episode. The tool turns of ``log.saved`` (an earlier start's) are replayed: their calls get the
    responses recorded then, and only the calls that rebuild per-episode state (:func:`rebuilds_state`) run
    again, into this episode's fresh tools."""

    def __init__(self, messages: list[dict], toolset, limits: EpisodeLimits, mode: Mode, client: frozenset[str],
                 log: Transcript, on_turn: Callable[[], None] | None = None):
        self.messages, self.toolset, self.limits, self.mode = messages, toolset, limits, mode
        self.client, self.log, self.on_turn = client, log, on_turn  # client: the client's function names
        self.tools_prompt, self.problem, self.tool_turns = "none", None, 0  # tool_turns: run or replayed so far

    def prompt(self, problem: Problem) -> list[dict]:
        return self.messages

    def reward(self, text: str) -> None:
        return None

    def step(self, assistant_turn: str, num_tokens: int = 0) -> StepResult:
        if self._calls_client(assistant_turn):  # the client runs it: the choice ends with the call
            return self.end(None)
        result = super().step(assistant_turn, num_tokens)
        if not result.done and self.tool_turns > len(self.log.saved):  # a new turn, not a replayed one
            self.log.close_turn(result.observation, result.info["tool_calls"])
            if self.on_turn is not None:
                self.on_turn()
        return result

    def run_calls(self, calls: list) -> list[ToolCallRecord]:
        k, self.tool_turns = self.tool_turns, self.tool_turns + 1
        if k >= len(self.log.saved):
            return super().run_calls(calls)
        records = [ToolCallRecord(**c) for c in self.log.saved[k]["calls"]]
        for r in records:
            if r.name is not None and rebuilds_state(r):
                again = self.toolset.execute(self.tools, r.name, r.arguments)
                if again.text != r.response:  # the model read the recorded response: that one stays
                    log.warning("replayed %s call answered %r, recorded %r", r.name, again.text[:200], r.response[:200])
        return records

    def _calls_client(self, turn: str) -> bool:
        """A call of the client's functions (a name nobody has goes to the tools, which answer with an error)."""
        return ends_in_call(turn) and any(isinstance(c, ToolCall) and c.name in self.client
                                          for c in parse_tool_calls(turn))


def episode_limits(limits, room: int) -> EpisodeLimits:
    """The server's per-choice tool limits; the tokens never past what the prompt leaves of the context."""
    cap = room if limits.max_tool_tokens is None else min(limits.max_tool_tokens, room)
    return EpisodeLimits(max_tool_calls=limits.max_tool_calls, max_turns=limits.max_tool_turns, max_tokens=cap)


async def run_episodes(server, p: Prepared, generate: Generate, saved: list[list[dict]] | None = None,
                       on_turn: Callable[[list[Transcript]], None] | None = None) -> tuple[list[Episode], list]:
    """One episode per choice (each its own runner, so each choice's turns are its own); ``saved``: per choice,
    the turns to replay; ``on_turn(transcripts)`` after every finished tool turn of any choice (on a worker
    thread). Returns the episodes and their transcripts."""
    n, sampling = p.req.n, p.sampling
    logs = [Transcript(saved[j] if saved and j < len(saved) else None) for j in range(n)]
    lock = threading.Lock()

    def turned():
        with lock:
            on_turn(logs)

    limits = episode_limits(server.limits, server.context - len(p.prompt_ids))
    problem = Problem(key=p.req.model, level=0, question="", answer=None)

    async def one(j: int) -> Episode:
        env = RequestToolEnv(p.messages, server.toolset, limits, Mode(p.mode), p.tools.names, logs[j],
                             turned if on_turn is not None else None)
        seed = None if sampling.seed is None else derive_seed(sampling.seed, j)
        runner = EpisodeRunner(logs[j].wrap(generate), server.tok, lambda: env, server.tool_pool)
        return (await runner.run([problem], Mode(p.mode), 1, dataclasses.replace(sampling, seed=seed)))[0][0]

    return list(await asyncio.gather(*(one(j) for j in range(n)))), logs


# -- the response ---------------------------------------------------------------------------------------------
def split_episode(text: str, mode: Mode) -> tuple[str | None, str]:
    """(reasoning, answer) of an episode's transcript: the answer is what the model wrote after its last tool
    response (after ``</think>`` when it closed its think block there); everything before -- the calls and
    their responses included -- is reasoning (None for a System-1 episode that called no tool)."""
    at = text.rfind(TOOL_RESPONSE_CLOSE)
    cut = 0 if at < 0 else at + len(TOOL_RESPONSE_CLOSE)
    before, tail = text[:cut], text[cut:]
    if mode == Mode.SYSTEM2 and THINK_CLOSE in tail:
        thought, answer = tail.split(THINK_CLOSE, 1)
        return (before + thought).strip("\n"), answer.strip()
    if mode == Mode.SYSTEM2 and THINK_CLOSE not in before:  # never closed: all reasoning
        return text.strip("\n"), ""
    return (before.strip("\n") or None), tail.strip()


def client_message(ep: Episode, names: frozenset[str]) -> tuple[str | None, str | None, list[dict]]:
    """(reasoning, content, tool_calls) of an episode: an episode that ended on calls of the client's functions
    returns them as ``tool_calls`` (cut from the text, wherever the model wrote them, its think block too)."""
    text, calls = ep.text, []
    last = ep.segments[-1] if ep.segments else None
    if last is not None and last.mask and ends_in_call(last.text):
        rest, calls = split_calls(last.text, names)
        if calls:
            text = text[:len(text) - len(last.text)] + (rest or "")
    reasoning, content = split_episode(text, ep.mode)
    return reasoning, content or (None if calls else content), calls


def episode_reasoning_tokens(tok, ep: Episode) -> int:
    """The model's tokens before its answer: every turn but the last, and the last up to its ``</think>``
    (none of it when the think block closed in an earlier turn)."""
    model = [s for s in ep.segments if s.mask]
    last = model[-1]
    earlier = sum(len(s.token_ids) for s in model[:-1])
    if ep.mode == Mode.SYSTEM2 and THINK_CLOSE not in last.text and THINK_CLOSE in ep.text:
        return earlier
    if ep.mode == Mode.SYSTEM1 and len(model) == 1:
        return 0
    if ep.mode == Mode.SYSTEM1:
        return earlier
    return earlier + reasoning_token_count(tok, Completion(last.token_ids, last.logprobs, last.text, "stop"),
                                           ep.mode)


def tool_use_of(ep: Episode) -> dict:
    """What the built-in tools did in one choice (the response's ``tool_use``)."""
    return {"turns": ep.turns, "limit": ep.limit,
            "calls": [{"name": c.name, "arguments": c.arguments, "error": c.error} for c in ep.tool_calls]}


def episode_result(server, p: Prepared, episodes: list[Episode], meta: dict, t0: float,
                   source: str) -> tuple[ChatCompletion, list[dict]]:
    """The chat.completion of a request's episodes and the trace rows of its choices."""
    choices, records, generated, reasoning_tokens = [], [], 0, 0
    latency, finished = time.monotonic() - t0, time.time()
    for i, ep in enumerate(episodes):
        reasoning, content, calls = client_message(ep, p.tools.names)
        finish = "tool_calls" if calls else "length" if ep.finish_reason in ("length", "limit") else "stop"
        choices.append(Choice(index=i, finish_reason=finish, message=assistant_message(reasoning, content,
                                                                                        calls or None)))
        n_reasoning = episode_reasoning_tokens(server.tok, ep)
        generated += ep.model_tokens
        reasoning_tokens += n_reasoning
        records.append({
            "id": meta["id"], "choice_index": i, "created": finished, "model": server.model_name, "source": source,
            "stream": int(bool(p.req.stream)), "messages": p.messages, "completion": ep.text, "reasoning": reasoning,
            "answer": content or "", "reasoning_effort": p.effort, "mode": p.mode,
            "prompt_tokens": len(p.prompt_ids), "completion_tokens": ep.model_tokens,
            "reasoning_tokens": n_reasoning, "latency_s": latency, "finish_reason": finish,
            "metadata": p.req.metadata, "completion_ids": ep.token_ids, "completion_mask": ep.loss_mask})
    usage = make_usage(len(p.prompt_ids), generated, reasoning_tokens)
    result = ChatCompletion(**meta, choices=choices, usage=usage, tool_use=[tool_use_of(ep) for ep in episodes])
    return result, records


async def answer_with_tools(server, p: Prepared, generate: Generate, meta: dict, t0: float, source: str,
                            saved: list[list[dict]] | None = None, on_turn=None):
    """The chat.completion (and trace rows) of a request that runs built-in tools."""
    episodes, _ = await run_episodes(server, p, generate, saved, on_turn)
    return episode_result(server, p, episodes, meta, t0, source)
