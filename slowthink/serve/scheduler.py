"""One background thread owns the Engine; HTTP handlers talk to it through thread-safe queues.

The engine is not thread-safe, so exactly one thread (``Scheduler._run``) calls ``add``/``step``/
``cancel``. Each loop iteration it takes newly submitted jobs and cancellations, admits waiting work into
free engine slots, runs one ``engine.step()`` (one decode step for every running sequence, so concurrent
HTTP requests share batches: continuous batching), then pushes to each job's asyncio queue, through
``loop.call_soon_threadsafe``, an :class:`Update` with the tokens each sequence produced since the last
push (streaming jobs only) and, when the job is done, its completions.

Fair admission. A job's ``n`` sequences are split into pieces of at most ``slots_per_request`` (each piece
one engine request; the first keeps the job's seed, the others derive theirs from it), and only the
scheduler decides when a piece enters the engine. Waiting pieces are queued per owner (an API key, or a
client address on a server without keys) and admitted round-robin: one piece per owner per turn, and
within an owner one piece per job per turn, so no request waits behind all the rows of another. An owner
may take slots beyond its fair share (``max_batch`` / owners active in the last ``ACTIVE_WINDOW`` seconds)
only while ``reserved`` slots stay free, so another owner's new request starts at once instead of
waiting for the long samples ahead of it to end. An owner that holds nothing may always start a piece that
fits. Alone, an owner uses the whole batch; a newcomer then waits for the first of its pieces to end.

Back-pressure: at most ``max_queue`` jobs may wait (submitted, no token yet); ``submit`` raises
:class:`QueueFull` beyond that, which the app answers with 429 and ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from ..engine import Completion, Engine, Request, SamplingParams, derive_seed

log = logging.getLogger(__name__)

ACTIVE_WINDOW = 10.0  # seconds an owner that submitted work counts towards the fair share


class QueueFull(Exception):
    """More requests are waiting than the server admits; answered with HTTP 429."""


@dataclass
class Update:
    new_tokens: list[list[int]] | None = None  # per sequence, tokens since the previous update
    completions: list[Completion] | None = None  # set once, when the request is done
    error: str | None = None  # the engine failed; the job is over


@dataclass(eq=False)
class Piece:
    """``n`` of a job's sequences, admitted into the engine together (the job keeps its pieces in order)."""

    job: Job
    n: int
    sampling: SamplingParams
    request: Request | None = None  # the engine's handle, once admitted (scheduler thread only)

    def unfinished(self) -> int:
        return self.n if self.request is None else self.request.unfinished


@dataclass(eq=False)
class Job:
    prompt_ids: list[int]
    n: int
    sampling: SamplingParams
    stream: bool
    loop: asyncio.AbstractEventLoop
    owner: str = ""
    updates: asyncio.Queue = field(default_factory=asyncio.Queue)
    pieces: list[Piece] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)  # tokens already pushed, per sequence
    started: bool = False  # produced a token (no longer counted as waiting)
    over: bool = False

    def split(self, size: int) -> None:
        """Cut the job into pieces of at most ``size`` sequences."""
        s = self.sampling
        for i, start in enumerate(range(0, self.n, size)):
            sampling = s if i == 0 or s.seed is None else dataclasses.replace(s, seed=derive_seed(s.seed, "piece", i))
            self.pieces.append(Piece(self, min(size, self.n - start), sampling))
        self.sent = [0] * self.n

    def started_any(self) -> bool:
        return any(s.token_ids for p in self.pieces if p.request is not None for s in p.request.sequences)

    def token_ids(self) -> list[list[int]]:
        """Every sequence's tokens so far (none for a piece not admitted yet)."""
        out: list[list[int]] = []
        for p in self.pieces:
            out += [list(s.token_ids) for s in p.request.sequences] if p.request else [[] for _ in range(p.n)]
        return out

    @property
    def done(self) -> bool:
        return all(p.request is not None and p.request.done for p in self.pieces)

    def completions(self) -> list[Completion]:
        """One per sequence; a piece never admitted (the job was cancelled first) gives empty cancelled ones."""
        out: list[Completion] = []
        for p in self.pieces:
            out += p.request.completions if p.request else [Completion([], [], "", "cancelled") for _ in range(p.n)]
        return out


