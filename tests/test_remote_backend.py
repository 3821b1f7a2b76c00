"""``slowthink serve --backend openai``: a slowthink server whose generation is forwarded to a remote
OpenAI-compatible server.

The remote is a slowthink server on a tiny model over-fitted to answer "3+4" with 7 in both modes (so
greedy output is known); the gateway in front of it is built by the real ``slowthink serve`` command line
(``uvicorn.run`` intercepted, the app then served on a thread). Both are driven with the real ``openai``
client. A small fake remote covers servers that put ``<think>`` in ``content`` or name the field
``reasoning``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from unittest import mock

import pytest
import torch

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")
from fastapi import Request  # noqa: E402 - the fake remote's handler annotation (postponed annotations)

from slowthink.serve.app import create_app
from slowthink.serve.remote import (LOCAL, LogprobsUnavailable, OpenAIBackend, _apportion, _ChoiceText,
    require_logprobs)
from slowthink.chat import split_think
from slowthink.serve.traces import iter_traces
from serve_helpers import Q, free_port, overfit_seven, serve_in_thread

torch.set_num_threads(1)

KEY, REMOTE_KEY = "front-key", "remote-key"
NAME = "tiny-seven"


def _client(port, key=KEY):
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0, timeout=30)


@contextlib.contextmanager
def _gateway(base_url, model=NAME, **kw):
    """A gateway app (no model) in front of ``base_url``; yields its openai client."""
    backend = OpenAIBackend(base_url, model, api_key=kw.pop("remote_key", REMOTE_KEY), **kw)
    with serve_in_thread(create_app(None, None, model, api_key=KEY, backend=backend)) as port:
        yield _client(port)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tok):
    tmp = tmp_path_factory.mktemp("remote")
    remote_app = create_app(overfit_seven(tok), tok, NAME, api_key=REMOTE_KEY, max_batch=16)
    assert remote_app.state.backend is LOCAL  # the default: the local engine, unchanged
    with serve_in_thread(remote_app) as rport:
        base = f"http://127.0.0.1:{rport}/v1"
        from slowthink.cli import main

        with mock.patch.object(uvicorn, "run") as run:  # the real command line builds the gateway
            assert main(["serve", "--backend", "openai", "--base-url", base, "--model", NAME, "--api-key", KEY,
                         "--remote-api-key", REMOTE_KEY, "--traces", str(tmp / "traces.db"), "--jobs",
                         str(tmp / "jobs.db"), "--remote-timeout", "30"]) == 0
        app = run.call_args.args[0]
        assert app.state.engine is None and app.state.backend.base_url == base
        with serve_in_thread(app) as port:
            http = httpx.Client(base_url=f"http://127.0.0.1:{port}/v1", headers={"Authorization": f"Bearer {KEY}"},
                                timeout=30)
            yield {"front": _client(port), "remote": _client(rport, REMOTE_KEY), "app": app, "base": base,
                   "port": port, "http": http, "traces": tmp / "traces.db", "remote_app": remote_app}
            http.close()


def _ask(client, **kw):
    kw.setdefault("temperature", 0)
    kw.setdefault("max_completion_tokens", 24)
    return client.chat.completions.create(model=NAME, messages=kw.pop("messages", Q), **kw)


def _joined(chunks, index=0):
    mine = [ch for ch in chunks if ch.choices and ch.choices[0].index == index]
    reasoning = [getattr(ch.choices[0].delta, "reasoning_content", None) for ch in mine]
    return (None if all(r is None for r in reasoning) else "".join(r or "" for r in reasoning),
            "".join(ch.choices[0].delta.content or "" for ch in mine))


def _rows(s, completion_id=None):
    s["app"].state.traces.flush()
    return list(iter_traces(s["traces"], completion_id=completion_id))


# -- forwarding --------------------------------------------------------------------------------------
def test_non_streaming_reasoning_effort_none_vs_low(setup):
    front, remote = setup["front"], setup["remote"]
    low = _ask(front, reasoning_effort="low")
    assert (low.choices[0].message.reasoning_content, low.choices[0].message.content) == ("3+4=7", "7")
    none = _ask(front, reasoning_effort="none")  # answer directly: no think block at all
    assert (none.choices[0].message.reasoning_content, none.choices[0].message.content) == (None, "7")
    for effort, mine in (("low", low), ("none", none)):
        theirs = _ask(remote, reasoning_effort=effort)
        assert mine.choices[0].message == theirs.choices[0].message
        assert mine.choices[0].finish_reason == theirs.choices[0].finish_reason == "stop"
        assert mine.usage == theirs.usage and mine.model == NAME and mine.id != theirs.id
    # "3+4=7", its newline and </think>: one token each in the character tokenizer
    assert low.usage.completion_tokens_details.reasoning_tokens == len("3+4=7\n") + 1
    assert none.usage.completion_tokens_details.reasoning_tokens == 0
    assert [m.id for m in front.models.list().data] == [NAME]


def test_streaming_equals_non_streaming(setup):
    front = setup["front"]
    for effort in ("low", "none"):
        plain = _ask(front, reasoning_effort=effort)
        chunks = list(_ask(front, reasoning_effort=effort, stream=True, stream_options={"include_usage": True}))
        assert chunks[0].choices[0].delta.role == "assistant"
        assert _joined(chunks) == (plain.choices[0].message.reasoning_content, plain.choices[0].message.content)
        assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
        assert chunks[-1].choices == [] and chunks[-1].usage == plain.usage
    chunks = list(_ask(front, reasoning_effort="low", stream=True))  # no usage chunk unless asked for
    assert all(ch.choices and ch.usage is None for ch in chunks)
    with setup["http"].stream("POST", "/chat/completions", json={"model": NAME, "messages": Q, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [e for e in r.read().decode().split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"


def test_client_disconnect_stops_the_remote(setup, monkeypatch):
    engine, scheduler = setup["remote_app"].state.engine, setup["remote_app"].state.scheduler
    cancelled = []
    real_cancel, real_step = scheduler.cancel, engine.step
    monkeypatch.setattr(scheduler, "cancel", lambda job: (cancelled.append(job), real_cancel(job)))
    monkeypatch.setattr(engine, "step", lambda: (time.sleep(0.005), real_step())[1])  # 450 steps: > 2 s
    body = {"model": NAME, "messages": Q, "stream": True, "max_completion_tokens": 450, "ignore_eos": True}
    before = len(_rows(setup))
    with setup["http"].stream("POST", "/chat/completions", json=body) as r:
        lines = r.iter_lines()
        while "reasoning_content" not in next(lines):  # the remote is generating
            pass
    deadline = time.time() + 10
    while not cancelled or engine.has_unfinished():
        assert time.time() < deadline, "the remote kept generating after the client left"
        time.sleep(0.02)
    assert cancelled[0].completions()[0].finish_reason == "cancelled"
    assert len(cancelled[0].completions()[0].token_ids) < 450
    assert len(_rows(setup)) == before  # nothing returned, nothing traced


def test_n2_seed_and_sampling_are_passed_through(setup):
    front, remote = setup["front"], setup["remote"]
    kw = {"n": 2, "temperature": 1.5, "top_p": 0.9, "seed": 11, "reasoning_effort": "low", "max_completion_tokens": 12}
    mine, theirs = _ask(front, **kw), _ask(remote, **kw)
    assert [c.index for c in mine.choices] == [0, 1]
    assert [c.message for c in mine.choices] == [c.message for c in theirs.choices]  # same seed, same samples
    assert mine.usage == theirs.usage
    chunks = list(_ask(front, stream=True, **kw))
    for i in range(2):
        assert _joined(chunks, i) == (mine.choices[i].message.reasoning_content, mine.choices[i].message.content)
    cut = _ask(front, max_completion_tokens=2, reasoning_effort="low")
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 2
    stopped = _ask(front, reasoning_effort="low", stop=["zz", "+"])  # "3+4=7</think>7" ends at "+"
    assert (stopped.choices[0].message.reasoning_content, stopped.choices[0].message.content) == ("3", "")
    assert stopped.choices[0].finish_reason == "stop"


def test_each_forwarded_completion_is_traced_once(setup):
    before = len(_rows(setup))
    r = _ask(setup["front"], n=2, temperature=1.0, seed=3, reasoning_effort="low",
             metadata={"task": "arithmetic", "answer": "7"})
    chunks = list(_ask(setup["front"], reasoning_effort="none", stream=True))
    rows = _rows(setup, r.id)
    assert [x["choice_index"] for x in rows] == [0, 1]
    for row, choice in zip(rows, r.choices):
        assert (row["reasoning"], row["answer"]) == (choice.message.reasoning_content, choice.message.content)
        assert row["source"] == "chat" and not row["stream"] and row["mode"] == "system2" and row["messages"] == Q
        assert row["completion"] == f"{choice.message.reasoning_content}\n</think>\n\n{choice.message.content}"
        assert row["task"] == "arithmetic" and row["correct"] is (choice.message.content == "7")
    assert sum(x["completion_tokens"] for x in rows) == r.usage.completion_tokens
    (srow,) = _rows(setup, chunks[0].id)
    assert srow["stream"] and srow["mode"] == "system1" and srow["reasoning"] is None
    assert srow["answer"] == _joined(chunks)[1] == "7" and srow["completion"] == "7"
    assert len(_rows(setup)) == before + 3  # nothing else, nothing twice
    fb = setup["http"].post("/feedback", json={"completion_id": r.id, "choice_index": 1, "correct": True})
    assert fb.status_code == 200 and _rows(setup, r.id)[1]["feedback_correct"] is True


def test_jobs_through_the_remote(setup):
    http = setup["http"]
    job = http.post("/jobs", json={"model": NAME, "messages": Q, "temperature": 0, "reasoning_effort": "low"}).json()
    deadline = time.time() + 30
    while (j := http.get(f"/jobs/{job['id']}").json())["status"] not in ("succeeded", "failed", "cancelled"):
        assert time.time() < deadline
        time.sleep(0.02)
    assert j["status"] == "succeeded", j
    assert j["result"]["choices"][0]["message"] == {"role": "assistant", "content": "7", "reasoning_content": "3+4=7",
                                                    "reasoning": "3+4=7"}
    (row,) = _rows(setup, j["result"]["id"])
    assert row["source"] == "job" and row["answer"] == "7"


# -- errors --------------------------------------------------------------------------------------------
def _shape(err):
    assert set(err) == {"message", "type", "param", "code"}
    return err


def test_remote_4xx_is_passed_through(setup):
    with pytest.raises(openai.BadRequestError) as e:  # only the remote knows the context length
        _ask(setup["front"], max_completion_tokens=30_000)  # within the gateway's max_request_tokens
    assert _shape(e.value.body)["code"] == "context_length_exceeded"
    assert e.value.body["param"] == "max_completion_tokens"
    with _gateway(setup["base"], model="no-such-model") as gw:  # served name == remote name: the remote says 404
        with pytest.raises(openai.NotFoundError) as e:
            gw.chat.completions.create(model="no-such-model", messages=Q)
        assert _shape(e.value.body)["code"] == "model_not_found" and "no-such-model" in e.value.body["message"]
        with pytest.raises(openai.NotFoundError) as e:  # before the stream starts: a plain JSON error
            list(gw.chat.completions.create(model="no-such-model", messages=Q, stream=True))
        assert _shape(e.value.body)["code"] == "model_not_found"
    with _gateway(setup["base"], remote_key="wrong") as gw:  # our credentials, not the client's: 502
        with pytest.raises(openai.APIStatusError) as e:
            gw.chat.completions.create(model=NAME, messages=Q)
        assert e.value.status_code == 502 and _shape(e.value.body)["code"] == "remote_auth_failed"
    with pytest.raises(openai.NotFoundError) as e:  # the gateway's own checks still apply
        setup["front"].chat.completions.create(model="other", messages=Q)
    with pytest.raises(openai.AuthenticationError):
        _client(setup["port"], "wrong").chat.completions.create(model=NAME, messages=Q)


def test_remote_down_is_502(setup, tmp_path):
    down = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    with _gateway(down) as gw:
        for stream in (False, True):
            with pytest.raises(openai.InternalServerError) as e:
                r = gw.chat.completions.create(model=NAME, messages=Q, stream=stream)
                list(r) if stream else None
            assert e.value.status_code == 502 and _shape(e.value.body)["code"] == "remote_unreachable"
            assert e.value.body["type"] == "server_error" and "Traceback" not in e.value.body["message"]


def test_remote_timeout_is_504():
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        with _gateway(f"http://127.0.0.1:{silent.getsockname()[1]}/v1", timeout=0.5) as gw:
            with pytest.raises(openai.APIStatusError) as e:
                gw.chat.completions.create(model=NAME, messages=Q)
    assert e.value.status_code == 504 and _shape(e.value.body)["code"] == "remote_timeout"


def test_cli_needs_base_url(capsys):
    from slowthink.cli import main

    assert main(["serve", "--backend", "openai", "--model", NAME]) == 2
    assert "--base-url" in capsys.readouterr().err


# -- log-probs capability ------------------------------------------------------------------------------
def test_require_logprobs(setup):
    require_logprobs(LOCAL)
    require_logprobs(None)
    require_logprobs(OpenAIBackend("http://x/v1", "m", supports_logprobs=True))
    with pytest.raises(LogprobsUnavailable, match="log-probs.*cannot return them.*--remote-logprobs"):
        require_logprobs(setup["app"].state.backend, "PPO")
    with pytest.raises(openai.BadRequestError) as e:
        _ask(setup["front"], logprobs=True)
    assert _shape(e.value.body)["code"] == "logprobs_unsupported" and "--remote-logprobs" in e.value.body["message"]
    with _gateway(setup["base"], supports_logprobs=True) as gw:  # forwarded (a slowthink remote returns none)
        r = gw.chat.completions.create(model=NAME, messages=Q, logprobs=True, temperature=0)
        assert r.choices[0].message.content == "7" and r.choices[0].logprobs is None


# -- other remotes' shapes: <think> inside content, the "reasoning" field ----------------------------------
def _fake_remote():
    """A remote that answers like vLLM without a reasoning parser (think block in content, model 'inline')
    or like newer vLLM (the 'reasoning' field, model 'field'), with no reasoning_tokens in its usage; model
    'broken' fails (500, or an error event in the middle of a stream)."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, StreamingResponse

    app = FastAPI()
    texts = {"inline": (None, "<think>\nadd 3 and 4\n</think>\n\n7"), "field": ("add 3 and 4", "7")}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        if body["model"] == "broken":
            if not body.get("stream"):
                return JSONResponse({"error": {"message": "GPU fell off", "type": "server_error"}}, status_code=500)
            return StreamingResponse(iter(['data: {"choices": [{"index": 0, "delta": {"content": "7"}}]}\n\n',
                                           'data: {"error": {"message": "GPU fell off", "code": "oops"}}\n\n']),
                                     media_type="text/event-stream")
        reasoning, content = texts[body["model"]]
        usage = {"prompt_tokens": 5, "completion_tokens": 10, "total_tokens": 15}
        if not body.get("stream"):
            return {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"], "usage": usage,
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": content, "reasoning": reasoning}}]}

        def events():
            pieces = [{"role": "assistant"}]
            pieces += [{"reasoning": ch} for ch in reasoning or ""] + [{"content": ch} for ch in content]
            for delta in pieces:
                yield "data: " + json.dumps({"id": "x", "choices": [{"index": 0, "delta": delta}]}) + "\n\n"
            end = {"index": 0, "delta": {}, "finish_reason": "stop"}
            yield "data: " + json.dumps({"id": "x", "choices": [end]}) + "\n\n"
            yield "data: " + json.dumps({"id": "x", "choices": [], "usage": usage}) + "\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def test_think_in_content_and_reasoning_field():
    with serve_in_thread(_fake_remote()) as fport:
        for model in ("inline", "field"):
            with _gateway(f"http://127.0.0.1:{fport}/v1", model=model) as gw:
                r = gw.chat.completions.create(model=model, messages=Q)
                assert (r.choices[0].message.reasoning_content, r.choices[0].message.content) == ("add 3 and 4", "7")
                assert r.usage.completion_tokens_details.reasoning_tokens == 9  # not reported: 10 * 11/12 characters
                chunks = list(gw.chat.completions.create(model=model, messages=Q, stream=True))
                assert _joined(chunks) == ("add 3 and 4", "7")
        with _gateway(f"http://127.0.0.1:{fport}/v1", model="broken") as gw:
            with pytest.raises(openai.InternalServerError) as e:  # remote 5xx -> 502
                gw.chat.completions.create(model="broken", messages=Q)
            assert e.value.status_code == 502 and "GPU fell off" in _shape(e.value.body)["message"]
            with pytest.raises(openai.APIError, match="GPU fell off"):  # mid-stream: an error event
                list(gw.chat.completions.create(model="broken", messages=Q, stream=True))


def test_split_think_streams_as_it_finishes():
    cases = ["<think>\nab</thinkx</think>\n\n 42 ", "  <thi", "no think </think> here", "<think>never closed\n",
             "<think></think>x", "", "<", "  plain"]
    for text in cases:
        final = split_think(text)
        for step in (1, 2, 5):
            st, r_all, c_all = _ChoiceText(), "", ""
            pieces = [text[k:k + step] for k in range(0, len(text), step)]
            for k, piece in enumerate(pieces):
                r, c = st.feed(None, piece, final=k == len(pieces) - 1)
                r_all, c_all = r_all + r, c_all + c
            if not pieces:
                r_all, c_all = st.feed(None, None, final=True)
            assert (r_all, c_all) == ((final[0] or ""), final[1]), (text, step)
    assert split_think("<think>\nab</thinkx</think>\n\n 42 ") == ("ab</thinkx", "42")
    assert split_think("no think </think> here") == (None, "no think </think> here")
    assert split_think("<think>never closed\n") == ("never closed", "")
    assert _apportion(10, [1, 1, 1]) == [4, 3, 3] and _apportion(7, [0, 0]) == [4, 3]
    assert _apportion(5, [0, 3]) == [0, 5]
