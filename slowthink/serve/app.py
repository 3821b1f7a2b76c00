"""OpenAI-compatible HTTP server: ``GET /v1/models`` and ``POST /v1/chat/completions`` (plain and SSE).

    slowthink serve --model RUN_DIR/model --host 127.0.0.1 --port 8000 [--api-key K]

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="K")
    r = client.chat.completions.create(model="model", messages=[...], reasoning_effort="low")
    r.choices[0].message.reasoning_content, r.choices[0].message.content

``reasoning_effort`` means what ``slowthink.effort`` says (the CLI's ``--reasoning-effort`` too):

    effort     what runs                                                  default max_completion_tokens
    none       System-1 (empty think block; answer), greedy               256
    low        System-2 (think, </think>, answer)                         256
    medium     System-2 (the default when absent)                         1024
    high       System-2 self-consistency: majority of 8 samples, T=0.7    1024 per sample
    auto       the router saved beside the model (MODEL_DIR/router) picks per question (``route`` in the
               response says what and why); without one, medium

high and auto run several engine jobs per request (``serve.planned``); they stream once the answer is
chosen, and their usage bills every generated token. Requests leave sampling as given (a temperature
the client sets applies to every sample).

Defaults are capped by what is left of the model's context (``max_position_embeddings`` minus the
prompt); an explicit ``max_completion_tokens`` (or legacy ``max_tokens``) beyond it is a 400.

Output: ``message.reasoning_content`` is the text before ``</think>`` (None for System-1),
``message.content`` the answer after it; streaming sends ``delta.reasoning_content`` then
``delta.content`` chunks whose concatenation equals the non-streaming message exactly.

Modules: ``prepare`` (auth, body, validation, budget: request -> ``Prepared``), ``responses`` (completion
objects, trace rows, SSE events), this one (the app: lifespan, error handlers, routes; ``serve_main``).

Errors use OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``: 400 bad JSON / invalid
fields / prompt too long, 401 bad API key, 404 unknown model (or job, or stored completion), 429 queue
full; never a stack trace.

Beyond OpenAI's endpoints (see ``serve.traces`` and ``serve.jobs``):

    every returned choice (plain, streamed, job) -> one row in the trace database (--traces PATH);
        ``metadata={"task": "arithmetic", "answer": "42"}`` on the request stores the task's verdict
    POST /v1/feedback {"completion_id", "choice_index": 0, "correct": true[, "comment"]}  a later verdict
    POST /v1/jobs (a chat-completion body), GET /v1/jobs/{id}, DELETE /v1/jobs/{id}, GET /v1/jobs
        durable asynchronous completions (--jobs PATH), run again after a crash

``--backend openai --base-url URL --model NAME`` serves a remote OpenAI-compatible server (vLLM, Ollama,
a hosted API, another slowthink) through these same endpoints, error shapes, traces and jobs; generation
is forwarded (see ``serve.remote`` for what is passed through and how errors map).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..engine import Completion, Engine
from .jobs import STATUSES, JobCancelled, JobRunner, JobStore, RunningJob, job_object
from .prepare import (DEFAULT_EFFORT, EFFORT_BUDGET, Prepared, RequestPreparer, check_auth, effort_mode,
                      from_validation, json_body)
from .protocol import APIError, FeedbackRequest, ModelCard, ModelList, completion_id, error_body, now
from .planned import Planned, run_auto, run_high
from .remote import LOCAL, OpenAIBackend, remote_chat, remote_job
from ..chat import THINK_CLOSE, split_output
from .responses import SequenceStream, build_result, reasoning_token_count, replay_events, sse_events
from .scheduler import QueueFull, Scheduler
from .traces import TaskResolver, TraceStore

__all__ = ["create_app", "serve_main", "Prepared", "SequenceStream", "split_output", "reasoning_token_count",
           "effort_mode", "EFFORT_BUDGET", "DEFAULT_EFFORT", "THINK_CLOSE"]

log = logging.getLogger(__name__)


class ClientGone(Exception):
    """The HTTP client disconnected while its request was being worked on."""


def create_app(model, tok, model_name: str, api_key: str | None = None, max_batch: int = 64,
               max_queue: int = 256, traces: str | Path | TraceStore | None = None,
               jobs: str | Path | JobStore | None = None, job_concurrency: int = 8,
               tasks: dict | None = None, backend: OpenAIBackend | None = None, router=None):
    """The FastAPI app. ``backend``: a remote OpenAI-compatible server to forward generation to (``model``
    and ``tok`` are then unused and may be None); None: the local engine on ``model``.
    ``traces``: a trace database (path or store) to record every returned choice in
    (None: no traces, and ``/v1/feedback`` answers 400). ``jobs``: a jobs database for ``/v1/jobs`` (None:
    no jobs API), run ``job_concurrency`` at a time. ``tasks``: extra ``{name: task}`` that
    ``metadata.task`` may name, besides the built-in tasks. ``router``: a trained router for
    ``reasoning_effort="auto"`` (None: auto runs as medium)."""
    remote = backend if getattr(backend, "kind", "local") != "local" else None
    engine = scheduler = context = None
    if remote is None:
        engine = Engine(model, tok, max_batch=max_batch)
        scheduler = Scheduler(engine, max_queue=max_queue)
        context = getattr(model.config, "max_position_embeddings", None) or tok.model_max_length
    created = now()
    store = TraceStore(traces) if isinstance(traces, (str, Path)) else traces
    job_store = JobStore(jobs) if isinstance(jobs, (str, Path)) else jobs
    prepare = RequestPreparer(model_name, tok, context, remote, TaskResolver(tasks))
    runner = None

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if scheduler is not None:
            scheduler.start()
        if remote is not None:
            await remote.start()
        if store is not None:
            store.start()
        if runner is not None:
            await runner.start()
        try:
            yield
        finally:
            if runner is not None:
                await runner.stop()  # running jobs stay 'running' in the database: they run again next start
            if scheduler is not None:
                await asyncio.to_thread(scheduler.stop)
            if remote is not None:
                await remote.close()
            if store is not None:
                await asyncio.to_thread(store.close)

    app = FastAPI(title="slowthink", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.scheduler, app.state.engine, app.state.traces, app.state.jobs = scheduler, engine, store, job_store
    app.state.backend = remote or LOCAL

    def error(e: APIError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(APIError)
    async def _api_error(request, e: APIError):
        return error(e)

    @app.exception_handler(RequestValidationError)
    async def _validation(request, e: RequestValidationError):
        return error(from_validation(e.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, e: StarletteHTTPException):
        kind = "not_found_error" if e.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(e.detail), kind), status_code=e.status_code)

    @app.exception_handler(Exception)
    async def _internal(request, e: Exception):
        log.exception("unhandled error")
        return JSONResponse(error_body("internal server error", "server_error"), status_code=500)

    def auth(request: Request) -> None:
        check_auth(request, api_key)

    def result_of(p: Prepared, completions: list[Completion], meta: dict, t0: float, source: str, stream: bool,
                  plan: Planned | None = None):
        if plan is not None:
            return build_result(tok, model_name, plan.p, plan.completions, meta, t0, source, stream,
                                plan.extra_tokens, plan.route)
        return build_result(tok, model_name, p, completions, meta, t0, source, stream)

    def planned(p: Prepared) -> bool:
        return remote is None and (p.effort == "high" or (p.effort == "auto" and router is not None))

    async def run_plan(p: Prepared, generate) -> Planned:
        if p.effort == "high":
            return await run_high(p, generate)
        return await run_auto(p, generate, router, model, tok, context)

    def record(p: Prepared, records: list[dict], replace: bool = False):
        """Queue the trace rows (the writer thread commits them; nothing here waits on the disk)."""
        return store.add(records, p.verification, replace=replace) if store is not None else None

    @app.get("/v1/models")
    async def models(request: Request):
        auth(request)
        return ModelList(data=[ModelCard(id=model_name, created=created)]).model_dump()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        t0 = time.monotonic()
        auth(request)
        p = prepare(await json_body(request))
        req = p.req
        if remote is not None:
            meta = {"id": completion_id(), "created": now(), "model": model_name}
            return await remote_chat(remote, p, request, meta, t0, lambda records: record(p, records))
        meta = {"id": completion_id(), "created": now(), "model": model_name}
        if planned(p):
            async def generate(ids, n, sampling):
                try:
                    sjob = scheduler.submit(ids, n, sampling, stream=False)
                except QueueFull as e:
                    raise APIError(429, f"Server busy: {e}", type="rate_limit_error", code="queue_full") from None
                update = await _wait_final(sjob, request)
                if update is None:
                    raise ClientGone
                if update.error:
                    raise APIError(500, update.error, type="server_error")
                return update.completions

            try:
                plan = await run_plan(p, generate)
            except ClientGone:
                return JSONResponse(error_body("client disconnected"), status_code=499)
            result, records = result_of(p, [], meta, t0, "chat", bool(req.stream), plan)
            record(plan.p, records)
            if req.stream:
                include_usage = bool(req.stream_options and req.stream_options.include_usage)
                return StreamingResponse(replay_events(result, meta, include_usage), media_type="text/event-stream",
                                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
            return result.model_dump()
        try:
            job = scheduler.submit(p.prompt_ids, req.n, p.sampling, stream=req.stream)
        except QueueFull as e:
            raise APIError(429, f"Server busy: {e}", type="rate_limit_error", code="queue_full") from None
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)

            def finish(completions):  # recorded before the last chunks are sent
                result, records = result_of(p, completions, meta, t0, "chat", True)
                record(p, records)
                return result

            events = sse_events(job, p, meta, include_usage, tok, engine.eos_ids, finish, scheduler.cancel)
            return StreamingResponse(events, media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        update = await _wait_final(job, request)
        if update is None:  # client went away
            return JSONResponse(error_body("client disconnected"), status_code=499)
        if update.error:
            raise APIError(500, update.error, type="server_error")
        result, records = result_of(p, update.completions, meta, t0, "chat", False)
        record(p, records)
        return result.model_dump()

    async def _wait_final(job, request: Request | None):
        while True:
            try:
                update = await asyncio.wait_for(job.updates.get(), timeout=1.0)
            except asyncio.TimeoutError:
                if request is not None and await request.is_disconnected():
                    scheduler.cancel(job)
                    return None
                continue
            if update.completions is not None or update.error:
                return update

    # -- feedback ----------------------------------------------------------------------------------------
    @app.post("/v1/feedback")
    async def feedback(request: Request):
        auth(request)
        body = await json_body(request)
        try:
            fb = FeedbackRequest.model_validate(body)
        except ValidationError as e:
            raise from_validation(e.errors()) from None
        if store is None:
            raise APIError(400, "This server keeps no traces (started without a trace database).",
                           code="traces_disabled")
        found = await asyncio.wrap_future(store.feedback(fb.completion_id, fb.choice_index, fb.correct, fb.comment))
        if not found:
            raise APIError(404, f"No stored completion '{fb.completion_id}' with choice {fb.choice_index}.",
                           param="completion_id", code="completion_not_found")
        return {"object": "feedback", "completion_id": fb.completion_id, "choice_index": fb.choice_index,
                "correct": fb.correct, "comment": fb.comment}

    # -- jobs ----------------------------------------------------------------------------------------------
    def job_store_or_400() -> JobStore:
        if job_store is None:
            raise APIError(400, "This server runs no jobs (started without a jobs database).",
                           code="jobs_disabled")
        return job_store

    def job_not_found(job_id: str) -> APIError:
        return APIError(404, f"No job '{job_id}'.", param="job_id", code="job_not_found")

    @app.post("/v1/jobs")
    async def create_job(request: Request):
        auth(request)
        js = job_store_or_400()
        body = await json_body(request)
        if body.get("stream"):
            raise APIError(400, "Jobs are not streamed: poll GET /v1/jobs/{id} instead (drop 'stream').",
                           param="stream")
        prepare(body)  # a bad request is a 400 now, not a failed job later
        row = await asyncio.to_thread(js.create, body, model_name)
        runner.wake()
        return job_object(row)

    @app.get("/v1/jobs")
    async def list_jobs(request: Request, limit: int = 20, status: str | None = None):
        auth(request)
        js = job_store_or_400()
        if not 1 <= limit <= 100:
            raise APIError(400, "limit must be in 1..100", param="limit")
        if status is not None and status not in STATUSES:
            raise APIError(400, f"status must be one of {', '.join(STATUSES)}", param="status")
        rows = await asyncio.to_thread(js.list, limit, status)
        return {"object": "list", "data": [job_object(r) for r in rows]}

    @app.get("/v1/jobs/{job_id}")
    async def get_job(request: Request, job_id: str):
        auth(request)
        row = await asyncio.to_thread(job_store_or_400().get, job_id)
        if row is None:
            raise job_not_found(job_id)
        return job_object(row)

    @app.delete("/v1/jobs/{job_id}")
    async def cancel_job(request: Request, job_id: str):
        auth(request)
        job_store_or_400()
        row, _ = await runner.cancel(job_id)
        if row is None:
            raise job_not_found(job_id)
        return job_object(row)

    async def execute_job(job: RunningJob) -> dict:
        t0 = time.monotonic()
        p = prepare(job.body)  # APIError (e.g. the server now serves another model): the job fails
        if remote is not None:
            meta = {"id": job.row["completion_id"], "created": now(), "model": model_name}

            def record_now(records):
                fut = record(p, records, replace=True)
                return None if fut is None else asyncio.wrap_future(fut)

            return await remote_job(remote, p, job, meta, t0, record_now)
        async def generate(ids, n, sampling):
            while True:
                if job.cancelled:
                    raise JobCancelled
                try:
                    sjob = scheduler.submit(ids, n, sampling, stream=False)
                    break
                except QueueFull:  # interactive requests fill the queue: wait, do not fail
                    await asyncio.sleep(0.25)
            job.on_cancel = lambda: scheduler.cancel(sjob)
            if job.cancelled:
                scheduler.cancel(sjob)
            try:
                update = await _wait_final(sjob, None)
            except asyncio.CancelledError:  # server shutting down: free the slots
                scheduler.cancel(sjob)
                raise
            if job.cancelled:
                raise JobCancelled
            if update.error:
                raise APIError(500, update.error, type="server_error")
            return update.completions

        meta = {"id": job.row["completion_id"], "created": now(), "model": model_name}
        if planned(p):
            plan = await run_plan(p, generate)
            result, records = result_of(p, [], meta, t0, "job", False, plan)
            p = plan.p
        else:
            result, records = result_of(p, await generate(p.prompt_ids, p.req.n, p.sampling), meta, t0, "job", False)
        fut = record(p, records, replace=True)
        if fut is not None:  # the trace is committed before the job says succeeded
            await asyncio.wrap_future(fut)
        return result.model_dump()

    if job_store is not None:
        runner = JobRunner(job_store, execute_job, concurrency=job_concurrency)
        if store is not None:
            runner.on_lost = lambda job, result: store.discard(result["id"])
    app.state.runner = runner
    return app


def serve_main(model_dir: str, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
               max_batch: int = 64, max_queue: int = 256, model_name: str | None = None,
               traces: str | Path | None = "default", jobs: str | Path | None = "default",
               job_concurrency: int = 8, backend: str = "local", base_url: str | None = None,
               remote_api_key: str | None = None, remote_timeout: float = 600.0,
               remote_logprobs: bool = False, device: str = "cpu") -> int:
    """Load a model folder and serve it until interrupted (the ``slowthink serve`` command).
    ``traces``/``jobs``: database paths; "default" is ``<model dir>/../traces.db`` and ``jobs.db`` beside
    the trace database; None turns the trace store / jobs API off.
    ``backend="openai"``: ``model_dir`` is the remote model's name, generation goes to ``base_url`` (see
    ``serve.remote``), and the default trace database is ``./traces.db``. ``device``: where the local model runs."""
    import uvicorn

    from .jobs import default_jobs_path
    from .traces import default_traces_path

    if backend == "openai":
        remote = OpenAIBackend(base_url or "", model_dir, api_key=remote_api_key, timeout=remote_timeout,
                               supports_logprobs=remote_logprobs)
        model = tok = router = None
        name = model_name or model_dir
        default_traces = Path.cwd() / "traces.db"
    elif backend == "local":
        from ..models import load_model

        from ..router import find_router

        remote = None
        model, tok = load_model(model_dir, device=device)
        model.eval()
        router = find_router(model_dir)
        checked = ([a.name for a in router.arms if a.verifier] + [s for s in router.signals if s == "s2check"]
                   if router is not None else [])
        if checked:  # a checker reads the task's claims; a chat request carries no parsed problem
            raise ValueError(f"{model_dir}/router uses a checker ({', '.join(checked)}), which the server cannot "
                             "run; train the router it serves without --checker")
        name = model_name or Path(model_dir).resolve().name
        default_traces = default_traces_path(model_dir)
    else:
        raise ValueError(f"--backend must be 'local' or 'openai', got {backend!r}")
    if traces == "default":
        traces = default_traces
    if jobs == "default":
        jobs = default_jobs_path(traces if traces is not None else default_traces)
    app = create_app(model, tok, name, api_key=api_key, max_batch=max_batch, max_queue=max_queue,
                     traces=traces, jobs=jobs, job_concurrency=job_concurrency, backend=remote, router=router)
    print(f"serving '{name}' on http://{host}:{port}/v1" + (" (API key required)" if api_key else "")
          + (f", forwarded to {remote.describe()}" if remote is not None else ""))
    print(f"traces: {traces or 'off'}   jobs: {jobs or 'off'}   reasoning_effort=auto: "
          + ("forwarded" if remote is not None else f"router ({', '.join(router.arm_names)})" if router is not None
             else "no router beside the model, runs medium (slowthink train router --model MODEL_DIR)"))
    uvicorn.run(app, host=host, port=port, log_level="info")
    return 0
