"""The OpenAI-compatible server, driven by the real ``openai`` client against uvicorn on 127.0.0.1.

The model is the tiny preset after ~150 quick SFT steps on arithmetic level 1 (a few seconds), enough
that greedy System-2 completions close their think block, so reasoning/answer splitting is exercised.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

from slowthink.engine import Engine, SamplingParams
from slowthink.models import build_model
from slowthink.chat import split_output
from slowthink.serve.app import create_app
from slowthink.serve.responses import SequenceStream
from slowthink.serve.scheduler import Scheduler
from slowthink.tasks.arithmetic import Arithmetic
from slowthink.chat import split_completion
from slowthink.tokenizer import render_prompt
from serve_helpers import serve_in_thread

KEY = "test-key"
NAME = "tiny-arith"
MAX = 64  # completion budget used in comparisons


@pytest.fixture(scope="module")
def served(tmp_path_factory, tok):
    from slowthink.train.sft import SFTConfig, train

    model = build_model("tiny", tok, seed=0)
    cfg = SFTConfig(out=str(tmp_path_factory.mktemp("sft")), levels=[1], steps=150, batch_size=16, lr=3e-3,
                    warmup_steps=10, eval_every=0, checkpoint_every=1000, eval_per_level=4, max_new_tokens=48,
                    progress=False, log_every=50, threads=1, resume=False, optimizer="adamw", system2_fraction=0.5)
    train(cfg, task=Arithmetic(), model=model, tok=tok)
    model.eval()
    task = Arithmetic()
    prompts = [task.prompt(task.sample(random.Random(i), 1), "system2") for i in range(8)]
    # Reference greedy completions, computed before the server's engine thread touches the model.
    ref_engine = Engine(model, tok, max_batch=8)
    greedy = SamplingParams(max_tokens=MAX, temperature=0)
    refs = {mode: [c[0] for c in ref_engine.generate([render_prompt(tok, p, mode) for p in prompts], 1, greedy)]
            for mode in ("system1", "system2")}

    app = create_app(model, tok, NAME, api_key=KEY, max_batch=16)
    with serve_in_thread(app) as port:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0, timeout=60)
        yield {"client": client, "port": port, "prompts": prompts, "refs": refs, "app": app, "model": model,
               "tok": tok}


def _ask(s, i=0, **kw):
    kw.setdefault("temperature", 0)
    kw.setdefault("max_completion_tokens", MAX)
    return s["client"].chat.completions.create(model=NAME, messages=s["prompts"][i], **kw)


def _stream(s, i=0, **kw):
    kw.setdefault("temperature", 0)
    kw.setdefault("max_completion_tokens", MAX)
    chunks = list(s["client"].chat.completions.create(model=NAME, messages=s["prompts"][i], stream=True, **kw))
    return chunks


def _joined(chunks, index=0):
    reasoning = "".join(getattr(ch.choices[0].delta, "reasoning_content", None) or "" for ch in chunks
                        if ch.choices and ch.choices[0].index == index)
    content = "".join(ch.choices[0].delta.content or "" for ch in chunks
                      if ch.choices and ch.choices[0].index == index)
    return reasoning, content


def test_models_list(served):
    assert [m.id for m in served["client"].models.list().data] == [NAME]


def test_system2_matches_engine_and_usage_is_consistent(served):
    for i in range(2):
        r = _ask(served, i, reasoning_effort="low")
        ref = served["refs"]["system2"][i]
        choice = r.choices[0]
        reasoning, content = split_output(ref.text, "system2")
        assert (choice.message.reasoning_content, choice.message.content) == (reasoning, content)
        split = split_completion(ref.text, "system2")
        if split.well_formed:
            assert choice.message.content == split.answer_text and choice.message.reasoning_content == split.reasoning
        assert choice.finish_reason == ref.finish_reason
        u = r.usage
        prompt = render_prompt(served["tok"], served["prompts"][i], "system2")
        assert u.completion_tokens == len(ref.token_ids) and u.prompt_tokens == len(prompt)
        assert u.total_tokens == u.prompt_tokens + u.completion_tokens
        # the reasoning is every token up to and including </think> (all of them when it never closes)
        close, ids = served["tok"].convert_tokens_to_ids("</think>"), ref.token_ids
        assert u.completion_tokens_details.reasoning_tokens == (ids.index(close) + 1 if close in ids else len(ids))
    assert "</think>" in served["refs"]["system2"][0].text, "the SFT'd model closes its think block"


def test_system1_has_no_reasoning(served):
    r = _ask(served, 0, reasoning_effort="none")
    ref = served["refs"]["system1"][0]
    assert r.choices[0].message.reasoning_content is None
    assert r.choices[0].message.content == ref.text.strip()
    assert r.usage.completion_tokens_details.reasoning_tokens == 0


def test_streaming_equals_non_streaming(served):
    for effort in ("none", "low"):
        plain = _ask(served, 1, reasoning_effort=effort)
        chunks = _stream(served, 1, reasoning_effort=effort, stream_options={"include_usage": True})
        assert chunks[0].choices[0].delta.role == "assistant"
        reasoning, content = _joined(chunks)
        msg = plain.choices[0].message
        assert content == msg.content and reasoning == (msg.reasoning_content or "")
        finals = [ch for ch in chunks if ch.choices and ch.choices[0].finish_reason]
        assert [f.choices[0].finish_reason for f in finals] == [plain.choices[0].finish_reason]
        assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
        details = chunks[-1].usage.completion_tokens_details
        assert details.reasoning_tokens == plain.usage.completion_tokens_details.reasoning_tokens
        if effort == "low":
            assert reasoning and all(ch.choices[0].delta.content in (None, "") for ch in chunks
                                     if ch.choices and getattr(ch.choices[0].delta, "reasoning_content", None))


def test_raw_sse_ends_with_done(served):
    body = {"model": NAME, "messages": served["prompts"][0], "stream": True, "max_completion_tokens": 8}
    with httpx.stream("POST", f"http://127.0.0.1:{served['port']}/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        text = r.read().decode()
    events = [e for e in text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    assert json.loads(events[0][6:])["object"] == "chat.completion.chunk"


def test_n_choices_and_seed(served):
    kw = {"n": 3, "temperature": 1.0, "seed": 7, "reasoning_effort": "low", "max_completion_tokens": 24}
    r = _ask(served, 2, **kw)
    assert [c.index for c in r.choices] == [0, 1, 2]
    again = _ask(served, 2, **kw)
    assert [c.message for c in again.choices] == [c.message for c in r.choices]  # seeded: reproducible
    chunks = _stream(served, 2, **kw)
    for i in range(3):
        reasoning, content = _joined(chunks, i)
        assert (reasoning, content) == (r.choices[i].message.reasoning_content or "", r.choices[i].message.content)


@pytest.mark.parametrize("effort", ["none", "minimal", "low", "medium", "high", "xhigh", "auto"])
def test_each_reasoning_effort(served, effort):
    r = served["client"].chat.completions.create(model=NAME, messages=served["prompts"][3], temperature=0,
                                                 reasoning_effort=effort)
    assert r.choices[0].finish_reason in ("stop", "length")
    assert (r.choices[0].message.reasoning_content is None) == (effort == "none")


def test_max_completion_tokens_and_legacy_max_tokens(served):
    r = _ask(served, 0, max_completion_tokens=3)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 3
    r = _ask(served, 0, max_completion_tokens=None, max_tokens=2)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 2


def test_stop_strings(served):
    ref = served["refs"]["system2"][0].text
    stop = ref[2:4]
    expected = split_output(ref[:ref.find(stop)], "system2")
    r = _ask(served, 0, stop=stop)
    assert r.choices[0].finish_reason == "stop"
    assert (r.choices[0].message.reasoning_content, r.choices[0].message.content) == expected
    assert _joined(_stream(served, 0, stop=[stop, "zzz"])) == (expected[0] or "", expected[1])


def test_concurrent_requests_share_the_engine(served):
    def one(i):
        return _ask(served, i, reasoning_effort="low" if i % 2 else "none", max_completion_tokens=32)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    for i, r in enumerate(results):
        ref = served["refs"]["system2" if i % 2 else "system1"][i]  # alone, in a batch of its own mode
        cut = len(ref.token_ids) > 32
        assert len(r.choices) == 1 and r.choices[0].finish_reason == ("length" if cut else ref.finish_reason)
        assert (r.choices[0].message.reasoning_content is None) == (i % 2 == 0)
        assert r.usage.completion_tokens == min(32, len(ref.token_ids))  # sharing the engine changed no token


def test_errors_through_the_client(served):
    c = served["client"]
    msgs = served["prompts"][0]
    with pytest.raises(openai.NotFoundError) as e:
        c.chat.completions.create(model="nope", messages=msgs)
    assert e.value.body["code"] == "model_not_found"
    bad = openai.OpenAI(base_url=c.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model=NAME, messages=msgs)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model=NAME, messages=msgs, temperature=-1)
    assert e.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "1+1=" * 200}])
    assert e.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model=NAME, messages=msgs, max_completion_tokens=100_000)


@pytest.mark.parametrize("body,headers", [
    (b"{not json", {}),
    (json.dumps({"model": NAME}).encode(), {}),  # messages missing
    (json.dumps({"model": NAME, "messages": []}).encode(), {}),
    (json.dumps({"model": NAME, "messages": [{"role": "user", "content": "x"}], "n": 0}).encode(), {}),
    (json.dumps({"model": NAME, "messages": [{"role": "wizard", "content": "x"}]}).encode(), {}),
    (json.dumps([1, 2]).encode(), {}),
    (b"[" * 100_000 + b"]" * 100_000, {}),  # json's decoder hit RecursionError: was a 500
])
def test_malformed_requests_are_400_in_openai_shape(served, body, headers):
    r = httpx.post(f"http://127.0.0.1:{served['port']}/v1/chat/completions", content=body, timeout=30,
                   headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json", **headers})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["type"] == "invalid_request_error"


def test_missing_key_is_401(served):
    r = httpx.get(f"http://127.0.0.1:{served['port']}/v1/models", timeout=10)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


def test_queue_full_is_429(served):
    from fastapi.testclient import TestClient

    app = create_app(served["model"], served["tok"], NAME, max_queue=0)
    with TestClient(app) as tc:
        r = tc.post("/v1/chat/completions", json={"model": NAME, "messages": served["prompts"][0]})
    assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limit_error"


def test_stream_disconnect_cancels_the_engine_request(served, monkeypatch):
    app = served["app"]
    engine, scheduler = app.state.engine, app.state.scheduler
    cancelled = []
    real_cancel = scheduler.cancel
    monkeypatch.setattr(scheduler, "cancel", lambda job: (cancelled.append(job), real_cancel(job)))
    monkeypatch.setattr(engine, "eos_ids", set())  # nothing ends the sequence but its 450-token budget
    body = {"model": NAME, "messages": served["prompts"][0], "stream": True, "max_completion_tokens": 450}
    with httpx.stream("POST", f"http://127.0.0.1:{served['port']}/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as r:
        next(r.iter_lines())
    deadline = time.time() + 10
    while not cancelled or engine.has_unfinished():
        assert time.time() < deadline, "the engine request was not cancelled after the client left"
        time.sleep(0.02)
    time.sleep(0.1)
    job = cancelled[0]
    assert job.over and job.completions()[0].finish_reason == "cancelled"
    assert len(job.completions()[0].token_ids) < 450


def test_scheduler_cancel_ends_a_running_job(served):
    async def main():
        sched = Scheduler(Engine(served["model"], served["tok"], max_batch=2))
        sched.start()
        try:
            job = sched.submit([5, 6, 7], 1, SamplingParams(max_tokens=10_000, ignore_eos=True), stream=True)
            first = await asyncio.wait_for(job.updates.get(), 10)
            assert first.new_tokens and first.new_tokens[0]
            sched.cancel(job)
            while (u := await asyncio.wait_for(job.updates.get(), 10)).completions is None:
                pass
            assert u.completions[0].finish_reason == "cancelled" and not sched.engine.has_unfinished()
        finally:
            sched.stop()

    asyncio.run(main())


def test_sequence_stream_holds_back_partial_markers(tok):
    text = "ab\n</think>\n\n 4</2 x"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    stream = SequenceStream(tok, {tok.eos_token_id}, "system2", ["</2 y"])
    r_all = c_all = ""
    for t in ids:
        r, c = stream.feed([t])
        r_all, c_all = r_all + r, c_all + c
        # never a partial </think> or stop string, never the trailing newline before </think>
        assert r_all in ("", "a", "ab") and c_all in ("", "4", "4</2 x")
    from slowthink.engine import Completion

    r, c = stream.finish(Completion(ids, [0.0] * len(ids), text, "length"))
    assert (r_all + r, c_all + c) == split_output(text, "system2") == ("ab", "4</2 x")
