"""One background thread owns the Engine; HTTP handlers talk to it through thread-safe queues.

The engine is not thread-safe, so exactly one thread (``Scheduler._run``) calls ``add``/``step``/
``cancel``. Each loop iteration it admits newly submitted jobs, applies cancellations, runs one
``engine.step()`` (one decode step for every running sequence, so concurrent HTTP requests share
batches: continuous batching), then pushes to each job's asyncio queue, through
``loop.call_soon_threadsafe``, an :class:`Update` with the tokens each sequence produced since the last
push (streaming jobs only) and, when the request is done, its completions.

Back-pressure: at most ``max_queue`` jobs may wait for a slot (submitted, no token yet); ``submit``
raises :class:`QueueFull` beyond that, which the app answers with 429.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from dataclasses import dataclass, field

from ..engine import Completion, Engine, Request, SamplingParams

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """More requests are waiting than the server admits; answered with HTTP 429."""


@dataclass
class Update:
    new_tokens: list[list[int]] | None = None  # per sequence, tokens since the previous update
    completions: list[Completion] | None = None  # set once, when the request is done
    error: str | None = None  # the engine failed; the job is over


@dataclass(eq=False)
class Job:
    prompt_ids: list[int]
    n: int
    sampling: SamplingParams
    stream: bool
    loop: asyncio.AbstractEventLoop
    updates: asyncio.Queue = field(default_factory=asyncio.Queue)
    request: Request | None = None  # the engine's handle, once admitted (scheduler thread only)
    sent: list[int] = field(default_factory=list)  # tokens already pushed, per sequence
    started: bool = False  # produced a token (no longer counted as waiting)
    over: bool = False


class Scheduler:
    def __init__(self, engine: Engine, max_queue: int = 256):
        self.engine, self.max_queue = engine, max_queue
        self._lock = threading.Lock()
        self._inbox: deque[Job] = deque()
        self._cancels: deque[Job] = deque()
        self._waiting = 0  # jobs submitted that have not produced a token yet
        self._wake = threading.Event()
        self._stop = False
        self._active: list[Job] = []
        self._thread: threading.Thread | None = None

    # -- called from the event loop -------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._stop = False
            self._thread = threading.Thread(target=self._run, name="slowthink-engine", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    @property
    def waiting(self) -> int:
        return self._waiting

    def submit(self, prompt_ids: list[int], n: int, sampling: SamplingParams, stream: bool) -> Job:
        """Queue a job (call from a coroutine); raises QueueFull when ``max_queue`` jobs already wait."""
        job = Job(prompt_ids, n, sampling, stream, asyncio.get_running_loop())
        with self._lock:
            if self._waiting >= self.max_queue:
                raise QueueFull(f"{self._waiting} requests are already waiting; retry later")
            self._waiting += 1
            self._inbox.append(job)
        self._wake.set()
        return job

    def cancel(self, job: Job) -> None:
        """Stop a job (client gone); safe to call more than once or after it finished."""
        with self._lock:
            self._cancels.append(job)
        self._wake.set()

    # -- scheduler thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop:
            self._take_inbox()
            if not self.engine.has_unfinished():
                self._wake.wait(timeout=1.0)
                self._wake.clear()
                continue
            try:
                self.engine.step()
            except Exception as e:  # never let one bad batch kill the server thread
                log.exception("engine step failed")
                self._fail_all(f"engine error: {type(e).__name__}")
                continue
            self._publish()
        self._fail_all("server shutting down")

    def _take_inbox(self) -> None:
        with self._lock:
            new, self._inbox = list(self._inbox), deque()
            cancels, self._cancels = list(self._cancels), deque()
        for job in new:
            try:
                job.request = self.engine.add(job.prompt_ids, job.n, job.sampling)
            except Exception as e:  # noqa: BLE001 - reported to that request only
                self._finish(job, Update(error=f"{type(e).__name__}: {e}"))
                continue
            job.sent = [0] * job.n
            self._active.append(job)
        for job in cancels:
            if job.over:
                continue
            if job.request is not None and not job.request.done:
                self.engine.cancel(job.request)
            self._finish(job, Update(completions=job.request.completions if job.request else None))
        if cancels:
            self._active = [j for j in self._active if not j.over]

    def _publish(self) -> None:
        still = []
        for job in self._active:
            req = job.request
            if not job.started and any(s.token_ids for s in req.sequences):
                job.started = True
                self._dec_waiting()
            if job.stream:
                new = [s.token_ids[k:] for s, k in zip(req.sequences, job.sent)]
                if any(new):
                    job.sent = [len(s.token_ids) for s in req.sequences]
                    self._push(job, Update(new_tokens=[list(t) for t in new]))
            if req.done:
                self._finish(job, Update(completions=req.completions))
            else:
                still.append(job)
        self._active = still

    def _fail_all(self, message: str) -> None:
        for job in self._active:
            if job.request is not None and not job.request.done:
                try:
                    self.engine.cancel(job.request)
                except Exception:
                    log.exception("cancel failed")
            self._finish(job, Update(error=message))
        self._active = []
        with self._lock:
            rest, self._inbox = list(self._inbox), deque()
        for job in rest:
            self._finish(job, Update(error=message))

    def _finish(self, job: Job, update: Update) -> None:
        if job.over:
            return
        job.over = True
        if not job.started:
            job.started = True
            self._dec_waiting()
        self._push(job, update)

    def _dec_waiting(self) -> None:
        with self._lock:
            self._waiting -= 1

    @staticmethod
    def _push(job: Job, update: Update) -> None:
        try:
            job.loop.call_soon_threadsafe(job.updates.put_nowait, update)
        except RuntimeError:  # the event loop is closed (shutdown); nobody is listening
            pass
