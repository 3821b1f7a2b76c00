"""``POST /v1/chat/completions``, plain and streamed (SSE): forwarded to a remote backend, streamed live
from the scheduler (one sample per choice run as asked), or answered by the effort service."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ..answering import answer, streams_live
from ..generation import ClientGone, chat_generate, submit
from ..prepare import Prepared
from ..protocol import error_body
from ..remote import remote_chat
from ..responses import EventStream, build_result, event_stream, replay_events, sse_events
from ..state import Server, server_of

router = APIRouter()


def include_usage(p: Prepared) -> bool:
    return bool(p.req.stream_options and p.req.stream_options.include_usage)


@router.post("/v1/chat/completions")
async def chat_completions(request: Request):
    t0 = time.monotonic()
    server = server_of(request)
    owner = server.auth(request)
    leave = server.enter(owner)  # counted until the answer is sent, a stream's last event included
    try:
        response = await respond(server, request, owner, t0)
    except BaseException:
        leave()
        raise
    if isinstance(response, EventStream):
        response.on_close = leave
    else:
        leave()
    return response


async def respond(server: Server, request: Request, owner: str, t0: float):
    p = await server.prepared(request, owner)
    meta = server.meta()
    if server.remote is not None:
        return await remote_chat(server.remote, p, request, meta, t0, lambda records: server.record(p, records))
    queue = server.queue_of(owner, request)
    if streams_live(p):
        return live_stream(server, p, meta, t0, queue)
    try:
        generate = chat_generate(server.scheduler, request, queue)
        result, ran, records = await answer(server, p, generate, meta, t0, "chat")
    except ClientGone:
        return JSONResponse(error_body("client disconnected"), status_code=499)
    server.record(ran, records)
    if p.req.stream:
        return event_stream(replay_events(result, meta, include_usage(p)))
    return result.model_dump()


def live_stream(server: Server, p: Prepared, meta: dict, t0: float, queue: str):
    job = submit(server.scheduler, p.prompt_ids, p.req.n, p.sampling, True, queue)

    def finish(completions):  # recorded before the last chunks are sent
        result, records = build_result(server.tok, server.model_name, p, completions, meta, t0, "chat", True)
        server.record(p, records)
        return result

    return event_stream(sse_events(job, p, meta, include_usage(p), server.tok, server.engine.eos_ids, finish,
                                   server.scheduler.cancel))
