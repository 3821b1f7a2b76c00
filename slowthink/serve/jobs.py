"""Asynchronous chat-completion jobs, stored durably in SQLite (WAL) and run by a background worker.

    POST   /v1/jobs        body of a (non-streaming) chat completion -> {"id": "job-...", "status": "queued", ...}
    GET    /v1/jobs/{id}   status: queued | running | succeeded | failed | cancelled; when succeeded,
                           "result" is the full chat.completion object ("error" when failed)
    DELETE /v1/jobs/{id}   cancel a queued or running job; delete a finished one
    GET    /v1/jobs        the latest jobs (?status=...&limit=20)

A job belongs to the API key that made it (by the key's name): other keys neither see nor change it. A
key may have ``max_queued_jobs`` queued or running at once (429 beyond). A job row is committed before
``POST`` answers, and its result is committed before its status says ``succeeded``, so a server killed at
any moment (SIGKILL included) loses nothing it reported. On start the worker puts jobs left ``running``
back in the queue; they run again from the start, with the same completion id (their trace row, if one
was written, is replaced), unless they were started ``job_attempts`` times already (they fail then). A job
with built-in tools commits its finished tool turns (``progress``) as it goes and resumes from them
(``serve.episodes``); ``GET`` shows how many turns each choice has finished.
Finished jobs older than ``job_retention`` seconds are deleted. One server per jobs database.

A job stores its request as validated (unknown fields dropped), never the raw body. The worker runs up to
``concurrency`` jobs at a time through the same engine scheduler as interactive requests (continuous
batching), picking next the oldest job of the key with the fewest running; it leaves the rest of the
scheduler's queue to them and waits instead of failing when it is full.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from .protocol import APIError, error_body
from .traces import OWNER_COLUMN, add_column, connect, create_private

log = logging.getLogger(__name__)

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
ACTIVE, FINISHED = ("queued", "running"), ("succeeded", "failed", "cancelled")
SCHEMA_VERSION = 3
PROGRESS_COLUMN = ("progress", "TEXT")  # JSON: a tool-using job's finished turns per choice (serve.episodes)
SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- queue order
    id TEXT NOT NULL UNIQUE,
    completion_id TEXT NOT NULL,            -- the result's id, fixed when the job is created
    created REAL NOT NULL,
    model TEXT NOT NULL,
    status TEXT NOT NULL,
    request TEXT NOT NULL,                  -- JSON of the request as validated
    result TEXT,                            -- JSON chat.completion, when succeeded
    error TEXT,                             -- JSON {message, type, param, code}, when failed
    attempts INTEGER NOT NULL DEFAULT 0,
    started REAL,
    finished REAL,
    owner TEXT NOT NULL DEFAULT ''          -- the name of the API key that made it ('' without keys)
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, seq);
"""
# the next job: the oldest queued one of the owner with the fewest running
NEXT = ("SELECT seq FROM jobs AS q WHERE status='queued' ORDER BY "
        "(SELECT COUNT(*) FROM jobs AS r WHERE r.status='running' AND r.owner=q.owner), seq LIMIT 1")


class TooManyJobs(APIError):
    def __init__(self, limit: int):
        super().__init__(429, f"This API key has {limit} jobs queued or running, this server's limit "
                              "max_queued_jobs (slowthink serve --max-queued-jobs); retry once some finish.",
                         type="rate_limit_error", code="max_queued_jobs_exceeded", headers={"Retry-After": "5"})


def default_jobs_path(traces_path: str | Path) -> Path:
    """``jobs.db`` in the folder of the trace database."""
    return Path(traces_path).resolve().parent / "jobs.db"


def progress_of(row: dict) -> list[list[dict]] | None:
    """A tool-using job's persisted turns per choice (None before its first tool turn)."""
    return json.loads(row["progress"])["choices"] if row.get("progress") else None


def progress_summary(progress: str | None) -> dict | None:
    """What the API shows of a job's progress: per choice, the tool turns finished and the tools they called."""
    if not progress:
        return None
    choices = json.loads(progress)["choices"]
    return {"turns": [len(turns) for turns in choices],
            "tool_calls": [[c["name"] for t in turns for c in t["calls"]] for turns in choices]}


def job_object(row: dict) -> dict:
    """The API's view of a job row."""
    request = json.loads(row["request"])
    return {"id": row["id"], "object": "chat.completion.job", "created": int(row["created"]), "model": row["model"],
            "status": row["status"], "attempts": row["attempts"],
            "started_at": None if row["started"] is None else int(row["started"]),
            "finished_at": None if row["finished"] is None else int(row["finished"]),
            "metadata": request.get("metadata"),
            "progress": progress_summary(row.get("progress")),
            "result": json.loads(row["result"]) if row["result"] else None,
            "error": json.loads(row["error"]) if row["error"] else None}


