"""Asynchronous chat-completion jobs, stored durably in SQLite (WAL) and run by a background worker.

    POST   /v1/jobs        body of a (non-streaming) chat completion -> {"id": "job-...", "status": "queued", ...}
    GET    /v1/jobs/{id}   status: queued | running | succeeded | failed | cancelled; when succeeded,
                           "result" is the full chat.completion object ("error" when failed)
    DELETE /v1/jobs/{id}   cancel a queued or running job (a finished one is returned unchanged)
    GET    /v1/jobs        the latest jobs (?status=...&limit=20)

A job row is committed before ``POST`` answers, and its result is committed before its status says
``succeeded``, so a server killed at any moment (SIGKILL included) loses nothing it reported. On start the
worker puts jobs left ``running`` back in the queue; they run again from the start, with the same
completion id (their trace row, if one was written, is replaced). One server per jobs database.

The worker runs up to ``concurrency`` jobs at a time through the same engine scheduler as interactive
requests (continuous batching); it leaves the rest of the scheduler's queue to them and waits instead of
failing when it is full.
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
from .traces import connect

log = logging.getLogger(__name__)

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- queue order
    id TEXT NOT NULL UNIQUE,
    completion_id TEXT NOT NULL,            -- the result's id, fixed when the job is created
    created REAL NOT NULL,
    model TEXT NOT NULL,
    status TEXT NOT NULL,
    request TEXT NOT NULL,                  -- JSON body as posted
    result TEXT,                            -- JSON chat.completion, when succeeded
    error TEXT,                             -- JSON {message, type, param, code}, when failed
    attempts INTEGER NOT NULL DEFAULT 0,
    started REAL,
    finished REAL
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, seq);
"""


def default_jobs_path(traces_path: str | Path) -> Path:
    """``jobs.db`` in the folder of the trace database."""
    return Path(traces_path).resolve().parent / "jobs.db"


def job_object(row: dict) -> dict:
    """The API's view of a job row."""
    request = json.loads(row["request"])
    return {"id": row["id"], "object": "chat.completion.job", "created": int(row["created"]), "model": row["model"],
            "status": row["status"], "attempts": row["attempts"],
            "started_at": None if row["started"] is None else int(row["started"]),
            "finished_at": None if row["finished"] is None else int(row["finished"]),
            "metadata": request.get("metadata"),
            "result": json.loads(row["result"]) if row["result"] else None,
            "error": json.loads(row["error"]) if row["error"] else None}


class JobStore:
    """The jobs table; every method is one short transaction, serialised by a lock (call them from a
    worker thread, e.g. ``asyncio.to_thread``, not from the event loop)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._conn = connect(self.path, synchronous="FULL")
        self._conn.executescript(SCHEMA)
        self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _one(self, sql: str, args: tuple = ()) -> dict | None:
        row = self._conn.execute(sql, args).fetchone()
        return dict(row) if row is not None else None

    def create(self, body: dict, model: str) -> dict:
        job_id, cid = f"job-{uuid.uuid4().hex}", f"chatcmpl-{uuid.uuid4().hex}"
        with self._lock:
            self._conn.execute("INSERT INTO jobs (id, completion_id, created, model, status, request) "
                               "VALUES (?, ?, ?, ?, 'queued', ?)", (job_id, cid, time.time(), model, json.dumps(body)))
            return self._one("SELECT * FROM jobs WHERE id=?", (job_id,))

    def get(self, job_id: str) -> dict | None:
        with self._lock:
            return self._one("SELECT * FROM jobs WHERE id=?", (job_id,))

    def list(self, limit: int = 20, status: str | None = None) -> list[dict]:
        with self._lock:
            sql, args = "SELECT * FROM jobs", ()
            if status is not None:
                sql, args = sql + " WHERE status=?", (status,)
            return [dict(r) for r in self._conn.execute(sql + " ORDER BY seq DESC LIMIT ?", (*args, limit))]

    def claim_next(self) -> dict | None:
        """The oldest queued job, now marked running (None when the queue is empty)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                row = self._one("SELECT seq FROM jobs WHERE status='queued' ORDER BY seq LIMIT 1")
                if row is not None:
                    self._conn.execute("UPDATE jobs SET status='running', started=?, attempts=attempts+1 "
                                       "WHERE seq=?", (time.time(), row["seq"]))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            return None if row is None else self._one("SELECT * FROM jobs WHERE seq=?", (row["seq"],))

    def requeue_running(self) -> int:
        """After a crash: jobs left running go back to the queue (they run again from the start)."""
        with self._lock:
            return self._conn.execute("UPDATE jobs SET status='queued', started=NULL "
                                      "WHERE status='running'").rowcount

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

    def cancel(self, job_id: str) -> tuple[dict | None, bool]:
        """Cancel a queued or running job: (the job row or None if unknown, whether it was cancelled now)."""
        with self._lock:
            changed = self._conn.execute("UPDATE jobs SET status='cancelled', finished=? "
                                         "WHERE id=? AND status IN ('queued', 'running')",
                                         (time.time(), job_id)).rowcount > 0
            return self._one("SELECT * FROM jobs WHERE id=?", (job_id,)), changed


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

    def cancel(self) -> None:
        self.cancelled = True
        if self.on_cancel is not None:
            self.on_cancel()


Executor = Callable[[RunningJob], Awaitable[dict]]


class JobRunner:
    """The background worker: claims queued jobs (oldest first), at most ``concurrency`` at a time, and
    runs each through ``execute`` (which returns the chat.completion dict or raises APIError)."""

    def __init__(self, store: JobStore, execute: Executor, concurrency: int = 8):
        if concurrency < 1:
            raise ValueError(f"job concurrency must be >= 1, got {concurrency}")
        self.store, self.execute, self.concurrency = store, execute, concurrency
        self.running: dict[str, RunningJob] = {}
        self._wake: asyncio.Event | None = None
        self._loop_task: asyncio.Task | None = None

    async def start(self) -> None:
        self._wake = asyncio.Event()
        requeued = await asyncio.to_thread(self.store.requeue_running)
        if requeued:
            log.warning("jobs: %d job(s) left running by a previous server were queued again", requeued)
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

    async def cancel(self, job_id: str) -> tuple[dict | None, bool]:
        row, changed = await asyncio.to_thread(self.store.cancel, job_id)
        if changed and job_id in self.running:
            self.running[job_id].cancel()
        return row, changed

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
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
