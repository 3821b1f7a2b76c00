"""``GET /v1/models``: the one served model."""

from __future__ import annotations

from fastapi import APIRouter, Request

from ..protocol import ModelCard, ModelList
from ..state import server_of

router = APIRouter()


@router.get("/v1/models")
async def list_models(request: Request):
    server = server_of(request)
    server.auth(request)
    return ModelList(data=[ModelCard(id=server.model_name, created=server.created)]).model_dump()