class JobStore:
    """The jobs table; every method is one short transaction, serialised by a lock (call them from a
    worker thread, e.g. ``asyncio.to_thread``, not from the event loop). Methods that take an ``owner``
    see only that owner's jobs."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        create_private(self.path)
        self._conn = connect(self.path, synchronous="FULL")
        self._conn.executescript(SCHEMA)
        add_column(self._conn, "jobs", *OWNER_COLUMN)
        add_column(self._conn, "jobs", *PROGRESS_COLUMN)
        self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _one(self, sql: str, args: tuple = ()) -> dict | None:
        row = self._conn.execute(sql, args).fetchone()
        return dict(row) if row is not None else None

    def _transaction(self, work: Callable[[], object]):
        """``work()`` in one write transaction (under the lock)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                out = work()
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            return out

    def create(self, request: dict, model: str, owner: str = "", max_active: int | None = None) -> dict:
        """A new queued job; :class:`TooManyJobs` when ``owner`` already has ``max_active`` queued or running."""
        job_id, cid = f"job-{uuid.uuid4().hex}", f"chatcmpl-{uuid.uuid4().hex}"

        def insert():
            if max_active is not None and self._one(
                    "SELECT COUNT(*) AS n FROM jobs WHERE owner=? AND status IN (?, ?)", (owner, *ACTIVE))["n"] >= max_active:
                raise TooManyJobs(max_active)
            self._conn.execute("INSERT INTO jobs (id, completion_id, created, model, status, request, owner) "
                               "VALUES (?, ?, ?, ?, 'queued', ?, ?)",
                               (job_id, cid, time.time(), model, json.dumps(request), owner))
            return self._one("SELECT * FROM jobs WHERE id=?", (job_id,))

        return self._transaction(insert)

    def get(self, job_id: str, owner: str = "") -> dict | None:
        with self._lock:
            return self._one("SELECT * FROM jobs WHERE id=? AND owner=?", (job_id, owner))

    def list(self, limit: int = 20, status: str | None = None, owner: str = "") -> list[dict]:
        with self._lock:
            sql, args = "SELECT * FROM jobs WHERE owner=?", (owner,)
            if status is not None:
                sql, args = sql + " AND status=?", (owner, status)
            return [dict(r) for r in self._conn.execute(sql + " ORDER BY seq DESC LIMIT ?", (*args, limit))]

    def claim_next(self) -> dict | None:
        """The next queued job (:data:`NEXT`), now marked running (None when the queue is empty)."""

        def claim():
            row = self._one(NEXT)
            if row is not None:
                self._conn.execute("UPDATE jobs SET status='running', started=?, attempts=attempts+1 "
                                   "WHERE seq=?", (time.time(), row["seq"]))
            return row

        row = self._transaction(claim)
        with self._lock:
            return None if row is None else self._one("SELECT * FROM jobs WHERE seq=?", (row["seq"],))

    def requeue_running(self, attempts: int | None = None) -> tuple[int, int]:
        """After a crash: jobs left running go back to the queue (they run again from the start), except
        those started ``attempts`` times already, which fail. Returns (queued again, failed)."""
        gave_up = json.dumps(error_body(f"the job was started {attempts} times and the server stopped each time "
                                        "(job_attempts)", "server_error", code="job_attempts_exceeded")["error"])

        def requeue():
            failed = 0 if attempts is None else self._conn.execute(
                "UPDATE jobs SET status='failed', error=?, finished=? WHERE status='running' AND attempts>=?",
                (gave_up, time.time(), attempts)).rowcount
            return self._conn.execute("UPDATE jobs SET status='queued', started=NULL "
                                      "WHERE status='running'").rowcount, failed

        return self._transaction(requeue)

    def save_progress(self, job_id: str, progress: dict) -> bool:
        """Store a running job's progress (committed before this returns); False when it is no longer running."""
        with self._lock:
            return self._conn.execute("UPDATE jobs SET progress=? WHERE id=? AND status='running'",
                                      (json.dumps(progress), job_id)).rowcount > 0

    def finish(self, job_id: str, result: dict) -> bool:
        """Store the result; False when the job is no longer running (cancelled meanwhile)."""
        with self._lock:
            return self._conn.execute("UPDATE jobs SET status='succeeded', result=?, finished=? "
                                      "WHERE id=? AND status='running'",
                                      (json.dumps(result), time.time(), job_id)).rowcount > 0

    def fail(self, job_id: str, error: dict) -> bool:
        with self._lock:
            return self._conn.execute("UPDATE jobs SET status='failed', error=?, finished=? "
                                      "WHERE id=? AND status='running'",
                                      (json.dumps(error), time.time(), job_id)).rowcount > 0

    def cancel(self, job_id: str, owner: str = "") -> tuple[dict | None, bool]:
        """Cancel a queued or running job: (the job row or None if unknown, whether it was cancelled now)."""
        with self._lock:
            changed = self._conn.execute("UPDATE jobs SET status='cancelled', finished=? "
                                         "WHERE id=? AND owner=? AND status IN (?, ?)",
                                         (time.time(), job_id, owner, *ACTIVE)).rowcount > 0
            return self._one("SELECT * FROM jobs WHERE id=? AND owner=?", (job_id, owner)), changed

    def delete(self, job_id: str, owner: str = "") -> bool:
        """Delete a finished job; False when there is none (unknown, another owner's, or not finished)."""
        with self._lock:
            return self._conn.execute("DELETE FROM jobs WHERE id=? AND owner=? AND status IN (?, ?, ?)",
                                      (job_id, owner, *FINISHED)).rowcount > 0

    def purge(self, older_than: float) -> int:
        """Delete the jobs that finished more than ``older_than`` seconds ago; how many."""
        with self._lock:
            return self._conn.execute("DELETE FROM jobs WHERE status IN (?, ?, ?) AND finished < ?",
                                      (*FINISHED, time.time() - older_than)).rowcount


