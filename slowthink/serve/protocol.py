"""OpenAI-compatible request/response models (pydantic) and the OpenAI error shape.

Only the fields slowthink implements are declared; unknown request fields are ignored (as vLLM does),
so clients that send e.g. ``user`` keep working. ``metadata`` (OpenAI's string-to-string map) is kept
with the stored trace and may name a task to verify the answer with (``serve.traces``); ``ignore_eos``
is vLLM's extension (generate until the token budget, whatever the model emits), and so is
``thinking_token_budget`` (the most tokens a think block may take before ``</think>`` is forced).

The reasoning goes out under both names servers use: ``reasoning`` (vLLM's current name, also
OpenRouter's) and ``reasoning_content`` (DeepSeek's, vLLM's earlier one), in messages and in stream
deltas; assistant turns sent back in the history may carry either.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_serializer

from ..effort import EFFORTS

Effort = Literal[tuple(EFFORTS)]  # none, minimal, low, medium, high, xhigh, auto
METADATA_MAX_KEYS, METADATA_MAX_KEY, METADATA_MAX_VALUE = 16, 64, 4096  # OpenAI: 16, 64, 512


class APIError(Exception):
    """An error answered in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers  # sent with the error (Retry-After, Connection: close)

    def body(self) -> dict:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


# -- requests ---------------------------------------------------------------------------------------
class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class FunctionCallIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(min_length=1, max_length=64)
    arguments: str = "{}"  # a JSON object as a string, as OpenAI returns it


class ToolCallIn(BaseModel):
    """A tool call of an assistant turn in the history (as ``message.tool_calls`` returned it)."""

    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1, max_length=200)
    type: Literal["function"] = "function"
    function: FunctionCallIn


class FunctionSpec(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict | None = None  # a JSON schema (OpenAI function "parameters")


class ToolSpec(BaseModel):
    """One entry of a request's ``tools``: a function the model may call."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["function"]
    function: FunctionSpec


class FunctionName(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str


class NamedToolChoice(BaseModel):
    """``tool_choice: {"type": "function", "function": {"name": ...}}``: call that function."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["function"]
    function: FunctionName


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    reasoning_content: str | None = None  # assistant turns in the history may carry their reasoning
    reasoning: str | None = None  # the same, under vLLM's current name
    tool_calls: list[ToolCallIn] | None = None  # an assistant turn's calls (serve.tool_calls renders them)
    tool_call_id: str | None = None  # a tool turn: the call it answers

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)

    def to_template(self) -> dict:
        """The dict the chat template renders (``developer`` is the newer name for ``system``)."""
        out = {"role": "system" if self.role == "developer" else self.role, "content": self.text()}
        reasoning = self.reasoning_content if self.reasoning_content is not None else self.reasoning
        if self.role == "assistant" and reasoning is not None:
            out["reasoning_content"] = reasoning
        return out


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    n: int = Field(1, ge=1, le=128)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    max_completion_tokens: int | None = Field(None, ge=1)
    max_tokens: int | None = Field(None, ge=1)  # legacy name of max_completion_tokens
    reasoning_effort: Effort | None = None
    thinking_token_budget: int | None = Field(None, ge=1)  # vLLM's: think tokens before </think> is forced;
    # System-1 (effort none, or auto's System-1 arm) writes no think block and ignores it
    stream: bool = False
    stream_options: StreamOptions | None = None
    metadata: dict[str, str] | None = None  # stored with the trace; "task" + "answer" verify it
    ignore_eos: bool = False  # vLLM's extension: keep generating past the end-of-turn token
    logprobs: bool | None = None  # forwarded to a remote that returns them (serve.remote); the local engine ignores it
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[ToolSpec] | None = Field(None, max_length=128)  # functions the model may call (serve.tool_calls)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None  # accepted; every call the model writes is returned

    @field_validator("tool_choice", mode="before")
    @classmethod
    def _tool_choice(cls, v):  # one clear message instead of one per member of the union
        named = isinstance(v, dict) and v.get("type") == "function" and isinstance(v.get("function"), dict) \
            and isinstance(v["function"].get("name"), str)
        if v is None or v in ("none", "auto", "required") or named:
            return v
        raise ValueError("must be 'none', 'auto', 'required' or {'type': 'function', 'function': {'name': ...}}, "
                         f"got {v!r:.100}")

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, v):
        if v is None:
            return v
        if len(v) > METADATA_MAX_KEYS:
            raise ValueError(f"at most {METADATA_MAX_KEYS} key-value pairs")
        for k, val in v.items():
            if not k or len(k) > METADATA_MAX_KEY:
                raise ValueError(f"keys must be 1 to {METADATA_MAX_KEY} characters, got {k!r:.80}")
            if len(val) > METADATA_MAX_VALUE:
                raise ValueError(f"value of {k!r} is longer than {METADATA_MAX_VALUE} characters")
        return v

    @field_validator("stop")
    @classmethod
    def _stop(cls, v):
        if v is None:
            return []
        stops = [v] if isinstance(v, str) else v
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        return [s for s in stops if s]

    @property
    def stop_list(self) -> list[str]:
        return list(self.stop or [])

    @property
    def budget(self) -> int | None:
        """The most tokens generated for a choice: ``max_completion_tokens``, or its legacy name."""
        return self.max_completion_tokens or self.max_tokens


