"""The engine scheduler as the effort service's ``generate(prompt_ids, n, sampling)``: one flavour for a chat
request (a full queue is a 429; a client that leaves stops its work) and one for a job (it waits for room
in the queue; a cancelled job stops its work)."""

from __future__ import annotations

import asyncio

from fastapi import Request

from ..effort.question import Generate
from ..engine import Completion
from .jobs import JobCancelled, RunningJob
from .protocol import APIError
from .scheduler import QueueFull, Scheduler, Update


class ClientGone(Exception):
    """The HTTP client disconnected while its request was being worked on."""


def submit(scheduler: Scheduler, prompt_ids: list[int], n: int, sampling, stream: bool, queue: str = ""):
    """Queue engine work for a request (``queue``: whose share of the engine it uses); a full queue is a 429."""
    try:
        return scheduler.submit(prompt_ids, n, sampling, stream=stream, owner=queue)
    except QueueFull as e:
        raise APIError(429, f"Server busy: {e} (max_queue; slowthink serve --max-queue)", type="rate_limit_error",
                       code="queue_full", headers={"Retry-After": "1"}) from None


async def wait_final(scheduler: Scheduler, job, request: Request | None = None) -> Update | None:
    """The job's last update; None (and the job cancelled) once ``request``'s client has gone."""
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


def completions_of(update: Update) -> list[Completion]:
    if update.error:
        raise APIError(500, update.error, type="server_error")
    return update.completions


def chat_generate(scheduler: Scheduler, request: Request, queue: str) -> Generate:
    async def generate(prompt_ids, n, sampling):
        update = await wait_final(scheduler, submit(scheduler, prompt_ids, n, sampling, False, queue), request)
        if update is None:
            raise ClientGone
        return completions_of(update)

    return generate


def job_generate(scheduler: Scheduler, job: RunningJob) -> Generate:
    active: set = set()  # this job's engine work in flight (the service may run several at once)

    def cancel_all():
        for work in list(active):
            scheduler.cancel(work)

    job.on_cancel = cancel_all

    async def generate(prompt_ids, n, sampling):
        while True:
            if job.cancelled:
                raise JobCancelled
            try:
                work = scheduler.submit(prompt_ids, n, sampling, stream=False, owner=job.owner)
                break
            except QueueFull:  # interactive requests fill the queue: wait, do not fail
                await asyncio.sleep(0.25)
        active.add(work)
        try:
            if job.cancelled:
                scheduler.cancel(work)
            update = await wait_final(scheduler, work)
        except asyncio.CancelledError:  # server shutting down: free the slots
            scheduler.cancel(work)
            raise
        finally:
            active.discard(work)
        if job.cancelled:
            raise JobCancelled
        return completions_of(update)

    return generate
