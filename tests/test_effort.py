"""The effort service on a scripted model (no engine): how a budget is shared, budget forcing, votes under a
budget, and auto's fallback when the budget cannot pay for the router's signals."""

from __future__ import annotations

import asyncio

import pytest

from slowthink.chat import THINK_CLOSE, Mode
from slowthink.effort import EFFORTS, Model, Question, run_effort, single_pass, vote
from slowthink.effort.budget import MIN_SAMPLE_TOKENS, signal_cap, sample_split, think_cap
from slowthink.effort.forcing import forced_close, sample
from slowthink.engine import Completion, SamplingParams
from serve_helpers import fixed_router

MESSAGES = [{"role": "user", "content": "3+4"}]


def scripted(tok, thinking: str = "x" * 200, answer: str = "42"):
    """A model that thinks ``thinking`` and, once its prompt ends with a closed think block, answers
    ``answer``. Records each call's (prompt length, n, max_tokens)."""
    calls = []

    async def generate(prompt_ids, n, sampling):
        calls.append((len(prompt_ids), n, sampling.max_tokens))
        closed = tok.decode(prompt_ids[-8:], skip_special_tokens=False).endswith(THINK_CLOSE + "\n\n")
        ids = tok(answer if closed else thinking, add_special_tokens=False)["input_ids"]
        cut = ids[:sampling.max_tokens]
        text = tok.decode(cut, skip_special_tokens=False)
        return [Completion(cut, [-0.5] * len(cut), text, "length" if len(ids) > len(cut) else "stop") for _ in range(n)]

    return Model(tok, generate), calls


def question(**kw) -> Question:
    return Question(messages=lambda mode: MESSAGES, sampling=SamplingParams(temperature=1.0, seed=1), **kw)


def test_budget_shares_by_hand():
    assert sample_split(8, None, 1024, 500) == (8, 500)  # no budget: the setting's tokens, within the room
    assert sample_split(8, 8 * MIN_SAMPLE_TOKENS, 1024, 500) == (8, MIN_SAMPLE_TOKENS)
    assert sample_split(8, 100, 1024, 500) == (3, 33)  # 100 // 32: three samples of 33
    assert sample_split(8, 5, 1024, 500) == (1, 5)  # too small to vote: one sample gets it all
    assert sample_split(1, 600, 1024, 500) == (1, 500)
    assert think_cap(64, 256, 4) == 64  # the answer keeps 64 of the sample's 256
    assert think_cap(64, 40, 4) == 26  # 40 - 4 for the close - 10 (a quarter) for the answer
    assert think_cap(64, 3, 4) == 1
    assert signal_cap(None, 3, 64) == 64 and signal_cap(100, 3, 64) == 16 and signal_cap(1, 1, 64) == 0
    with pytest.raises(ValueError):
        sample_split(8, 0, 1024, 500)
    with pytest.raises(ValueError):
        think_cap(0, 100, 4)


def test_budget_forcing_closes_the_think_block_and_answers(tok):
    model, calls = scripted(tok)
    ids = model.prompt(question(), Mode.SYSTEM2)
    [c], forced = asyncio.run(sample(model, ids, 1, SamplingParams(max_tokens=30), thinking_budget=10))
    close = forced_close("x" * 10)
    assert (c.text, c.finish_reason, forced) == ("x" * 10 + close + "42", "stop", 1)
    assert len(c.token_ids) == 10 + len(tok(close, add_special_tokens=False)["input_ids"]) + 2 <= 30
    assert calls == [(len(ids), 1, 10), (len(ids) + len(c.token_ids) - 2, 1, 30 - (len(c.token_ids) - 2))]
    short, _ = scripted(tok, thinking="abc\n" + THINK_CLOSE + "\n\n7")
    [d], forced = asyncio.run(sample(short, ids, 1, SamplingParams(max_tokens=30), thinking_budget=10))
    assert (d.text, forced) == ("abc\n</think>\n\n7", 0)  # closed within the budget: untouched


def test_a_vote_never_generates_more_than_the_budget(tok):
    for effort, budget, n in (("high", 100, 1), ("xhigh", 40, 2), ("minimal", 30, 1), ("high", 3, 1)):
        model, calls = scripted(tok)
        answered = asyncio.run(run_effort(question(budget=budget, n=n), effort, {"main": model}))
        assert answered.generated == sum(len(c.token_ids) for c in answered.choices) + answered.extra_tokens
        assert 0 < answered.generated <= budget * n, (effort, answered.generated)
        assert len(answered.choices) == n and answered.route["arm"] == effort
    high = asyncio.run(run_effort(question(budget=100), "high", {"main": scripted(tok)[0]}))
    assert (high.route["samples_per_choice"], high.route["tokens_per_sample"], high.samples) == (3, 33, 3)


def test_single_pass_is_one_sample_per_choice_run_as_asked():
    assert single_pass("low") is EFFORTS["low"] and single_pass("none", thinking_budget=5) is EFFORTS["none"]
    for effort, thinking in (("high", None), ("xhigh", None), ("auto", None), ("minimal", None), ("low", 5)):
        assert single_pass(effort, thinking) is None, effort
    with pytest.raises(ValueError, match="reasoning_effort must be one of"):
        single_pass("extreme")


def test_vote_weighs_by_the_verifier_when_given():
    def c(text):
        return Completion([1], [0.0], text, "stop")

    group = [c("a\n</think>\n\n5"), c("b\n</think>\n\n7"), c("d\n</think>\n\n5"), c("e\n</think>\n\n7")]
    assert vote(group, 4, Mode.SYSTEM2)[0].text == "a\n</think>\n\n5"  # a tie: the answer seen first
    assert vote(group, 4, Mode.SYSTEM2, weights=[0.1, 0.9, 0.2, 0.3])[0].text == "b\n</think>\n\n7"


def test_auto_that_cannot_pay_for_its_signals_runs_medium(tok):
    model, calls = scripted(tok, thinking="ab\n</think>\n\n7")
    router = fixed_router([0.05, 0.5, 0.9], [0, 40, 160])
    tiny = asyncio.run(run_effort(question(budget=1), "auto", {"main": model}, router))
    assert tiny.route["arm"] == "medium" and "cannot pay" in tiny.route["why"] and tiny.generated <= 1
    routed = asyncio.run(run_effort(question(budget=200), "auto", {"main": model}, router))
    assert routed.route["arm"] == "s2_maj4" and routed.route["signal_tokens"] > 0 and routed.generated <= 200
    for budget in (2, 3, 9):  # two choices share the signals; each still gets at least one token
        pair = asyncio.run(run_effort(question(budget=budget, n=2), "auto", {"main": model}, router))
        assert pair.route["arm"] == "s2_maj4" and len(pair.choices) == 2 and pair.generated <= 2 * budget
