"""A remote OpenAI-compatible server as slowthink's generation backend (``slowthink serve --backend openai``).

    SLOWTHINK_REMOTE_API_KEY=KEY slowthink serve --backend openai --base-url http://gpu-box:8000/v1 \\
        --model deepseek-r1-distill [--remote-timeout 600] [--remote-logprobs] [--served-model-name NAME]

Any server that speaks ``POST /v1/chat/completions`` (vLLM, Ollama, llama.cpp, a hosted API, another
slowthink server) sits behind slowthink's own server: the same endpoints (``/v1/models``,
``/v1/chat/completions`` plain and SSE, ``/v1/jobs``, ``/v1/feedback``), API key, error shapes and trace
store, but the text comes from the remote. What is forwarded:

* ``messages`` as the client sent them, ``model`` = ``--model`` (clients ask for the served name, which is
  ``--served-model-name`` or ``--model``);
* ``n``, ``temperature``, ``top_p``, ``stop``, ``seed``, ``max_completion_tokens`` / ``max_tokens`` (under
  the name the client used), ``reasoning_effort``, ``thinking_token_budget`` and ``ignore_eos`` when the client
  set them (nothing is
  added, so a remote that rejects unknown fields only sees what the client chose); ``logprobs`` /
  ``top_logprobs`` when the backend is declared able to return them (``--remote-logprobs``), otherwise a
  request for them is a 400 (:func:`require_logprobs`).

**reasoning_effort.** Passed through verbatim. A slowthink remote honours it exactly (``none`` = System-1:
no think block, answer directly). vLLM / hosted reasoning models map it to their own switch where they
have one; a remote that ignores it (a plain chat model, or a reasoning model that always thinks) still
thinks or not as it likes: ``none`` is then *not* guaranteed to skip reasoning, and the stored trace says
what happened (its ``mode`` is System-2 whenever reasoning came back). Without ``reasoning_effort`` the
remote's own default applies (for slowthink: ``medium``, with its 1024-token budget; slowthink's local
effort budgets are not imposed on a remote).

**Reasoning in the answer.** The remote's ``reasoning_content`` (DeepSeek / vLLM; also ``reasoning``, the
newer vLLM / OpenRouter name) becomes ``message.reasoning`` and ``message.reasoning_content``. A remote
that puts the thinking inside ``content`` as ``<think>…</think>answer`` (no reasoning parser) is split:
the think block becomes the reasoning, the rest ``content`` (both stripped). Only content that *starts* with ``<think>``
is split; a think block whose opening tag was in the prompt (``…</think>answer`` alone) is passed on
unchanged. Streaming applies the same rule incrementally (text that could still be ``<think>`` or
``</think>`` is held back a few characters), so the joined deltas equal the non-streamed message.

**Streaming** is forwarded chunk by chunk as SSE: slowthink's own ids, one ``role`` chunk per choice, then
the remote's reasoning (as ``delta.reasoning`` and ``delta.reasoning_content``) and ``delta.content``
pieces and each choice's ``finish_reason``; the usage chunk (the remote is always asked for it, to fill
the trace) reaches the client only when it asked with ``stream_options.include_usage``; ``[DONE]`` last. A client that disconnects closes the
remote stream (a slowthink or vLLM remote then stops generating).

**Errors** keep OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``:

    remote 4xx (400, 404, 413, 422, 429, ...)   same status, the remote's message / type / param / code
    remote 401 / 403 / 407                      502 remote_auth_failed (slowthink's --remote-api-key is
                                                wrong: not the client's key, so not a 401 to the client)
    remote 5xx, or a body that is not JSON     502 remote_error / remote_bad_response
    remote unreachable (refused, DNS, reset)   502 remote_unreachable
    remote too slow (--remote-timeout)          504 remote_timeout

An error after a stream has started arrives as one ``data: {"error": ...}`` event (as with the local
engine) and no trace is stored. Whatever of the remote's is relayed, stored or logged goes through
``OpenAIBackend.clean`` first: its key, bearer tokens and URL credentials become ``***``, and its URL "the
remote server" (clients never learn where it is; the log shows it without credentials).

**Traces and usage.** Every returned choice is stored once (``source`` chat / job, ``stream``), with the
remote's token counts. ``completion`` is rebuilt as ``reasoning + "\\n</think>\\n\\n" + answer`` (the
reasoning alone when the think block never closed) so exported traces train like local ones. The remote
reports usage per request, not per choice: with ``n > 1`` per-choice token counts are shares in proportion
to the text, and when the remote does not report ``reasoning_tokens`` they are estimated the same way.

**Log-probs.** ``backend.supports_logprobs`` (``--remote-logprobs``; default off, since e.g. a slowthink
remote returns none) says whether the remote returns token log-probs. Code that needs them calls
:func:`require_logprobs` and gets :class:`LogprobsUnavailable` (a 400 in a request) instead of silently
missing numbers. The local engine always has them.

**Tools.** ``tools``, ``tool_choice`` and ``parallel_tool_calls`` are forwarded as the client sent them,
and so are tool turns of the history; the remote's ``message.tool_calls`` (streamed: its
``delta.tool_calls`` pieces, as they come) are relayed unchanged, and the trace stores them as
``<tool_call>`` markup after the content. The server's own ``--builtin-tools`` need the local engine.

Limitations: only chat completions are forwarded (no response_format / multimodal parts, as for the local
engine); prompt-length checks are the remote's; ``--model`` must name a model the remote serves
(its 404 is passed on).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..chat import Mode, THINK_CLOSE, split_think
from .jobs import JobCancelled
from .protocol import APIError, assistant_message, chunk_event, error_body, reasoning_delta, sse, usage_event
from .responses import DONE, event_stream
from .scrub import redact_url, scrub
from .tool_calls import call_markup

log = logging.getLogger(__name__)

FORWARDED = ("n", "temperature", "top_p", "seed", "max_completion_tokens", "max_tokens", "reasoning_effort",
             "thinking_token_budget")
REMOTE = "the remote server"  # how clients see the remote: never its URL


# -- capabilities ------------------------------------------------------------------------------------
class LogprobsUnavailable(APIError):
    """Log-probs were needed from a backend that cannot return them (a 400 when raised in a request)."""

    def __init__(self, message: str):
        super().__init__(400, message, param="logprobs", code="logprobs_unsupported")


@dataclass(frozen=True)
class LocalBackend:
    """The in-process engine (``--backend local``): it always has per-token log-probs."""

    kind: str = "local"
    supports_logprobs: bool = True

    def describe(self) -> str:
        return "local engine"


LOCAL = LocalBackend()


def require_logprobs(backend, what: str = "this") -> None:
    """Raise :class:`LogprobsUnavailable` unless ``backend`` (an app's ``app.state.backend``; None = local)
    can return token log-probs."""
    if backend is None or getattr(backend, "supports_logprobs", False):
        return
    describe = backend.describe() if hasattr(backend, "describe") else repr(backend)
    raise LogprobsUnavailable(
        f"{what} needs token log-probs, but the backend ({describe}) cannot return them: start slowthink "
        f"serve with --remote-logprobs if the remote server supports 'logprobs' (vLLM and OpenAI do; a "
        f"slowthink server does not), or use the local backend.")


def _remote_reasoning(obj: dict) -> str | None:
    for key in ("reasoning_content", "reasoning"):  # DeepSeek / older vLLM; newer vLLM / OpenRouter
        if isinstance(obj.get(key), str):
            return obj[key]
    return None


def _merge(remote: str | None, think: str | None) -> str | None:
    return None if remote is None and think is None else (remote or "") + (think or "")


class _ChoiceText:
    """One streamed choice: turns the remote's deltas into (reasoning, content) deltas."""

    def __init__(self):
        self.remote_reasoning: str | None = None
        self.raw = ""
        self.sent_r = self.sent_c = 0
        self.finish_reason: str | None = None
        self._calls: dict[int, dict] = {}  # streamed tool calls by index

    def add_calls(self, deltas: list[dict]) -> None:
        """Join streamed ``delta.tool_calls`` pieces: the id, type and name once, the arguments in pieces."""
        for d in deltas:
            call = self._calls.setdefault(d.get("index", 0), {"id": None, "type": "function",
                                                              "function": {"name": "", "arguments": ""}})
            call["id"] = d.get("id") or call["id"]
            fn = d.get("function") or {}
            call["function"]["name"] += fn.get("name") or ""
            call["function"]["arguments"] += fn.get("arguments") or ""

    def calls(self) -> list[dict] | None:
        return [self._calls[k] for k in sorted(self._calls)] or None

    def current(self, final: bool) -> tuple[str | None, str]:
        think, content = split_think(self.raw, final)
        return _merge(self.remote_reasoning, think), content

    def feed(self, reasoning: str | None, content: str | None, final: bool = False) -> tuple[str, str]:
        if reasoning:
            self.remote_reasoning = (self.remote_reasoning or "") + reasoning
        if content:
            self.raw += content
        r, c = self.current(final)
        r, c = (r or "")[self.sent_r:], c[self.sent_c:]
        self.sent_r += len(r)
        self.sent_c += len(c)
        return r, c


# -- what is forwarded -------------------------------------------------------------------------------
def forwarded_message(m) -> dict:
    """A history message as sent on: its fields as the client set them, calls with OpenAI's ``type``."""
    out = m.model_dump(exclude_unset=True)
    for call in out.get("tool_calls") or []:
        call.setdefault("type", "function")
    return out


def forwarded_tools(req) -> dict:
    """``tools``, ``tool_choice`` and ``parallel_tool_calls`` as the client set them (the remote parses calls)."""
    out: dict = {}
    if req.tools:
        out["tools"] = [t.model_dump(exclude_none=True) for t in req.tools]
    if req.tool_choice is not None:
        out["tool_choice"] = req.tool_choice if isinstance(req.tool_choice, str) else req.tool_choice.model_dump()
    if req.parallel_tool_calls is not None:
        out["parallel_tool_calls"] = req.parallel_tool_calls
    return out


# -- results, usage and trace rows -------------------------------------------------------------------
def _apportion(total: int, weights: list[int]) -> list[int]:
    """``total`` split in proportion to ``weights`` (integers that add up to it)."""
    if not weights:
        return []
    wsum = sum(weights)
    if wsum <= 0:
        weights, wsum = [1] * len(weights), len(weights)
    shares = [total * w // wsum for w in weights]
    for i in sorted(range(len(weights)), key=lambda i: -(total * weights[i] % wsum))[:total - sum(shares)]:
        shares[i] += 1
    return shares


@dataclass
class RemoteChoice:
    reasoning: str | None
    content: str
    finish_reason: str
    logprobs: object = None
    tool_calls: list[dict] | None = None  # the remote's, relayed as they came

    @property
    def completion(self) -> str:
        """The raw completion as the local engine would have written it (for traces -> training): tool calls
        as the model's ``<tool_call>`` markup after the content."""
        content = "\n".join([self.content] * bool(self.content) + [
            call_markup(c["function"]["name"], c["function"].get("arguments") or "{}") for c in self.tool_calls or []])
        if self.reasoning is None:
            return content
        if not content and self.finish_reason == "length":
            return self.reasoning  # the think block never closed
        return f"{self.reasoning}\n{THINK_CLOSE}\n\n{content}"


def build_remote_result(p, choices: list[RemoteChoice], remote_usage: dict | None, meta: dict, t0: float,
                        source: str, stream: bool) -> tuple[dict, list[dict]]:
    """The chat.completion dict and the trace rows of a forwarded request (``p``: the app's Prepared)."""
    u = dict(remote_usage or {})
    prompt, completion = int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0)
    details = dict(u.get("completion_tokens_details") or {})
    lengths = [len(c.reasoning or "") + len(c.content) for c in choices]
    per_completion = _apportion(completion, lengths)
    if isinstance(details.get("reasoning_tokens"), int):
        per_reasoning = _apportion(details["reasoning_tokens"], [len(c.reasoning or "") for c in choices])
    else:  # not reported: the reasoning's share of each choice's text
        per_reasoning = [round(n * len(c.reasoning or "") / max(1, L)) for n, c, L in
                         zip(per_completion, choices, lengths)]
        details["reasoning_tokens"] = sum(per_reasoning)
    usage = {**u, "prompt_tokens": prompt, "completion_tokens": completion,
             "total_tokens": int(u.get("total_tokens") or prompt + completion),
             "completion_tokens_details": details}
    latency, finished = time.monotonic() - t0, time.time()
    out_choices, records = [], []
    for i, c in enumerate(choices):
        message = assistant_message(c.reasoning, c.content if c.content or not c.tool_calls else None, c.tool_calls)
        out_choices.append({"index": i, "message": message.model_dump(),
                            "finish_reason": c.finish_reason, "logprobs": c.logprobs})
        records.append({
            "id": meta["id"], "choice_index": i, "created": finished, "model": meta["model"], "source": source,
            "stream": int(stream), "messages": p.messages, "completion": c.completion, "reasoning": c.reasoning,
            "answer": c.content, "reasoning_effort": p.effort,
            "mode": Mode.SYSTEM1 if c.reasoning is None else Mode.SYSTEM2,  # what the remote did, not what was asked
            "prompt_tokens": prompt, "completion_tokens": per_completion[i], "reasoning_tokens": per_reasoning[i],
            "latency_s": latency, "finish_reason": c.finish_reason, "metadata": p.req.metadata})
    result = {**meta, "object": "chat.completion", "choices": out_choices, "usage": usage}
    return result, records


def choices_from_response(raw: dict) -> list[RemoteChoice]:
    try:
        remote_choices = sorted(raw["choices"], key=lambda c: c.get("index", 0))
        out = []
        for c in remote_choices:
            msg = c.get("message") or {}
            think, content = split_think(msg.get("content") or "")
            out.append(RemoteChoice(_merge(_remote_reasoning(msg), think), content, c.get("finish_reason") or "stop",
                                    c.get("logprobs"), msg.get("tool_calls") or None))
        return out
    except (KeyError, TypeError, AttributeError) as e:
        raise APIError(502, f"The remote server's answer is not a chat completion ({type(e).__name__}: {e}).",
                       type="server_error", code="remote_bad_response") from None


# -- the backend -------------------------------------------------------------------------------------
def _error_fields(text: str) -> tuple[str | None, str | None, str | None, str | None]:
    """(message, type, param, code) from an error body in OpenAI's, vLLM's or Ollama's shape."""
    try:
        body = json.loads(text)
    except ValueError:
        return None, None, None, None
    if not isinstance(body, dict):
        return None, None, None, None
    err = body.get("error", body)
    if isinstance(err, str):  # Ollama: {"error": "model 'x' not found"}
        return err, None, None, None
    if not isinstance(err, dict):
        return None, None, None, None

    def s(key):
        return err[key] if isinstance(err.get(key), str) else None

    return s("message") or s("detail"), s("type"), s("param"), s("code")


def map_remote_status(status: int, text: str, clean=scrub) -> APIError:
    """The APIError to answer for a remote's non-200 reply (``clean``: removes secrets from its message)."""
    message, type_, param, code = _error_fields(text)
    if message is None:
        snippet = " ".join(text.split())[:300] or "(empty body)"
        message = f"The remote server answered HTTP {status}: {snippet}"
    message = clean(message)
    if status in (401, 403, 407):
        return APIError(502, f"The remote server refused slowthink's credentials (HTTP {status}: "
                             f"{message}); check --remote-api-key.", type="server_error", code="remote_auth_failed")
    if 400 <= status < 500:
        default = {404: "not_found_error", 429: "rate_limit_error"}.get(status, "invalid_request_error")
        return APIError(status, message, type=type_ or default, param=param, code=code)
    return APIError(502, f"The remote server failed (HTTP {status}): {message}", type="server_error",
                    code="remote_error")


class OpenAIBackend:
    """Forwards chat completions to ``{base_url}/chat/completions`` over httpx (one pooled client)."""

    kind = "openai"

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 600.0,
                 supports_logprobs: bool = False, connect_timeout: float = 10.0):
        if not base_url or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"--base-url must be an http(s) URL such as http://127.0.0.1:8000/v1, got {base_url!r}")
        if not model:
            raise ValueError("--model: the remote model's name is required with --backend openai")
        self.base_url, self.model, self.api_key = base_url.rstrip("/"), model, api_key
        parts = urlsplit(self.base_url)
        self.url_password = parts.password  # a secret too, if the URL has one
        self.timeout, self.connect_timeout = float(timeout), min(float(connect_timeout), float(timeout))
        self.supports_logprobs = bool(supports_logprobs)
        self.url = f"{self.base_url}/chat/completions"
        self._client = None

    def describe(self) -> str:
        """What clients are told the backend is (never its URL)."""
        return f"a remote OpenAI-compatible server, model {self.model!r}"

    def describe_for_log(self) -> str:
        return f"OpenAI-compatible server {redact_url(self.base_url)}, model {self.model!r}"

    def clean(self, text: str) -> str:
        """``text`` without the remote's key, URL or credentials (for what is relayed, stored or logged)."""
        return scrub(text.replace(self.base_url, REMOTE), (self.api_key, self.url_password))

    # -- lifecycle (the app's lifespan) ------------------------------------------------------------------
    def client(self):
        if self._client is None:
            try:
                import httpx
            except ImportError:  # pragma: no cover - httpx comes with openai / the test extra
                raise APIError(500, "The openai backend needs httpx: pip install httpx", type="server_error") from None
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            self._client = httpx.AsyncClient(
                headers=headers, timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout),
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=64))
        return self._client

    async def start(self) -> None:
        self.client()

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    # -- requests ------------------------------------------------------------------------------------------
    def request_body(self, req) -> dict:
        """The body sent to the remote for a validated request."""
        fwd: dict = {"model": self.model, "messages": [forwarded_message(m) for m in req.messages]}
        fwd.update(forwarded_tools(req))
        for key in FORWARDED:
            if key in req.model_fields_set and getattr(req, key) is not None:
                fwd[key] = getattr(req, key)
        if req.stop_list:
            fwd["stop"] = req.stop_list
        if req.ignore_eos:
            fwd["ignore_eos"] = True
        if req.logprobs or req.top_logprobs:
            require_logprobs(self, "'logprobs' in the request")
            fwd["logprobs"] = True
            if req.top_logprobs is not None:
                fwd["top_logprobs"] = req.top_logprobs
        return fwd

    def _transport_error(self, e: Exception) -> APIError:
        import httpx

        if isinstance(e, httpx.TimeoutException):
            return APIError(504, f"The remote server did not answer in time ({type(e).__name__}; --remote-timeout "
                                 f"{self.timeout:g} s).", type="server_error", code="remote_timeout")
        log.warning("remote %s unreachable: %s", redact_url(self.base_url), self.clean(f"{type(e).__name__}: {e}"))
        return APIError(502, f"The remote server is unreachable ({self.clean(f'{type(e).__name__}: {e}')}).",
                        type="server_error", code="remote_unreachable")

    async def complete(self, fwd: dict) -> dict:
        """The remote's chat.completion JSON (non-streaming); APIError on any failure."""
        import httpx

        try:
            resp = await self.client().post(self.url, json={**fwd, "stream": False})
        except httpx.HTTPError as e:
            raise self._transport_error(e) from None
        if resp.status_code != 200:
            raise map_remote_status(resp.status_code, resp.text, self.clean)
        try:
            raw = resp.json()
        except ValueError:
            raise APIError(502, f"The remote server's answer is not JSON: {self.clean(resp.text[:200])!r}",
                           type="server_error", code="remote_bad_response") from None
        if not isinstance(raw, dict):
            raise APIError(502, "The remote server's answer is not a JSON object.", type="server_error",
                           code="remote_bad_response")
        if "error" in raw and "choices" not in raw:
            message, type_, param, code = _error_fields(resp.text)
            raise APIError(502, f"The remote server failed: {self.clean(str(message))}", type="server_error",
                           code="remote_error")
        return raw

    async def open_stream(self, fwd: dict):
        """Send a streaming request; the open httpx response once the remote answered 200 (else APIError)."""
        import httpx

        client = self.client()
        body = {**fwd, "stream": True, "stream_options": {"include_usage": True}}
        try:
            resp = await client.send(client.build_request("POST", self.url, json=body), stream=True)
        except httpx.HTTPError as e:
            raise self._transport_error(e) from None
        if resp.status_code != 200:
            try:
                text = (await resp.aread()).decode("utf-8", "replace")
            except httpx.HTTPError:
                text = ""
            finally:
                await resp.aclose()
            raise map_remote_status(resp.status_code, text, self.clean)
        return resp

    async def events(self, resp) -> AsyncIterator[dict]:
        """The JSON events of an SSE response, up to ``[DONE]``; APIError on a broken stream."""
        import httpx

        try:
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue  # blank separators, ": keep-alive" comments, "event:" lines
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                try:
                    event = json.loads(data)
                except ValueError:
                    raise APIError(502, f"The remote server sent a malformed stream event: {self.clean(data[:200])!r}",
                                   type="server_error", code="remote_bad_response") from None
                if isinstance(event, dict):
                    yield event
        except httpx.HTTPError as e:
            raise self._transport_error(e) from None


