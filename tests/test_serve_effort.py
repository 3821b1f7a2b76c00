"""reasoning_effort high (self-consistency) and auto (the router) in the server, through the real openai
client: the vote, the route, what usage bills, streaming of a decided answer, and jobs."""

from __future__ import annotations

import time

import numpy as np
import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

from slowthink.engine import Completion
from slowthink.router import Router
from slowthink.router.arms import default_arms
from slowthink.router.predictor import Predictor
from slowthink.router.signals import S1_NAMES
from slowthink.serve.app import create_app
from slowthink.serve.planned import vote, voted_answer
from serve_helpers import Q, overfit_seven, serve_in_thread

NAME = "seven"


def fixed_router(success: list[float], cost: list[float]) -> Router:
    """A router on the s1 signal whose predictions ignore the features: it always picks the same arm."""
    arms = default_arms(max_tokens=32, ns=(4,))
    f, a = len(S1_NAMES), len(arms)
    logit = np.log(np.array(success) / (1 - np.array(success)))
    pred = Predictor(mean=np.zeros(f), std=np.ones(f), w_success=np.zeros((f, a)), b_success=logit,
                     w_cost=np.zeros((f, a)), b_cost=np.log1p(np.array(cost, float)))
    return Router(arms=arms, signals=("s1",), predictor=pred, feature_names=S1_NAMES, tradeoff=0.05)


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
                                                 seed=3, max_completion_tokens=24)
        route = r.model_extra["route"]
        assert route["arm"] == "high" and route["samples_per_choice"] == 8
        shown = len(tok(r.choices[0].message.reasoning_content or "")["input_ids"])
        assert r.usage.completion_tokens > shown  # the seven losing or duplicate samples are billed
        assert r.usage.completion_tokens <= 8 * 24
        streamed = list(client(port).chat.completions.create(
            model=NAME, messages=Q, reasoning_effort="high", temperature=1.0, seed=3, max_completion_tokens=24,
            stream=True, stream_options={"include_usage": True}))
        content = "".join(ch.choices[0].delta.content or "" for ch in streamed if ch.choices)
        reasoning = "".join(getattr(ch.choices[0].delta, "reasoning_content", None) or "" for ch in streamed
                            if ch.choices)
        assert (reasoning, content) == (r.choices[0].message.reasoning_content or "", r.choices[0].message.content)
        assert streamed[-1].usage.completion_tokens == r.usage.completion_tokens
        greedy = client(port).chat.completions.create(model=NAME, messages=Q, reasoning_effort="high",
                                                      temperature=0, max_completion_tokens=24)
        assert greedy.model_extra["route"]["samples_per_choice"] == 1  # identical greedy votes: sample once


def test_auto_without_a_router_runs_medium(model, tok):
    with serve(model, tok) as port:
        r = client(port).chat.completions.create(model=NAME, messages=Q, reasoning_effort="auto", temperature=0)
        assert r.model_extra.get("route") is None
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
                                                 max_completion_tokens=24)
        route = r.model_extra["route"]
        assert route["arm"] == "s2_maj4" and route["samples_per_choice"] == 4
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
