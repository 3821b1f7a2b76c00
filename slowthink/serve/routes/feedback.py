"""``POST /v1/feedback``: a later verdict on one choice of a stored completion (``serve.traces``), by the key
that made it: another key's completion is a 404, as one that does not exist."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from pydantic import ValidationError

from ..prepare import from_validation
from ..protocol import APIError, FeedbackRequest
from ..state import server_of

router = APIRouter()


@router.post("/v1/feedback")
async def feedback(request: Request):
    server = server_of(request)
    owner = server.auth(request)
    body = await server.body(request)
    try:
        fb = FeedbackRequest.model_validate(body)
    except ValidationError as e:
        raise from_validation(e.errors()) from None
    if server.traces is None:
        raise APIError(400, "This server keeps no traces (started without a trace database).", code="traces_disabled")
    found = await asyncio.wrap_future(server.traces.feedback(fb.completion_id, fb.choice_index, fb.correct, fb.comment,
                                                             owner))
    if not found:
        raise APIError(404, f"No stored completion '{fb.completion_id}' with choice {fb.choice_index}.",
                       param="completion_id", code="completion_not_found")
    return {"object": "feedback", "completion_id": fb.completion_id, "choice_index": fb.choice_index,
            "correct": fb.correct, "comment": fb.comment}
