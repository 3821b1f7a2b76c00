"""reasoning_effort in the server, through the real openai client: the votes (high, xhigh), auto (the
router), thinking budgets (minimal, thinking_token_budget), what usage bills and how max_completion_tokens
bounds it, the reasoning field, streaming of a decided answer, and jobs."""

from __future__ import annotations

import time

import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

from slowthink.engine import Completion
from slowthink.effort import vote, voted_answer
from slowthink.serve.app import create_app
from serve_helpers import Q, fixed_router, overfit_seven, serve_in_thread

NAME = "seven"


@pytest.fixture(scope="module")
def model(tok):
    return overfit_seven(tok)


def serve(model, tok, router=None, **kw):
    return serve_in_thread(create_app(model, tok, NAME, max_batch=32, router=router, **kw))


def client(port):
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=120)


def c(text: str, n_tokens: int = 3) -> Completion:
    return Completion(list(range(n_tokens)), [0.0] * n_tokens, text, "stop")


def test_vote_picks_the_first_sample_of_the_most_common_answer():
    group = [c("a\n</think>\n\n5"), c("b\n</think>\n\n7"), c("no close"), c("d\n</think>\n\n7"),
             c("e\n</think>\n\n9"), c("f\n</think>\n\n9"), c("g\n</think>\n\n9"), c("h\n</think>\n\n1")]
    assert [x.text for x in vote(group, 4, "system2")] == ["b\n</think>\n\n7", "e\n</think>\n\n9"]
    assert voted_answer("never closed", "system2") is None
    assert vote([c("x"), c("")], 2, "system1")[0].text == "x"
    assert vote([c("nothing"), c("closed")], 2, "system2")[0].text == "nothing"  # no vote at all: the first


def test_high_votes_over_eight_samples_and_bills_them(model, tok):
    with serve(model, tok) as port:
        r = client(port).chat.completions.create(model=NAME, messages=Q, reasoning_effort="high", temperature=1.0,
                                                 seed=3, max_completion_tokens=8 * 32)
        route = r.model_extra["route"]
        assert route["arm"] == "high" and route["samples_per_choice"] == 8 and route["tokens_per_sample"] == 32
        shown = len(tok(r.choices[0].message.reasoning_content or "")["input_ids"])
        assert r.usage.completion_tokens > shown  # the seven losing or duplicate samples are billed
        assert r.usage.completion_tokens <= 8 * 32
        streamed = list(client(port).chat.completions.create(
            model=NAME, messages=Q, reasoning_effort="high", temperature=1.0, seed=3, max_completion_tokens=8 * 32,
            stream=True, stream_options={"include_usage": True}))
        content = "".join(ch.choices[0].delta.content or "" for ch in streamed if ch.choices)
        reasoning = "".join(getattr(ch.choices[0].delta, "reasoning_content", None) or "" for ch in streamed
                            if ch.choices)
        assert (reasoning, content) == (r.choices[0].message.reasoning_content or "", r.choices[0].message.content)
        assert streamed[-1].usage.completion_tokens == r.usage.completion_tokens
        greedy = client(port).chat.completions.create(model=NAME, messages=Q, reasoning_effort="high",
                                                      temperature=0, max_completion_tokens=24)
        assert greedy.model_extra["route"]["samples_per_choice"] == 1  # identical greedy votes: sample once


def test_auto_without_a_router_runs_medium_and_says_so(model, tok):
    with serve(model, tok) as port:
        r = client(port).chat.completions.create(model=NAME, messages=Q, reasoning_effort="auto", temperature=0)
        route = r.model_extra["route"]
        assert route["arm"] == "medium" and "no router" in route["why"]
        assert r.choices[0].message.reasoning_content is not None and r.choices[0].message.content == "7"


def test_auto_answers_from_the_system1_signal_when_routed_there(model, tok, tmp_path):
    router = fixed_router([0.95, 0.96, 0.97], [0, 40, 160])  # all about as good: the cheapest, s1
    with serve(model, tok, router, traces=tmp_path / "t.db") as port:
        r = client(port).chat.completions.create(model=NAME, messages=Q, reasoning_effort="auto")
    route = r.model_extra["route"]
    assert route["arm"] == "s1" and "Chose s1" in route["why"]
    assert r.choices[0].message.reasoning_content is None and r.choices[0].message.content == "7"
    assert r.usage.completion_tokens == route["signal_tokens"]  # the signal's answer, nothing more
    from slowthink.serve.traces import iter_traces

    rows = list(iter_traces(tmp_path / "t.db"))  # the server has shut down: its writer flushed
    assert [(row["reasoning_effort"], row["mode"], row["answer"]) for row in rows] == [("auto", "system1", "7")]


