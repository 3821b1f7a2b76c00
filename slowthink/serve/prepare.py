"""A chat-completion request from its JSON object to a ``Prepared`` one, every failure an ``APIError`` raised
before anything is queued: the fields (400), the model name (404), the size of the input (messages,
characters, stop strings: 400, each error naming its limit), control tokens in the text (400), the chat
template, the context length and the completion budget (400), the work the request asks for
(``max_request_tokens``, 400) and the verification metadata (400). The body itself (size, type, JSON,
Unicode) is checked before, in ``serve.body``.

The input is bounded before the chat template renders it: the message count, and all characters together
(no token is longer than the tokenizer's longest, so past ``context`` × that many characters a prompt
cannot fit). Text a client sends must not contain the tokenizer's special tokens (``<|im_end|>``, ...):
rendered, they would be real control tokens, and a user message could end its turn and open a forged one.

``reasoning_effort`` (meanings in ``slowthink.effort``) picks the mode and the default budget, capped by
what the prompt leaves of the model's context; an explicit ``max_completion_tokens`` (or ``max_tokens``)
beyond it is a 400. With a remote backend the remote renders the prompt and checks the context, so only the
fields, the model name, the explicit limits and the metadata are checked here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic import ValidationError

from ..chat import Mode
from ..effort import AUTO_FALLBACK, DEFAULT_EFFORT, EFFORTS
from ..engine import SamplingParams
from ..tokenizer import render_prompt
from .limits import Limits, planned_tokens
from .protocol import APIError, ChatCompletionRequest
from .tool_calls import ToolUse, template_messages, tool_use
from .traces import TaskResolver, Verification, verification_from_metadata

# per sample, without max_completion_tokens; the effort service shares a budget between samples
EFFORT_BUDGET = {name: (setting or EFFORTS[AUTO_FALLBACK]).max_tokens for name, setting in EFFORTS.items()}
FLAG = "slowthink serve --"


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
    owner: str = ""  # the name of the API key that sent it (its traces and jobs are that key's)
    tools: ToolUse | None = None  # the tools the prompt shows; the answer's calls become tool_calls

    def stored(self) -> dict:
        """The request as validated (unknown fields dropped): what a job keeps to run it again."""
        return self.req.model_dump(mode="json", exclude_unset=True)


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


def over_limit(limit: str, value, what: str, param: str | None = None) -> APIError:
    """A 400 that names the setting the request went past."""
    return APIError(400, f"{what}; this server's limit is {limit}={value} ({FLAG}{limit.replace('_', '-')}).",
                    param=param, code=f"{limit}_exceeded")


def control_tokens(tok) -> list[str]:
    """The tokenizer's special tokens (named ones and every added token marked special), longest first."""
    added = getattr(tok, "added_tokens_decoder", {}) or {}
    names = set(getattr(tok, "all_special_tokens", [])) | {t.content for t in added.values() if t.special}
    return sorted((t for t in names if t), key=len, reverse=True)


def longest_token(tok) -> int:
    """Characters of the tokenizer's longest token (bytes, for byte-level vocabularies: never fewer)."""
    return max((len(t) for t in tok.get_vocab()), default=1) if tok is not None else 1


def client_texts(req: ChatCompletionRequest) -> list[tuple[str, str, str]]:
    """(param, where, text) of every text a request carries into the prompt."""
    out = []
    for i, m in enumerate(req.messages):
        d = m.to_template()
        out += [(f"messages.{i}.{key}", f"messages[{i}].{key}", d[key]) for key in ("content", "reasoning_content")
                if d.get(key)]
        out += [(f"messages.{i}.tool_calls.{j}", f"messages[{i}].tool_calls[{j}]",
                 c.function.name + c.function.arguments) for j, c in enumerate(m.tool_calls or [])]
    out += [(f"tools.{j}", f"tools[{j}]", json.dumps(t.model_dump(exclude_none=True), ensure_ascii=False))
            for j, t in enumerate(req.tools or [])]
    return out


