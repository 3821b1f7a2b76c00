"""OpenAI-compatible HTTP server: ``GET /v1/models`` and ``POST /v1/chat/completions`` (plain and SSE).

    slowthink serve --model RUN_DIR/model --host 127.0.0.1 --port 8000 [--api-key K]

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="K")
    r = client.chat.completions.create(model="model", messages=[...], reasoning_effort="low")
    r.choices[0].message.reasoning_content, r.choices[0].message.content

``reasoning_effort`` picks System-1 or System-2 and the default completion budget:

    effort     mode                                  default max_completion_tokens
    none       System-1 (empty think block; answer)  256
    low        System-2 (think, </think>, answer)    256
    medium     System-2                              1024   (the default when absent)
    high       System-2                              4096
    auto       for now the same as medium; a later release routes by predicted difficulty

Defaults are capped by what is left of the model's context (``max_position_embeddings`` minus the
prompt); an explicit ``max_completion_tokens`` (or legacy ``max_tokens``) beyond it is a 400.

Output: ``message.reasoning_content`` is the text before ``</think>`` (None for System-1),
``message.content`` the answer after it (both stripped as ``tasks.base.split_completion`` does);
``usage.completion_tokens_details.reasoning_tokens`` counts the tokens up to and including
``</think>`` (all of them if the think block never closed). Streaming sends ``delta.reasoning_content``
then ``delta.content`` chunks; each sequence's tokens are decoded whole and diffed against what was
sent, holding back text that could still become ``</think>`` or a stop string, so the concatenated
deltas equal the non-streaming message exactly.

Errors use OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``: 400 bad JSON / invalid
fields / prompt too long, 401 bad API key, 404 unknown model, 429 queue full; never a stack trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..engine import Completion, Engine, SamplingParams
from ..tokenizer import render_prompt
from .protocol import (
    APIError,
    AssistantMessage,
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    ModelCard,
    ModelList,
    completion_id,
    error_body,
    make_usage,
    now,
)
from .scheduler import QueueFull, Scheduler

log = logging.getLogger(__name__)

THINK_CLOSE = "</think>"
EFFORT_BUDGET = {"none": 256, "low": 256, "medium": 1024, "high": 4096, "auto": 1024}
DEFAULT_EFFORT = "medium"


def effort_mode(effort: str) -> str:
    return "system1" if effort == "none" else "system2"  # "auto" = "medium" until the router lands


# -- turning tokens into (reasoning, content) ----------------------------------------------------------
def split_output(text: str, mode: str) -> tuple[str | None, str]:
    """Final (reasoning_content, content) of a completion's text (eos and stop string removed)."""
    if mode == "system1":
        return None, text.strip()
    if THINK_CLOSE not in text:
        return text.strip("\n"), ""
    reasoning, answer = text.split(THINK_CLOSE, 1)
    return reasoning.strip("\n"), answer.strip()