# -- the request paths the app calls -----------------------------------------------------------------
Record = Callable[[list[dict]], object]


async def remote_chat(backend: OpenAIBackend, p, request, meta: dict, t0: float, record: Record):
    """``POST /v1/chat/completions`` through the remote: a dict, or a StreamingResponse (SSE)."""
    from fastapi.responses import JSONResponse

    req = p.req
    if req.stream:
        resp = await backend.open_stream(p.remote_body)  # errors before the stream starts: a plain JSON error
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return event_stream(_stream(backend, resp, p, meta, include_usage, t0, record))
    task = asyncio.ensure_future(backend.complete(p.remote_body))
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=1.0)
            if done:
                break
            if await request.is_disconnected():  # client gone: drop the remote request too
                task.cancel()
                return JSONResponse(error_body("client disconnected"), status_code=499)
    finally:
        if not task.done():
            task.cancel()
    raw = task.result()
    result, records = build_remote_result(p, choices_from_response(raw), raw.get("usage"), meta, t0, "chat", False)
    record(records)
    return result


async def remote_job(backend: OpenAIBackend, p, job, meta: dict, t0: float,
                     record: Callable[[list[dict]], Awaitable | None]) -> dict:
    """One ``/v1/jobs`` job through the remote (cancellable; the trace is committed before it returns)."""
    if job.cancelled:
        raise JobCancelled
    task = asyncio.ensure_future(backend.complete(p.remote_body))
    job.on_cancel = task.cancel
    try:
        raw = await task
    except asyncio.CancelledError:
        if job.cancelled:
            raise JobCancelled from None
        raise
    if job.cancelled:
        raise JobCancelled
    result, records = build_remote_result(p, choices_from_response(raw), raw.get("usage"), meta, t0, "job", False)
    fut = record(records)
    if fut is not None:
        await fut
    return result


