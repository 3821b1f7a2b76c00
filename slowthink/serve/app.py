"""OpenAI-compatible HTTP server: ``GET /v1/models`` and ``POST /v1/chat/completions`` (plain and SSE).

    SLOWTHINK_API_KEY=K slowthink serve --model RUN_DIR/model --host 127.0.0.1 --port 8000   # or --api-key-file

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="K")
    r = client.chat.completions.create(model="model", messages=[...], reasoning_effort="low")
    r.choices[0].message.reasoning, r.choices[0].message.content

``reasoning_effort`` means what ``slowthink.effort`` says (the CLI's ``--reasoning-effort`` too):

    effort     what runs                                                  default tokens per sample
    none       System-1 (empty think block; answer)                       256
    minimal    System-2, the think block forced closed after 64 tokens    256
    low        System-2 (think, </think>, answer)                         256
    medium     System-2 (the default when absent)                         1024
    high       System-2 self-consistency: majority of 8 samples, T=0.7    1024
    xhigh      System-2 self-consistency: majority of 16 samples, T=0.7   1024
    auto       the router saved beside the model (MODEL_DIR/router) picks per question; without one, medium

A single sample runs at the request's temperature (default 1, as OpenAI's); a temperature the client sets
applies to every sample of a vote too. ``thinking_token_budget`` (vLLM's name) caps the think block: at
the budget ``</think>`` is appended and the model answers (budget forcing; minimal has 64).
``max_completion_tokens`` (or legacy ``max_tokens``) bounds everything generated for a choice: every
sample of a vote and the router's signals included (how it is shared: ``effort.budget``); without it each
sample gets the table's tokens, capped by what the prompt leaves of the model's context. An explicit
budget beyond that room is a 400. ``usage`` bills every generated token; ``route`` says what ran and
why for votes, auto and forced think blocks.

Output: ``message.reasoning`` (vLLM's name; ``message.reasoning_content`` carries the same text) is the
text before ``</think>`` (None for System-1), ``message.content`` the answer after it; streaming sends
reasoning deltas (both names) then ``delta.content`` chunks whose concatenation equals the non-streaming
message exactly. Efforts that run more than one engine job (votes, auto, a thinking budget) stream once
the answer is chosen.

Modules: ``state`` (what the routes share: ``Server`` on ``app.state.server``, the lifespan), ``routes``
(one ``APIRouter`` each: models, chat completions, jobs, feedback), ``keys`` (who may call, who owns what),
``limits`` (every bound), ``body`` (bytes -> JSON object), ``guard`` (Host check, connection settings),
``scrub`` (secrets out of relayed text and logs), ``prepare`` (validation: JSON -> ``Prepared``), ``tool_calls``
(OpenAI ``tools``: into the prompt, calls out of the answer), ``episodes`` (``--builtin-tools`` run inside a
request), ``answering`` (requests through the effort service), ``generation`` (the
scheduler as the service's ``generate``), ``responses`` (completion objects, trace rows, SSE events),
``errors`` (handlers), this one (``create_app``, ``serve_main``).

Errors use OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``: 400 bad JSON / invalid
fields / prompt too long / a limit passed, 401 bad API key, 404 unknown model (or job, or stored
completion), 408 body too slow, 413 body too large, 415 not JSON, 429 queue full or a key's limit reached
(with ``Retry-After``); never a stack trace. Every bound (body size, messages, characters, stop strings,
work per request, requests per key, engine slots, jobs) is a named setting in ``serve.limits``; keys and
their ownership of jobs and traces are ``serve.keys``; what is refused before a route runs, ``serve.body``
and ``serve.guard``.

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

import functools
import sys
from pathlib import Path

from fastapi import FastAPI

from .errors import install_error_handlers
from .guard import HostCheck, uvicorn_settings
from .jobs import JobRunner, JobStore
from .keys import LOOPBACK_NAMES, Keys, check_exposure, is_loopback
from .limits import Limits
from .remote import LOCAL, OpenAIBackend
from .routes import ROUTERS, execute_job
from .state import open_server
from .traces import TraceStore

__all__ = ["create_app", "serve_main"]


def create_app(model, tok, model_name: str, api_key: str | Keys | dict | None = None, max_batch: int = 64,
               max_queue: int = 256, traces: str | Path | TraceStore | None = None,
               jobs: str | Path | JobStore | None = None, job_concurrency: int = 8,
               tasks: dict | None = None, backend: OpenAIBackend | None = None, router=None,
               limits: Limits | None = None, allowed_hosts: list[str] | None = None, builtin_tools=None):
    """The FastAPI app. ``api_key``: one key, ``{name: key}`` (``serve.keys``), or None (no authentication).
    ``backend``: a remote OpenAI-compatible server to forward generation to (``model`` and ``tok`` are then
    unused and may be None); None: the local engine on ``model``.
    ``traces``: a trace database (path or store) to record every returned choice in
    (None: no traces, and ``/v1/feedback`` answers 400). ``jobs``: a jobs database for ``/v1/jobs`` (None:
    no jobs API), run ``job_concurrency`` at a time. ``tasks``: extra ``{name: task}`` that
    ``metadata.task`` may name, besides the built-in tasks. ``router``: a trained router for
    ``reasoning_effort="auto"`` (None: auto runs as medium). ``limits``: the server's bounds
    (``serve.limits``); ``allowed_hosts``: the ``Host`` names it answers to (None: any). ``builtin_tools``: a
    ``slowthink.tools.ToolSet`` the server runs itself inside requests (``serve.episodes``), or None."""
    limits = limits or Limits()
    server = open_server(model, tok, model_name, api_key, max_batch, max_queue, traces, jobs, tasks, backend, router,
                         limits, builtin_tools)
    if server.jobs is not None:
        server.runner = JobRunner(server.jobs, functools.partial(execute_job, server), concurrency=job_concurrency,
                                  attempts=limits.job_attempts, retention=limits.job_retention)
        if server.traces is not None:
            server.runner.on_lost = lambda job, result: server.traces.discard(result["id"])
    app = FastAPI(title="slowthink", lifespan=lambda app: server.running(), docs_url=None, redoc_url=None,
                  openapi_url=None)
    install_error_handlers(app)
    for routes in ROUTERS:
        app.include_router(routes)
    if allowed_hosts is not None:
        app.add_middleware(HostCheck, allowed=allowed_hosts)
    app.state.server = server
    app.state.engine, app.state.scheduler, app.state.backend = server.engine, server.scheduler, server.remote or LOCAL
    app.state.traces, app.state.jobs, app.state.runner = server.traces, server.jobs, server.runner
    return app


def hosts_for(host: str, allowed_hosts: list[str] | None) -> list[str] | None:
    """The ``Host`` names to answer to: the given ones; by default the loopback names when bound to loopback
    (a web page that rebinds its own name to 127.0.0.1 is refused), any host otherwise; ``*``: any."""
    if allowed_hosts is None:
        return list(LOOPBACK_NAMES) if is_loopback(host) else None
    return None if "*" in allowed_hosts else allowed_hosts


def load_backend(backend: str, model_dir: str, base_url: str | None, remote_api_key: str | None,
                 remote_timeout: float, remote_logprobs: bool, device: str):
    """(model, tokenizer, router, remote, default trace database) of ``--backend``."""
    if backend == "openai":
        remote = OpenAIBackend(base_url or "", model_dir, api_key=remote_api_key, timeout=remote_timeout,
                               supports_logprobs=remote_logprobs)
        return None, None, None, remote, Path.cwd() / "traces.db"
    if backend != "local":
        raise ValueError(f"--backend must be 'local' or 'openai', got {backend!r}")
    from ..models import load_model
    from ..router import find_router
    from .traces import default_traces_path

    model, tok = load_model(model_dir, device=device)
    model.eval()
    router = find_router(model_dir)
    checked = ([a.name for a in router.arms if a.verifier] + [s for s in router.signals if s == "s2check"]
               if router is not None else [])
    if checked:  # a checker reads the task's claims; a chat request carries no parsed problem
        raise ValueError(f"{model_dir}/router uses a checker ({', '.join(checked)}), which the server cannot "
                         "run; train the router it serves without --checker")
    return model, tok, router, None, default_traces_path(model_dir)


def own_task(model_dir: str) -> dict:
    """The task the served model was trained on (its ``model/task.json``), built with its recorded arguments, so
    ``metadata.task`` naming it verifies against the model's own data (a data set's path, a task file)."""
    from ..tasks.record import read_record
    from ..tasks.registry import get_task

    record = read_record(model_dir)
    if record is None or not (record.task_args or record.task.endswith(".py") or ":" in record.task):
        return {}
    try:
        task = get_task(record.task, **record.task_args)
    except Exception as e:  # noqa: BLE001 - serving goes on; only verification of this task is unavailable
        print(f"warning: the model's task {record.task!r} cannot be built here ({e}); requests naming it in "
              "metadata.task will not be verified", file=sys.stderr)
        return {}
    return {record.task: task, task.name: task}


def serve_main(model_dir: str, host: str = "127.0.0.1", port: int = 8000, api_key: str | Keys | dict | None = None,
               max_batch: int = 64, max_queue: int = 256, model_name: str | None = None,
               traces: str | Path | None = "default", jobs: str | Path | None = "default",
               job_concurrency: int = 8, backend: str = "local", base_url: str | None = None,
               remote_api_key: str | None = None, remote_timeout: float = 600.0,
               remote_logprobs: bool = False, device: str = "cpu", limits: Limits | None = None,
               allowed_hosts: list[str] | None = None, allow_unauthenticated: bool = False, builtin_tools=None) -> int:
    """Load a model folder and serve it until interrupted (the ``slowthink serve`` command).
    ``traces``/``jobs``: database paths; "default" is ``<model dir>/../traces.db`` and ``jobs.db`` beside
    the trace database; None turns the trace store / jobs API off.
    ``backend="openai"``: ``model_dir`` is the remote model's name, generation goes to ``base_url`` (see
    ``serve.remote``), and the default trace database is ``./traces.db``. ``device``: where the local model runs.
    Beyond loopback without a key it refuses to start unless ``allow_unauthenticated``. ``builtin_tools``: a
    ``slowthink.tools.ToolSet`` run inside requests (``serve.episodes``)."""
    import uvicorn

    from .jobs import default_jobs_path
    from .keys import as_keys

    keys, limits = as_keys(api_key), limits or Limits()
    for warning in check_exposure(host, keys, allow_unauthenticated):
        print(warning, file=sys.stderr)
    model, tok, router, remote, default_traces = load_backend(backend, model_dir, base_url, remote_api_key,
                                                              remote_timeout, remote_logprobs, device)
    name = model_name or (model_dir if remote is not None else Path(model_dir).resolve().name)
    traces = default_traces if traces == "default" else traces
    if jobs == "default":
        jobs = default_jobs_path(traces if traces is not None else default_traces)
    app = create_app(model, tok, name, api_key=keys, max_batch=max_batch, max_queue=max_queue, traces=traces,
                     jobs=jobs, job_concurrency=job_concurrency, tasks=None if remote else own_task(model_dir),
                     backend=remote, router=router, limits=limits,
                     allowed_hosts=hosts_for(host, allowed_hosts), builtin_tools=builtin_tools)
    print(f"serving '{name}' on http://{host}:{port}/v1"
          + (f" ({len(keys.by_name)} API key(s) required)" if keys else " (no API key)")
          + (f", forwarded to {remote.describe_for_log()}" if remote is not None else ""))
    print(f"traces: {traces or 'off'}   jobs: {jobs or 'off'}   reasoning_effort=auto: "
          + ("forwarded" if remote is not None else f"router ({', '.join(router.arm_names)})" if router is not None
             else "no router beside the model, runs medium (slowthink train router --model MODEL_DIR)")
          + (f"   built-in tools: {', '.join(builtin_tools.names)}" if builtin_tools is not None else ""))
    uvicorn.run(app, host=host, port=port, log_level="info", **uvicorn_settings(limits))
    return 0