class FeedbackRequest(BaseModel):
    """``POST /v1/feedback``: a later verdict on one choice of a stored completion."""

    model_config = ConfigDict(extra="ignore")
    completion_id: str = Field(min_length=1, max_length=200)
    choice_index: int = Field(0, ge=0)
    correct: StrictBool
    comment: str | None = Field(None, max_length=4096)


# -- responses --------------------------------------------------------------------------------------
class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    reasoning_content: str | None = None
    reasoning: str | None = None  # the same text: set both with ``assistant_message``
    tool_calls: list[dict] | None = None  # [{"id", "type": "function", "function": {"name", "arguments"}}]

    @model_serializer(mode="wrap")
    def _drop_empty_tool_calls(self, handler):  # a message without calls has no tool_calls key, as OpenAI's
        out = handler(self)
        if out.get("tool_calls") is None:
            out.pop("tool_calls", None)
        return out


def assistant_message(reasoning: str | None, content: str | None,
                      tool_calls: list[dict] | None = None) -> AssistantMessage:
    return AssistantMessage(content=content, reasoning_content=reasoning, reasoning=reasoning, tool_calls=tool_calls)


def reasoning_delta(text: str) -> dict:
    """A stream delta carrying reasoning text, under both names."""
    return {"reasoning_content": text, "reasoning": text}


def sse(data: dict) -> str:
    return f"data: {json.dumps(data)}\n\n"


def chunk_event(meta: dict, index: int, delta: dict, finish_reason: str | None = None, logprobs=None,
                usage_slot: bool = False, fields: dict | None = None) -> str:
    """One ``chat.completion.chunk`` SSE event for choice ``index``; ``usage_slot``: with ``"usage": null``
    (a stream whose last chunk carries the usage); ``fields``: more top-level fields (slowthink's own)."""
    extra = {"usage": None} if usage_slot else {}
    return sse({**meta, "object": "chat.completion.chunk", **extra, **(fields or {}),
                "choices": [{"index": index, "delta": delta, "finish_reason": finish_reason, "logprobs": logprobs}]})


def usage_event(meta: dict, usage: dict) -> str:
    """The last chunk of a stream that asked for its usage: no choices."""
    return sse({**meta, "object": "chat.completion.chunk", "choices": [], "usage": usage})


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: str
    logprobs: None = None


class CompletionTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    completion_tokens_details: CompletionTokensDetails


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    route: dict | None = None  # slowthink: what reasoning_effort high/auto ran and why (None otherwise)
    tool_use: list[dict] | None = None  # slowthink: per choice, what the built-in tools ran (serve.episodes)

    @model_serializer(mode="wrap")
    def _drop_empty_tool_use(self, handler):  # only requests that ran built-in tools carry it
        out = handler(self)
        if out.get("tool_use") is None:
            out.pop("tool_use", None)
        return out


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "slowthink"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def make_usage(prompt_tokens: int, completion_tokens: int, reasoning_tokens: int) -> Usage:
    return Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                 total_tokens=prompt_tokens + completion_tokens,
                 completion_tokens_details=CompletionTokensDetails(reasoning_tokens=reasoning_tokens))


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())
