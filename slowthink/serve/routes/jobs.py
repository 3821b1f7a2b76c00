"""``/v1/jobs``: durable asynchronous chat completions (``serve.jobs``), each visible only to the key that made
it (another key's job is a 404, as one that does not exist), and how one job runs."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Request

from ..answering import answer
from ..generation import job_generate
from ..jobs import STATUSES, JobStore, RunningJob, job_object, progress_of
from ..protocol import APIError
from ..remote import remote_job
from ..state import Server, server_of

router = APIRouter()


def job_store(request: Request) -> tuple[JobStore, str]:
    """The jobs database and the caller's key name, after the API key; a 400 when the server runs no jobs."""
    server = server_of(request)
    owner = server.auth(request)
    if server.jobs is None:
        raise APIError(400, "This server runs no jobs (started without a jobs database).", code="jobs_disabled")
    return server.jobs, owner


def job_not_found(job_id: str) -> APIError:
    return APIError(404, f"No job '{job_id}'.", param="job_id", code="job_not_found")


@router.post("/v1/jobs")
async def create_job(request: Request):
    (store, owner), server = job_store(request), server_of(request)
    p = await server.prepared(request, owner)  # a bad request is a 400 now, not a failed job later
    if p.req.stream:
        raise APIError(400, "Jobs are not streamed: poll GET /v1/jobs/{id} instead (drop 'stream').", param="stream")
    row = await asyncio.to_thread(store.create, p.stored(), server.model_name, owner, server.limits.max_queued_jobs)
    server.runner.wake()
    return job_object(row)


@router.get("/v1/jobs")
async def list_jobs(request: Request, limit: int = 20, status: str | None = None):
    store, owner = job_store(request)
    if not 1 <= limit <= 100:
        raise APIError(400, "limit must be in 1..100", param="limit")
    if status is not None and status not in STATUSES:
        raise APIError(400, f"status must be one of {', '.join(STATUSES)}", param="status")
    rows = await asyncio.to_thread(store.list, limit, status, owner)
    return {"object": "list", "data": [job_object(r) for r in rows]}


@router.get("/v1/jobs/{job_id}")
async def get_job(request: Request, job_id: str):
    store, owner = job_store(request)
    row = await asyncio.to_thread(store.get, job_id, owner)
    if row is None:
        raise job_not_found(job_id)
    return job_object(row)


@router.delete("/v1/jobs/{job_id}")
async def delete_job(request: Request, job_id: str):
    """Cancel a queued or running job (it is returned, cancelled); delete a finished one."""
    store, owner = job_store(request)
    row, cancelled = await server_of(request).runner.cancel(job_id, owner)
    if row is None:
        raise job_not_found(job_id)
    if cancelled:
        return job_object(row)
    await asyncio.to_thread(store.delete, job_id, owner)
    return {"id": job_id, "object": "chat.completion.job.deleted", "deleted": True}


async def execute_job(server: Server, job: RunningJob) -> dict:
    """Run one job to its chat.completion dict; its trace is committed before it returns. An APIError (e.g.
    the server now serves another model) fails the job."""
    t0 = time.monotonic()
    p = server.prepare(job.body, job.owner)
    meta = server.meta(job.row["completion_id"])

    def record_now(ran, records):
        fut = server.record(ran, records, replace=True)
        return None if fut is None else asyncio.wrap_future(fut)

    if server.remote is not None:
        return await remote_job(server.remote, p, job, meta, t0, lambda records: record_now(p, records))
    job_id = job.row["id"]

    def persist(transcripts):  # after each tool turn (a worker thread): a restart resumes from here
        server.jobs.save_progress(job_id, {"choices": [t.turns for t in transcripts]})

    result, ran, records = await answer(server, p, job_generate(server.scheduler, job), meta, t0, "job",
                                        progress_of(job.row), persist)
    committed = record_now(ran, records)
    if committed is not None:  # the trace is committed before the job says succeeded
        await committed
    return result.model_dump()