class Scheduler:
    """The engine's thread and its fair admission; ``slots_per_request`` and ``reserved`` default to a
    quarter of the engine's ``max_batch`` each."""

    def __init__(self, engine: Engine, max_queue: int = 256, slots_per_request: int | None = None,
                 reserved: int | None = None):
        quarter = max(1, engine.max_batch // 4)
        self.engine, self.max_queue = engine, max_queue
        self.slots_per_request = min(engine.max_batch, slots_per_request or quarter)
        self.reserved = quarter if reserved is None else min(reserved, engine.max_batch - 1)
        self._lock = threading.Lock()
        self._inbox: deque[Job] = deque()
        self._cancels: deque[Job] = deque()
        self._waiting = 0  # jobs submitted that have not produced a token yet
        self._seen: dict[str, float] = {}  # owner -> when it last submitted
        self._wake = threading.Event()
        self._stop = False
        self._queues: dict[str, deque[Job]] = {}  # owner -> its jobs with pieces still to admit (thread only)
        self._turn: deque[str] = deque()  # owners with pieces to admit, in round-robin order
        self._active: list[Job] = []  # jobs with a piece in the engine
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

    def submit(self, prompt_ids: list[int], n: int, sampling: SamplingParams, stream: bool, owner: str = "") -> Job:
        """Queue a job (call from a coroutine); raises QueueFull when ``max_queue`` jobs already wait."""
        job = Job(prompt_ids, n, sampling, stream, asyncio.get_running_loop(), owner)
        job.split(self.slots_per_request)
        with self._lock:
            if self._waiting >= self.max_queue:
                raise QueueFull(f"{self._waiting} requests are already waiting; retry later")
            self._waiting += 1
            self._seen[owner] = time.monotonic()
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
            self._admit()
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
            if job.owner not in self._queues:
                self._queues[job.owner] = deque()
                self._turn.append(job.owner)
            self._queues[job.owner].append(job)
        for job in cancels:
            if job.over:
                continue
            self._cancel_pieces(job)
            self._finish(job, Update(completions=job.completions()))
        if cancels:
            self._active = [j for j in self._active if not j.over]

    # -- fair admission --------------------------------------------------------------------------------
    def _held(self) -> Counter:
        held: Counter = Counter()
        for job in self._active:
            held[job.owner] += sum(p.unfinished() for p in job.pieces if p.request is not None)
        return held

    def _may_take(self, owner: str, rows: int, free: int, held: Counter) -> bool:
        now = time.monotonic()
        with self._lock:
            recent = {o for o, t in self._seen.items() if now - t < ACTIVE_WINDOW}
        active = recent | set(self._turn) | {o for o, h in held.items() if h}
        share = max(1, self.engine.max_batch // max(1, len(active)))
        return held[owner] == 0 or held[owner] + rows <= share or free - rows >= self.reserved

    def _next_piece(self, owner: str) -> Piece | None:
        """The next piece of ``owner``'s first job in its turn (finished or cancelled jobs dropped)."""
        jobs = self._queues[owner]
        while jobs and (jobs[0].over or all(p.request is not None for p in jobs[0].pieces)):
            jobs.popleft()
        return next(p for p in jobs[0].pieces if p.request is None) if jobs else None

    def _admit(self) -> None:
        held = self._held()
        free = self.engine.max_batch - sum(held.values())
        progressed = True
        while free > 0 and self._turn and progressed:
            progressed = False
            for _ in range(len(self._turn)):
                owner = self._turn[0]
                self._turn.rotate(-1)
                piece = self._next_piece(owner)
                if piece is None:
                    self._turn.remove(owner)
                    del self._queues[owner]
                    continue
                if piece.n <= free and self._may_take(owner, piece.n, free, held):
                    self._start(piece)
                    self._queues[owner].rotate(-1)  # the owner's next job goes next
                    held[owner] += piece.n
                    free -= piece.n
                    progressed = True

    def _start(self, piece: Piece) -> None:
        job = piece.job
        try:
            piece.request = self.engine.add(job.prompt_ids, piece.n, piece.sampling)
        except Exception as e:  # noqa: BLE001 - reported to that request only
            self._cancel_pieces(job)
            self._finish(job, Update(error=f"{type(e).__name__}: {e}"))
            return
        if job not in self._active:
            self._active.append(job)

    # -- results ---------------------------------------------------------------------------------------
    def _publish(self) -> None:
        still = []
        for job in self._active:
            if job.over:
                continue
            if not job.started and job.started_any():
                job.started = True
                self._dec_waiting()
            if job.stream:
                tokens = job.token_ids()
                new = [t[k:] for t, k in zip(tokens, job.sent)]
                if any(new):
                    job.sent = [len(t) for t in tokens]
                    self._push(job, Update(new_tokens=new))
            if job.done:
                self._finish(job, Update(completions=job.completions()))
            else:
                still.append(job)
        self._active = still

    def _cancel_pieces(self, job: Job) -> None:
        for p in job.pieces:
            if p.request is not None and not p.request.done:
                try:
                    self.engine.cancel(p.request)
                except Exception:
                    log.exception("cancel failed")

    def _fail_all(self, message: str) -> None:
        with self._lock:
            rest, self._inbox = list(self._inbox), deque()
        queued = [j for jobs in self._queues.values() for j in jobs]
        for job in self._active + queued + rest:
            self._cancel_pieces(job)
            self._finish(job, Update(error=message))
        self._active, self._queues, self._turn = [], {}, deque()

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
