"""What every route of one server shares (``app.state.server``): the served model and its engine scheduler
(or the remote backend generation is forwarded to), the request preparer, the trace and job stores, and
the router for ``reasoning_effort="auto"``."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Request

from ..engine import Engine
from .jobs import JobRunner, JobStore
from .prepare import RequestPreparer, check_auth
from .protocol import completion_id, now
from .remote import OpenAIBackend
from .scheduler import Scheduler
from .traces import TaskResolver, TraceStore


@dataclass
class Server:
    model_name: str
    prepare: RequestPreparer
    api_key: str | None = None
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
    created: int = field(default_factory=now)

    def auth(self, request: Request) -> None:
        check_auth(request, self.api_key)

    def meta(self, cid: str | None = None) -> dict:
        """The id, creation time and model name every response object carries."""
        return {"id": cid or completion_id(), "created": now(), "model": self.model_name}

    def record(self, p, records: list[dict], replace: bool = False):
        """Queue trace rows (the writer thread commits them; nothing here waits on the disk): a future, or
        None without a trace store."""
        return self.traces.add(records, p.verification, replace=replace) if self.traces is not None else None

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


def open_server(model, tok, model_name: str, api_key: str | None = None, max_batch: int = 64, max_queue: int = 256,
                traces: str | Path | TraceStore | None = None, jobs: str | Path | JobStore | None = None,
                tasks: dict | None = None, backend: OpenAIBackend | None = None, router=None) -> Server:
    """The shared state of a server (see ``create_app`` for the arguments); nothing starts yet."""
    remote = backend if getattr(backend, "kind", "local") != "local" else None
    engine = scheduler = context = None
    if remote is None:
        engine = Engine(model, tok, max_batch=max_batch)
        scheduler = Scheduler(engine, max_queue=max_queue)
        context = getattr(model.config, "max_position_embeddings", None) or tok.model_max_length
    return Server(model_name, RequestPreparer(model_name, tok, context, remote, TaskResolver(tasks)), api_key,
                  model, tok, engine, scheduler, context, remote,
                  traces=TraceStore(traces) if isinstance(traces, (str, Path)) else traces,
                  jobs=JobStore(jobs) if isinstance(jobs, (str, Path)) else jobs,
                  auto_router=None if remote is not None else router)

def server_of(request: Request) -> Server:
    return request.app.state.server