def _held_back(text: str, markers: list[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of one of ``markers``."""
    hold = 0
    for m in markers:
        for k in range(min(len(m) - 1, len(text)), hold, -1):
            if text.endswith(m[:k]):
                hold = k
                break
    return hold


class SequenceStream:
    """Incremental decoding of one sequence: each ``feed`` returns the new (reasoning, content) text,
    always a prefix of what ``split_output`` gives for the finished completion."""

    def __init__(self, tok, eos_ids: set[int], mode: str, stops: list[str]):
        self.tok, self.eos_ids, self.mode, self.stops = tok, eos_ids, mode, stops
        self.ids: list[int] = []
        self.sent_reasoning = 0
        self.sent_content = 0

    def _safe(self, text: str) -> tuple[str | None, str]:
        for s in self.stops:  # a complete stop string: the engine ends the sequence there
            if (i := text.find(s)) >= 0:
                text = text[:i]
        markers = list(self.stops)
        if self.mode == "system2" and THINK_CLOSE not in text:
            markers.append(THINK_CLOSE)
        text = text[:len(text) - _held_back(text, markers)]
        while text.endswith("\ufffd"):  # an incomplete multi-byte character
            text = text[:-1]
        if self.mode == "system1":
            return None, text.strip()
        if THINK_CLOSE not in text:
            return text.strip("\n"), ""  # trailing newlines held: they may precede </think>
        reasoning, answer = text.split(THINK_CLOSE, 1)
        return reasoning.strip("\n"), answer.strip()

    def feed(self, new_ids: list[int]) -> tuple[str, str]:
        self.ids.extend(new_ids)
        ids = [t for t in self.ids if t not in self.eos_ids]
        return self._diff(*self._safe(self.tok.decode(ids, skip_special_tokens=False)))

    def finish(self, completion: Completion) -> tuple[str, str]:
        return self._diff(*split_output(completion.text, self.mode))

    def _diff(self, reasoning: str | None, content: str) -> tuple[str, str]:
        r = (reasoning or "")[self.sent_reasoning:]
        c = content[self.sent_content:]
        self.sent_reasoning += len(r)
        self.sent_content += len(c)
        return r, c


def reasoning_token_count(tok, completion: Completion, mode: str) -> int:
    if mode == "system1":
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


# -- the app -------------------------------------------------------------------------------------------
def create_app(model, tok, model_name: str, api_key: str | None = None, max_batch: int = 64,
               max_queue: int = 256):
    engine = Engine(model, tok, max_batch=max_batch)
    scheduler = Scheduler(engine, max_queue=max_queue)
    context = getattr(model.config, "max_position_embeddings", None) or tok.model_max_length
    created = now()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        scheduler.start()
        try:
            yield
        finally:
            await asyncio.to_thread(scheduler.stop)

    app = FastAPI(title="slowthink", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.scheduler, app.state.engine = scheduler, engine

    def error(e: APIError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(APIError)
    async def _api_error(request, e: APIError):
        return error(e)

    @app.exception_handler(RequestValidationError)
    async def _validation(request, e: RequestValidationError):
        return error(_from_validation(e.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, e: StarletteHTTPException):
        kind = "not_found_error" if e.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(e.detail), kind), status_code=e.status_code)

    @app.exception_handler(Exception)
    async def _internal(request, e: Exception):
        log.exception("unhandled error")
        return JSONResponse(error_body("internal server error", "server_error"), status_code=500)

    def check_auth(request: Request) -> None:
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise APIError(401, "Incorrect or missing API key: send 'Authorization: Bearer <key>'.",
                           code="invalid_api_key")

    @app.get("/v1/models")
    async def models(request: Request):
        check_auth(request)
        return ModelList(data=[ModelCard(id=model_name, created=created)]).model_dump()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        check_auth(request)
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError) as e:
            raise APIError(400, f"Invalid JSON body: {e}", code="invalid_json") from None
        if not isinstance(body, dict):
            raise APIError(400, "The request body must be a JSON object.")
        try:
            req = ChatCompletionRequest.model_validate(body)
        except ValidationError as e:
            raise _from_validation(e.errors()) from None
        if req.model != model_name:
            raise APIError(404, f"The model '{req.model}' does not exist; this server serves "
                                f"'{model_name}'.", param="model", code="model_not_found")
        effort = req.reasoning_effort or DEFAULT_EFFORT
        mode = effort_mode(effort)
        try:
            prompt_ids = render_prompt(tok, [m.to_template() for m in req.messages], mode)
        except Exception as e:  # noqa: BLE001 - any template error is the caller's input
            raise APIError(400, f"Could not render the messages with the chat template: {e}",
                           param="messages") from None
        room = context - len(prompt_ids)
        if room < 1:
            raise APIError(400, f"This model's maximum context length is {context} tokens; the messages "
                                f"take {len(prompt_ids)}.", param="messages", code="context_length_exceeded")
        asked = req.max_completion_tokens or req.max_tokens
        if asked is not None and asked > room:
            raise APIError(400, f"This model's maximum context length is {context} tokens; you asked for "
                                f"{asked} completion tokens but the messages take {len(prompt_ids)}.",
                           param="max_completion_tokens", code="context_length_exceeded")
        sampling = SamplingParams(
            max_tokens=asked or min(EFFORT_BUDGET[effort], room),
            temperature=1.0 if req.temperature is None else req.temperature,
            top_p=1.0 if req.top_p is None else req.top_p, stop=tuple(req.stop_list), seed=req.seed)
        try:
            job = scheduler.submit(prompt_ids, req.n, sampling, stream=req.stream)
        except QueueFull as e:
            raise APIError(429, f"Server busy: {e}", type="rate_limit_error", code="queue_full") from None
        meta = {"id": completion_id(), "created": now(), "model": model_name}
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(_stream(job, req, mode, len(prompt_ids), meta, include_usage),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        update = await _wait_final(job, request)
        if update is None:  # client went away
            return JSONResponse(error_body("client disconnected"), status_code=499)
        if update.error:
            raise APIError(500, update.error, type="server_error")
        choices, completion_tokens, reasoning_tokens = [], 0, 0
        for i, c in enumerate(update.completions):
            reasoning, content = split_output(c.text, mode)
            choices.append(Choice(index=i, finish_reason=c.finish_reason,
                                  message=AssistantMessage(content=content, reasoning_content=reasoning)))
            completion_tokens += len(c.token_ids)
            reasoning_tokens += reasoning_token_count(tok, c, mode)
        return ChatCompletion(**meta, choices=choices,
                              usage=make_usage(len(prompt_ids), completion_tokens, reasoning_tokens)).model_dump()

    async def _wait_final(job, request: Request):
        while True:
            try:
                update = await asyncio.wait_for(job.updates.get(), timeout=1.0)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    scheduler.cancel(job)
                    return None
                continue
            if update.completions is not None or update.error:
                return update

    async def _stream(job, req: ChatCompletionRequest, mode: str, prompt_tokens: int, meta: dict,
                      include_usage: bool):
        streams = [SequenceStream(tok, engine.eos_ids, mode, req.stop_list) for _ in range(req.n)]
        extra = {"usage": None} if include_usage else {}

        def chunk(index: int, delta: dict, finish_reason: str | None = None) -> str:
            data = {**meta, "object": "chat.completion.chunk", **extra,
                    "choices": [{"index": index, "delta": delta, "finish_reason": finish_reason,
                                 "logprobs": None}]}
            return f"data: {json.dumps(data)}\n\n"

        def deltas(i: int, r: str, c: str):
            if r:
                yield chunk(i, {"reasoning_content": r})
            if c:
                yield chunk(i, {"content": c})

        done = False
        try:
            for i in range(req.n):
                yield chunk(i, {"role": "assistant", "content": ""})
            while True:
                update = await job.updates.get()
                if update.error:
                    yield f"data: {json.dumps(error_body(update.error, 'server_error'))}\n\n"
                    break
                if update.new_tokens is not None:
                    for i, new in enumerate(update.new_tokens):
                        if new:
                            for s in deltas(i, *streams[i].feed(new)):
                                yield s
                if update.completions is not None:
                    completion_tokens = reasoning_tokens = 0
                    for i, c in enumerate(update.completions):
                        for s in deltas(i, *streams[i].finish(c)):
                            yield s
                        yield chunk(i, {}, c.finish_reason)
                        completion_tokens += len(c.token_ids)
                        reasoning_tokens += reasoning_token_count(tok, c, mode)
                    if include_usage:
                        usage = make_usage(prompt_tokens, completion_tokens, reasoning_tokens)
                        data = {**meta, "object": "chat.completion.chunk", "choices": [],
                                "usage": usage.model_dump()}
                        yield f"data: {json.dumps(data)}\n\n"
                    break
            done = True
            yield "data: [DONE]\n\n"
        finally:
            if not done:  # client disconnected (generator closed/cancelled) or error: free the slots
                scheduler.cancel(job)

    return app


def _from_validation(errors) -> APIError:
    errs = list(errors)
    if not errs:
        return APIError(400, "Invalid request.")
    first = errs[0]
    loc = [str(x) for x in first.get("loc", ()) if x != "body"]
    if first.get("type") == "json_invalid":
        return APIError(400, "Invalid JSON body.", code="invalid_json")
    param = ".".join(loc) or None
    msg = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()) if x != 'body') or 'body'}: {e.get('msg')}"
                    for e in errs[:5])
    return APIError(400, f"Invalid request: {msg}", param=param)


def serve_main(model_dir: str, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
               max_batch: int = 64, max_queue: int = 256, model_name: str | None = None) -> int:
    """Load a model folder and serve it until interrupted (the ``slowthink serve`` command)."""
    from pathlib import Path

    import uvicorn

    from ..models import load_model

    model, tok = load_model(model_dir)
    model.eval()
    name = model_name or Path(model_dir).resolve().name
    app = create_app(model, tok, name, api_key=api_key, max_batch=max_batch, max_queue=max_queue)
    print(f"serving '{name}' on http://{host}:{port}/v1" + (" (API key required)" if api_key else ""))
    uvicorn.run(app, host=host, port=port, log_level="info")
    return 0