async def _stream(backend: OpenAIBackend, resp, p, meta: dict, include_usage: bool, t0: float, record: Record):
    n = p.req.n
    states: dict[int, _ChoiceText] = {i: _ChoiceText() for i in range(n)}

    def chunk(index: int, delta: dict, finish_reason: str | None = None, logprobs=None) -> str:
        return chunk_event(meta, index, delta, finish_reason, logprobs, usage_slot=include_usage)

    def deltas(i: int, r: str, c: str, logprobs=None):
        if r:
            yield chunk(i, reasoning_delta(r))
        if c or logprobs is not None:
            yield chunk(i, {"content": c}, logprobs=logprobs)

    usage = None
    try:
        for i in range(n):
            yield chunk(i, {"role": "assistant", "content": ""})
        async for event in backend.events(resp):
            if "error" in event and not event.get("choices"):
                message, type_, param, code = _error_fields(json.dumps(event))
                message = f"The remote server failed: {backend.clean(message or 'unknown error')}"
                yield sse(error_body(message, type_ or "server_error", param, code))
                return
            if event.get("usage"):
                usage = event["usage"]
            for ch in event.get("choices") or []:
                i = ch.get("index", 0)
                st = states.setdefault(i, _ChoiceText())
                delta = ch.get("delta") or {}
                finish = ch.get("finish_reason")
                r, c = st.feed(_remote_reasoning(delta), delta.get("content"), final=bool(finish))
                for s in deltas(i, r, c, ch.get("logprobs")):
                    yield s
                if delta.get("tool_calls"):  # relayed as they come; joined for the trace
                    st.add_calls(delta["tool_calls"])
                    yield chunk(i, {"tool_calls": delta["tool_calls"]})
                if finish:
                    st.finish_reason = finish
                    yield chunk(i, {}, finish)
        unfinished = [i for i, st in states.items() if st.finish_reason is None]
        if unfinished:
            yield sse(error_body("The remote stream ended before every choice finished.", "server_error",
                                 code="remote_bad_response"))
            return
        choices = []
        for i in sorted(states):
            reasoning, content = states[i].current(final=True)
            choices.append(RemoteChoice(reasoning, content, states[i].finish_reason, None, states[i].calls()))
        result, records = build_remote_result(p, choices, usage, meta, t0, "chat", True)
        record(records)
        if include_usage:
            yield usage_event(meta, result["usage"])
        yield DONE
    except APIError as e:
        yield sse(e.body())
    finally:
        await resp.aclose()  # client gone or done: close the remote stream (the remote stops generating)
