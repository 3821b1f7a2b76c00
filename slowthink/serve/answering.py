"""Chat requests answered by the effort service (``slowthink.effort``) on the server's engine.

Every request runs through it except a stream of one sample per choice run as asked (none, low and
medium without a thinking budget), which goes token by token straight from the scheduler. The others
stream once the answer is chosen (a vote needs every sample): their deltas arrive together at the end, in
the usual order.
"""

from __future__ import annotations

import asyncio
import dataclasses

from ..effort import Model, Question, run_effort, single_pass
from ..effort.question import Generate
from ..router.signals import prompt_hidden
from .episodes import answer_with_tools, runs_episodes
from .prepare import Prepared
from .protocol import ChatCompletion
from .responses import build_result
from .state import Server


def streams_live(p: Prepared) -> bool:
    """Token by token from the scheduler: one sample per choice run as asked, without the server's built-in
    tools (their episodes stream once answered, as a vote does). A client's tool calls are sent once complete."""
    return (bool(p.req.stream) and not runs_episodes(p)
            and single_pass(p.effort, p.req.thinking_token_budget) is not None)


def question_of(p: Prepared) -> Question:
    """The request as the service sees it: the prepared sampling's temperature is the default of a single
    sample (the client's, or OpenAI's 1)."""
    req = p.req
    return Question(messages=lambda mode: p.messages, sampling=p.sampling, n=req.n, budget=req.budget,
                    thinking_budget=req.thinking_token_budget, temperature=req.temperature)


def model_of(server: Server, generate: Generate) -> Model:
    async def hidden(prompt_ids):  # a worker thread: the event loop keeps serving meanwhile
        return (await asyncio.to_thread(prompt_hidden, server.model, [prompt_ids]))[0]

    return Model(server.tok, generate, hidden, server.context)


async def answer(server: Server, p: Prepared, generate: Generate, meta: dict, t0: float, source: str,
                 saved: list[list[dict]] | None = None, on_turn=None) -> tuple[ChatCompletion, Prepared, list[dict]]:
    """The chat.completion, the request as answered (the mode and prompt that ran) and its trace rows. A
    request with the server's built-in tools runs one episode per choice (``serve.episodes``; ``saved`` and
    ``on_turn``: a job's persisted turns to replay, and the call that persists each new one)."""
    if runs_episodes(p):
        result, records = await answer_with_tools(server, p, generate, meta, t0, source, saved, on_turn)
        return result, p, records
    answered = await run_effort(question_of(p), p.effort, {"main": model_of(server, generate)}, server.auto_router)
    ran = dataclasses.replace(p, mode=answered.mode, prompt_ids=answered.prompt_ids)
    result, records = build_result(server.tok, server.model_name, ran, answered.choices, meta, t0, source,
                                   bool(p.req.stream), answered.extra_tokens, answered.route)
    return result, ran, records
