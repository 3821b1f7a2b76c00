"""What every route of one server shares (``app.state.server``): the served model and its engine scheduler
(or the remote backend generation is forwarded to), the API keys and limits, the request preparer, the
trace and job stores, and the router for ``reasoning_effort="auto"``."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Request

from ..engine import Engine
from .body import json_body
from .jobs import JobRunner, JobStore
from .keys import Keys
from .limits import Limits
from .prepare import Prepared, RequestPreparer
from .protocol import APIError, completion_id, now
from .remote import OpenAIBackend
from .scheduler import Scheduler
from .traces import TaskResolver, TraceStore


@dataclass
class Server:
    model_name: str
    prepare: RequestPreparer
    keys: Keys = field(default_factory=Keys)
    limits: Limits = field(default_factory=Limits)
    model: Any = None  # None with a remote backend
    tok: Any = None
    engine: Engine | None = None
    scheduler: Scheduler | None = None
    context: int | None = None  # the model's maximum positions
    remote: OpenAIBackend | None = None
    traces: TraceStore | None = None
    jobs: JobStore | None = None
    runner: JobRunner | None = None  # set once the app exists (it runs jobs through the routes' code)
    auto_router: Any = None  # a trained router for reasoning_effort="auto" (None: auto runs medium)
    toolset: Any = None  # the tools the server runs itself (--builtin-tools; serve.episodes), or None
    tool_pool: Any = None  # the threads those tools run on
    created: int = field(default_factory=now)
    in_progress: Counter = field(default_factory=Counter)  # chat requests per owner (event loop only)

    def auth(self, request: Request) -> str:
        """The owner of the request: its API key's name ('' on a server without keys); 401 otherwise."""
        return self.keys.owner(request)

    def queue_of(self, owner: str, request: Request) -> str:
        """Whose share of the engine a request uses: its key, or its client's address without keys."""
        if self.keys or request.client is None:
            return owner
        return f"client {request.client.host}"

    async def body(self, request: Request) -> dict:
        return await json_body(request, self.limits)

    async def prepared(self, request: Request, owner: str) -> Prepared:
        """The request's body, read and prepared (off the event loop when it is large)."""
        return await json_body(request, self.limits, lambda body: self.prepare(body, owner))

    def enter(self, owner: str) -> Callable[[], None]:
        """Count a chat request of ``owner`` in progress (429 beyond ``max_requests_per_key``); returns the
        call that ends it (safe to call twice)."""
        limit = self.limits.max_requests_per_key
        if self.in_progress[owner] >= limit:
            raise APIError(429, f"This API key has {limit} requests in progress, this server's limit "
                                "max_requests_per_key (slowthink serve --max-requests-per-key); retry shortly.",
                           type="rate_limit_error", code="max_requests_per_key_exceeded",
                           headers={"Retry-After": "1"})
        self.in_progress[owner] += 1
        ended = False

        def leave() -> None:
            nonlocal ended
            if not ended:
                ended = True
                self.in_progress[owner] -= 1
                if not self.in_progress[owner]:
                    del self.in_progress[owner]

        return leave

    def meta(self, cid: str | None = None) -> dict:
        """The id, creation time and model name every response object carries."""
        return {"id": cid or completion_id(), "created": now(), "model": self.model_name}

    def record(self, p, records: list[dict], replace: bool = False):
        """Queue trace rows (the writer thread commits them; nothing here waits on the disk): a future, or
        None without a trace store."""
        if self.traces is None:
            return None
        return self.traces.add(records, p.verification, replace=replace, owner=p.owner)

    @contextlib.asynccontextmanager
    async def running(self):
        """The app's lifespan: start the engine thread, the remote client, the trace writer and the jobs."""
        if self.scheduler is not None:
            self.scheduler.start()
        if self.remote is not None:
            await self.remote.start()
        if self.traces is not None:
            self.traces.start()
        if self.runner is not None:
            await self.runner.start()
        try:
            yield
        finally:
            if self.runner is not None:
                await self.runner.stop()  # running jobs stay 'running' in the database: they run again next start
            if self.scheduler is not None:
                await asyncio.to_thread(self.scheduler.stop)
            if self.remote is not None:
                await self.remote.close()
            if self.traces is not None:
                await asyncio.to_thread(self.traces.close)
            if self.tool_pool is not None:
                self.tool_pool.shutdown(wait=False, cancel_futures=True)


def open_server(model, tok, model_name: str, api_key: str | Keys | dict | None = None, max_batch: int = 64,
                max_queue: int = 256, traces: str | Path | TraceStore | None = None,
                jobs: str | Path | JobStore | None = None, tasks: dict | None = None,
                backend: OpenAIBackend | None = None, router=None, limits: Limits | None = None,
                toolset=None) -> Server:
    """The shared state of a server (see ``create_app`` for the arguments); nothing starts yet."""
    from .keys import as_keys

    limits = limits or Limits()
    remote = backend if getattr(backend, "kind", "local") != "local" else None
    router = None if remote is not None else router
    engine = scheduler = context = None
    if remote is None:
        engine = Engine(model, tok, max_batch=max_batch)
        scheduler = Scheduler(engine, max_queue, limits.slots_per_request, limits.reserved_slots)
        context = getattr(model.config, "max_position_embeddings", None) or tok.model_max_length
    if toolset is not None and remote is not None:
        raise ValueError("built-in tools (--builtin-tools) run with the local backend only")
    preparer = RequestPreparer(model_name, tok, context, remote, TaskResolver(tasks), limits, router,
                               toolset.schemas() if toolset is not None else None)
    return Server(model_name, preparer, as_keys(api_key), limits, model, tok, engine, scheduler, context, remote,
                  traces=TraceStore(traces) if isinstance(traces, (str, Path)) else traces,
                  jobs=JobStore(jobs) if isinstance(jobs, (str, Path)) else jobs, auto_router=router,
                  toolset=toolset, tool_pool=tool_threads() if toolset is not None else None)


def tool_threads():
    """Threads for built-in tool calls: tools of different requests run at once, off the event loop."""
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(max_workers=8, thread_name_prefix="slowthink-tools")


def server_of(request: Request) -> Server:
    return request.app.state.server