def test_auto_runs_the_vote_the_router_picks(model, tok, tmp_path):
    router = fixed_router([0.05, 0.5, 0.9], [0, 40, 160])  # only the 4-sample vote is near the best
    with serve(model, tok, router, jobs=tmp_path / "jobs.db") as port:
        r = client(port).chat.completions.create(model=NAME, messages=Q, reasoning_effort="auto",
                                                 max_completion_tokens=192)
        route = r.model_extra["route"]
        assert route["arm"] == "s2_maj4" and route["samples_per_choice"] == 4
        assert r.usage.completion_tokens <= 192
        assert r.choices[0].message.content == "7" and r.choices[0].message.reasoning_content
        assert r.usage.completion_tokens > route["signal_tokens"] + len(tok(r.choices[0].message.content)["input_ids"])
        job = httpx.post(f"http://127.0.0.1:{port}/v1/jobs", json={"model": NAME, "messages": Q,
                                                                    "reasoning_effort": "auto"}).json()
        deadline = time.time() + 60
        while (j := httpx.get(f"http://127.0.0.1:{port}/v1/jobs/{job['id']}").json())["status"] not in (
                "succeeded", "failed"):
            assert time.time() < deadline
            time.sleep(0.2)
        assert j["status"] == "succeeded" and j["result"]["route"]["arm"] == "s2_maj4"


# -- the 2026 conventions: every effort under max_completion_tokens, thinking budgets, the reasoning field --
EFFORTS_ALL = ["none", "minimal", "low", "medium", "high", "xhigh", "auto"]


@pytest.fixture(scope="module")
def routed(model, tok):
    """A client of a server whose auto runs the router's 4-sample vote."""
    with serve(model, tok, fixed_router([0.05, 0.5, 0.9], [0, 40, 160])) as port:
        yield client(port)


def ask(c, **kw):
    kw.setdefault("temperature", 0)
    return c.chat.completions.create(model=NAME, messages=kw.pop("messages", Q), **kw)


def joined(chunks, key):
    return "".join(getattr(ch.choices[0].delta, key, None) or "" for ch in chunks if ch.choices)


@pytest.mark.parametrize("budget", [5, 40])
def test_max_completion_tokens_bounds_everything_a_request_generates(routed, budget):
    for effort in EFFORTS_ALL:
        for n in (1, 2):  # the budget is per choice, as OpenAI's and vLLM's
            r = ask(routed, reasoning_effort=effort, n=n, temperature=1.0, seed=1, max_completion_tokens=budget)
            assert 0 < r.usage.completion_tokens <= budget * n, (effort, n, r.usage)
    streamed = list(ask(routed, reasoning_effort="xhigh", temperature=1.0, max_completion_tokens=budget, stream=True,
                        stream_options={"include_usage": True}))
    assert 0 < streamed[-1].usage.completion_tokens <= budget


def test_thinking_token_budget_forces_the_close_and_the_model_answers(routed):
    cut = ask(routed, reasoning_effort="low", max_completion_tokens=4)
    assert cut.choices[0].finish_reason == "length" and cut.choices[0].message.content == ""  # no room to answer
    r = ask(routed, reasoning_effort="low", max_completion_tokens=16, extra_body={"thinking_token_budget": 2})
    msg, route = r.choices[0].message, r.model_extra["route"]
    assert msg.reasoning_content == "3+" and msg.content and r.choices[0].finish_reason == "stop"
    assert (route["arm"], route["thinking_token_budget"], route["forced_close"]) == ("low", 2, 1)
    assert r.usage.completion_tokens <= 16
    assert r.usage.completion_tokens_details.reasoning_tokens == 4  # "3", "+", "\n", "</think>"
    streamed = list(ask(routed, reasoning_effort="low", max_completion_tokens=16, stream=True,
                        extra_body={"thinking_token_budget": 2}))
    assert (joined(streamed, "reasoning"), joined(streamed, "content")) == (msg.reasoning_content, msg.content)
    minimal = ask(routed, reasoning_effort="minimal")  # 64 thinking tokens: this model needs 5
    assert minimal.choices[0].message.content == "7" and minimal.model_extra["route"]["forced_close"] == 0


def test_reasoning_is_sent_under_both_names(routed):
    r = ask(routed, reasoning_effort="low")
    msg = r.choices[0].message
    assert getattr(msg, "reasoning") == msg.reasoning_content == "3+4=7"
    chunks = list(ask(routed, reasoning_effort="low", stream=True))
    assert joined(chunks, "reasoning") == joined(chunks, "reasoning_content") == "3+4=7"
    assert getattr(ask(routed, reasoning_effort="none").choices[0].message, "reasoning") is None
    turn = {"role": "assistant", "content": "7"}
    prompts = [ask(routed, reasoning_effort="none", max_completion_tokens=1,
                   messages=Q + [{**turn, **extra}] + Q).usage.prompt_tokens
               for extra in ({"reasoning": "3+4=7"}, {"reasoning_content": "3+4=7"}, {})]
    assert prompts[0] == prompts[1] > prompts[2]  # a reasoning turn in the history, under either name