class RequestPreparer:
    """``preparer(body, owner) -> Prepared`` for one served model. ``tok`` and ``context`` (the model's maximum
    positions) are unused with a ``remote`` backend; ``router``: auto's, whose arms bound its work."""

    def __init__(self, model_name: str, tok, context: int | None, remote, tasks: TaskResolver,
                 limits: Limits | None = None, router=None, builtin_tools: list[dict] | None = None):
        self.model_name, self.tok, self.context, self.remote, self.tasks = model_name, tok, context, remote, tasks
        self.limits, self.router = limits or Limits(), router
        self.builtin_tools = list(builtin_tools or [])  # schemas of the tools the server runs (serve.episodes)
        self.specials = control_tokens(tok) if tok is not None else []
        self.max_chars = self.limits.max_prompt_chars
        if self.max_chars is None and remote is None and context:
            self.max_chars = context * longest_token(tok)

    def _verification(self, req: ChatCompletionRequest, messages: list[dict], mode: str) -> Verification | None:
        try:
            return verification_from_metadata(req.metadata, messages, mode, self.tasks)
        except ValueError as e:
            raise APIError(400, str(e), param="metadata", code="invalid_metadata") from None

    def validate(self, body: dict) -> ChatCompletionRequest:
        """The request's fields, counted before pydantic builds a message object each."""
        messages = body.get("messages")
        if isinstance(messages, list) and len(messages) > self.limits.max_messages:
            raise over_limit("max_messages", self.limits.max_messages, f"The request has {len(messages)} messages",
                             "messages")
        try:
            req = ChatCompletionRequest.model_validate(body)
        except ValidationError as e:
            raise from_validation(e.errors()) from None
        if req.model != self.model_name:
            raise APIError(404, f"The model '{req.model}' does not exist; this server serves "
                                f"'{self.model_name}'.", param="model", code="model_not_found")
        for i, stop in enumerate(req.stop_list):
            if len(stop) > self.limits.max_stop_chars:
                raise over_limit("max_stop_chars", self.limits.max_stop_chars,
                                 f"Stop string {i} has {len(stop)} characters", "stop")
        return req

    def check_text(self, req: ChatCompletionRequest) -> None:
        """The input's size and its control tokens, before rendering: every text the client sent (messages,
        their tool calls, the tool schemas), errors naming where it is in the request."""
        texts = client_texts(req)
        chars = sum(len(t) for _, _, t in texts)
        if self.max_chars is not None and chars > self.max_chars:
            raise over_limit("max_prompt_chars", self.max_chars, f"The messages have {chars} characters", "messages")
        for param, where, text in texts:
            special = next((s for s in self.specials if s in text), None)
            if special is not None:
                raise APIError(400, f"{where} contains {special!r}, a control token of this model's chat "
                                    "template; remove it (as text it would end or forge a turn).",
                               param=param, code="control_token_in_text")

    def check_work(self, req: ChatCompletionRequest, effort: str, room: int | None) -> None:
        """``max_request_tokens`` against the most the request may generate (``room``: None with a remote
        backend, whose efforts are its own: then n × max_completion_tokens, when set)."""
        if room is None:
            planned = req.n * req.budget if req.budget is not None else 0
        else:
            planned = planned_tokens(effort, req.n, req.budget, req.temperature, room, self.router)
        limit = self.limits.max_request_tokens
        if planned > limit:
            raise over_limit("max_request_tokens", limit, f"This request may generate {planned} tokens (n={req.n}, "
                             f"reasoning_effort={effort!r}, every sample of every choice counted); lower n, "
                             "max_completion_tokens or reasoning_effort", "n")

    def __call__(self, body: dict, owner: str = "") -> Prepared:
        """The prepared request of ``owner`` (the name of the key that sent it)."""
        req = self.validate(body)
        effort = req.reasoning_effort or DEFAULT_EFFORT
        mode = effort_mode(effort)
        self.check_text(req)
        tools = tool_use(req, self.builtin_tools)
        messages = template_messages(req.messages, tools)  # the tool schemas and tool turns as the template sees them
        if self.remote is not None:  # the remote renders, checks the context length and picks its budget
            self.check_work(req, effort, None)
            return Prepared(req, effort, mode, messages, [], None, self._verification(req, messages, mode),
                            self.remote.request_body(req), owner, tools)
        prompt_ids = self.render(messages, mode)
        room = self.room(req, prompt_ids, tools)
        self.check_work(req, effort, room)
        sampling = SamplingParams(
            max_tokens=req.budget or min(EFFORT_BUDGET[effort], room),
            temperature=1.0 if req.temperature is None else req.temperature,
            top_p=1.0 if req.top_p is None else req.top_p, stop=tuple(req.stop_list), seed=req.seed,
            ignore_eos=req.ignore_eos)
        verification = self._verification(req, messages, mode)
        return Prepared(req, effort, mode, messages, prompt_ids, sampling, verification, owner=owner, tools=tools)

    def render(self, messages: list[dict], mode: str) -> list[int]:
        try:
            return render_prompt(self.tok, messages, mode)
        except Exception as e:  # noqa: BLE001 - any template error is the caller's input
            raise APIError(400, f"Could not render the messages with the chat template: {e}",
                           param="messages") from None

    def room(self, req: ChatCompletionRequest, prompt_ids: list[int], tools: ToolUse | None = None) -> int:
        """Tokens the prompt leaves of the context (400 when none, or fewer than the budget asked for)."""
        context = self.context
        room = context - len(prompt_ids)
        if room < 1:
            # the tool schemas are easily most of a small model's context: say so, and how to leave them out
            why = "" if tools is None else (", the system prompt's tool schemas included (" + ", ".join(
                s["function"]["name"] for s in tools.schemas) + "); send fewer tools or tool_choice 'none', or "
                "serve a model with a longer context")
            raise APIError(400, f"This model's maximum context length is {context} tokens; the messages "
                                f"take {len(prompt_ids)}{why}.", param="messages", code="context_length_exceeded")
        asked = req.budget
        if asked is not None and asked > room:
            raise APIError(400, f"This model's maximum context length is {context} tokens; you asked for "
                                f"{asked} completion tokens but the messages take {len(prompt_ids)}.",
                           param="max_completion_tokens", code="context_length_exceeded")
        return room
