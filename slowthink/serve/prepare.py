"""A chat-completion request from bytes to a ``Prepared`` one, every failure an ``APIError`` raised
before anything is queued: the API key (401), the JSON body and its fields (400), the model name (404),
the chat template, the context length and the completion budget (400), the verification metadata (400).

``reasoning_effort`` (meanings in ``slowthink.effort``) picks the mode and the default budget, capped by
what the prompt leaves of the model's context; an explicit ``max_completion_tokens`` (or ``max_tokens``)
beyond it is a 400. With a remote backend the remote renders the prompt and checks the context, so only the
body, the model name and the metadata are checked here.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass

from fastapi import Request
from pydantic import ValidationError

from ..engine import SamplingParams
from ..tokenizer import render_prompt
from .protocol import APIError, ChatCompletionRequest
from .traces import TaskResolver, Verification, verification_from_metadata

from ..effort import AUTO_FALLBACK, DEFAULT_EFFORT, EFFORTS
from ..chat import Mode

# per sample, without max_completion_tokens; the effort service shares a budget between samples
EFFORT_BUDGET = {name: (setting or EFFORTS[AUTO_FALLBACK]).max_tokens for name, setting in EFFORTS.items()}


def effort_mode(effort: str) -> Mode:
    """The mode a request is prepared in; auto's router may answer in System-1 instead."""
    return (EFFORTS[effort] or EFFORTS[AUTO_FALLBACK]).mode


@dataclass
class Prepared:
    """A validated chat request, ready for the scheduler."""

    req: ChatCompletionRequest
    effort: str
    mode: str
    messages: list[dict]  # as the chat template renders them (stored with the trace)
    prompt_ids: list[int]
    sampling: SamplingParams | None  # None with a remote backend
    verification: Verification | None
    remote_body: dict | None = None  # what a remote backend is sent


def check_auth(request: Request, api_key: str | None) -> None:
    if api_key is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    # constant-time: the comparison must not leak how much of a guessed key was right
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
        raise APIError(401, "Incorrect or missing API key: send 'Authorization: Bearer <key>'.",
                       code="invalid_api_key")


async def json_body(request: Request) -> dict:
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError) as e:
        raise APIError(400, f"Invalid JSON body: {e}", code="invalid_json") from None
    except RecursionError:  # json's decoder recurses per nesting level: "[[[[..." is the caller's fault
        raise APIError(400, "Invalid JSON body: nested too deeply.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(400, "The request body must be a JSON object.")
    return body


def from_validation(errors) -> APIError:
    """pydantic's (or FastAPI's) validation errors as one 400 naming the first bad field."""
    errs = list(errors)
    if not errs:
        return APIError(400, "Invalid request.")
    first = errs[0]
    loc = [str(x) for x in first.get("loc", ()) if x != "body"]
    if first.get("type") == "json_invalid":
        return APIError(400, "Invalid JSON body.", code="invalid_json")
    param = ".".join(loc) or None
    msg = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()) if x != 'body') or 'body'}: {e.get('msg')}"
                    for e in errs[:5])
    return APIError(400, f"Invalid request: {msg}", param=param)


class RequestPreparer:
    """``prepare(body) -> Prepared`` for one served model. ``tok`` and ``context`` (the model's maximum
    positions) are unused with a ``remote`` backend."""

    def __init__(self, model_name: str, tok, context: int | None, remote, tasks: TaskResolver):
        self.model_name, self.tok, self.context, self.remote, self.tasks = model_name, tok, context, remote, tasks

    def _verification(self, req: ChatCompletionRequest, messages: list[dict], mode: str) -> Verification | None:
        try:
            return verification_from_metadata(req.metadata, messages, mode, self.tasks)
        except ValueError as e:
            raise APIError(400, str(e), param="metadata", code="invalid_metadata") from None

    def __call__(self, body: dict) -> Prepared:
        try:
            req = ChatCompletionRequest.model_validate(body)
        except ValidationError as e:
            raise from_validation(e.errors()) from None
        if req.model != self.model_name:
            raise APIError(404, f"The model '{req.model}' does not exist; this server serves "
                                f"'{self.model_name}'.", param="model", code="model_not_found")
        effort = req.reasoning_effort or DEFAULT_EFFORT
        mode = effort_mode(effort)
        messages = [m.to_template() for m in req.messages]
        if self.remote is not None:  # the remote renders, checks the context length and picks its budget
            verification = self._verification(req, messages, mode)
            return Prepared(req, effort, mode, messages, [], None, verification,
                            self.remote.request_body(body, req))
        try:
            prompt_ids = render_prompt(self.tok, messages, mode)
        except Exception as e:  # noqa: BLE001 - any template error is the caller's input
            raise APIError(400, f"Could not render the messages with the chat template: {e}",
                           param="messages") from None
        context = self.context
        room = context - len(prompt_ids)
        if room < 1:
            raise APIError(400, f"This model's maximum context length is {context} tokens; the messages "
                                f"take {len(prompt_ids)}.", param="messages", code="context_length_exceeded")
        asked = req.budget
        if asked is not None and asked > room:
            raise APIError(400, f"This model's maximum context length is {context} tokens; you asked for "
                                f"{asked} completion tokens but the messages take {len(prompt_ids)}.",
                           param="max_completion_tokens", code="context_length_exceeded")
        sampling = SamplingParams(
            max_tokens=asked or min(EFFORT_BUDGET[effort], room),
            temperature=1.0 if req.temperature is None else req.temperature,
            top_p=1.0 if req.top_p is None else req.top_p, stop=tuple(req.stop_list), seed=req.seed,
            ignore_eos=req.ignore_eos)
        verification = self._verification(req, messages, mode)
        return Prepared(req, effort, mode, messages, prompt_ids, sampling, verification)