class JobCancelled(Exception):
    """Raised inside a running job's execution once it was cancelled."""


class RunningJob:
    """A job being executed: its row, and a cancel hook the executor sets once it has engine work."""

    def __init__(self, row: dict):
        self.row = row
        self.cancelled = False
        self.on_cancel: Callable[[], None] | None = None
        self.task: asyncio.Task | None = None

    @property
    def body(self) -> dict:
        return json.loads(self.row["request"])

    @property
    def owner(self) -> str:
        return self.row["owner"]

    def cancel(self) -> None:
        self.cancelled = True
        if self.on_cancel is not None:
            self.on_cancel()


Executor = Callable[[RunningJob], Awaitable[dict]]


class JobRunner:
    """The background worker: claims queued jobs (:data:`NEXT`), at most ``concurrency`` at a time, and
    runs each through ``execute`` (which returns the chat.completion dict or raises APIError). A job left
    running by a stopped server is started again unless it was started ``attempts`` times; finished jobs
    older than ``retention`` seconds are deleted (checked every ``PURGE_EVERY`` seconds)."""

    PURGE_EVERY = 60.0

    def __init__(self, store: JobStore, execute: Executor, concurrency: int = 8, attempts: int | None = None,
                 retention: float | None = None):
        if concurrency < 1:
            raise ValueError(f"job concurrency must be >= 1, got {concurrency}")
        self.store, self.execute, self.concurrency = store, execute, concurrency
        self.attempts, self.retention = attempts, retention
        self.running: dict[str, RunningJob] = {}
        self._wake: asyncio.Event | None = None
        self._loop_task: asyncio.Task | None = None
        self._purged: float | None = None  # when the last purge ran

    async def start(self) -> None:
        self._wake = asyncio.Event()
        requeued, failed = await asyncio.to_thread(self.store.requeue_running, self.attempts)
        if requeued or failed:
            log.warning("jobs: %d job(s) left running by a previous server were queued again, %d failed after %s "
                        "attempts", requeued, failed, self.attempts)
        self._loop_task = asyncio.create_task(self._loop(), name="slowthink-jobs")

    async def stop(self) -> None:
        """Stop claiming and abandon running jobs (they stay 'running' in the database and run again at
        the next start)."""
        tasks = [t for t in [self._loop_task, *(j.task for j in self.running.values())] if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loop_task = None

    def wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def cancel(self, job_id: str, owner: str = "") -> tuple[dict | None, bool]:
        row, changed = await asyncio.to_thread(self.store.cancel, job_id, owner)
        if changed and job_id in self.running:
            self.running[job_id].cancel()
        return row, changed

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self._purge()
                while len(self.running) < self.concurrency:
                    row = await asyncio.to_thread(self.store.claim_next)
                    if row is None:
                        break
                    job = RunningJob(row)
                    self.running[row["id"]] = job
                    job.task = asyncio.create_task(self._run_one(job), name=f"job {row['id']}")
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - e.g. the database is locked for long: retry
                log.exception("jobs: claiming failed")
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=1.0)
            except asyncio.TimeoutError:
                pass

    async def _purge(self) -> None:
        if self.retention is None or (self._purged is not None and time.monotonic() - self._purged < self.PURGE_EVERY):
            return
        self._purged = time.monotonic()
        gone = await asyncio.to_thread(self.store.purge, self.retention)
        if gone:
            log.info("jobs: deleted %d finished job(s) older than %g s (job_retention)", gone, self.retention)

    async def _run_one(self, job: RunningJob) -> None:
        job_id = job.row["id"]
        try:
            try:
                result = await self.execute(job)
            except JobCancelled:
                return
            except APIError as e:
                await asyncio.to_thread(self.store.fail, job_id, e.body()["error"])
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001
                log.exception("job %s failed", job_id)
                await asyncio.to_thread(self.store.fail, job_id,
                                        error_body(f"internal error: {type(e).__name__}", "server_error")["error"])
                return
            if not await asyncio.to_thread(self.store.finish, job_id, result) and self.on_lost is not None:
                self.on_lost(job, result)
        finally:
            self.running.pop(job_id, None)
            self.wake()

    on_lost: Callable[[RunningJob, dict], None] | None = None  # result made, but the job was cancelled meanwhile
