"""Environments: the tool-call markup, one-turn and multi-turn episodes with a scripted policy (token ids kept end
to end, tool responses masked), tool errors as responses, limits, seeds, and the in-process driver (rows keep
decoding while a tool runs; continuations batch together; a one-turn run samples exactly as before)."""

import asyncio
import threading

import pytest

from slowthink.chat import (TOOL_CALL_CLOSE, Mode, ToolCall, ToolCallError, parse_tool_calls, strip_tool_markup)
from slowthink.engine import Engine, SamplingParams, derive_seed
from slowthink.env import EpisodeRunner, Limits, TaskEnv, ToolEnv, run_episodes, tool_stats
from slowthink.rl.rewards import RewardFn
from slowthink.tasks import Arithmetic
from slowthink.tokenizer import render_prompt
from slowthink.tools.base import Tool
from env_helpers import FakeEngine, FakeToolSet, Scripted, call

pytestmark = pytest.mark.usefixtures("one_thread")

TASK = Arithmetic(op="add", max_level=2)
PROBLEM = TASK.parse_question("3+4")
ANSWER = "\nthe sum is 7\n</think>\n\n7"


def run(tok, reply, env_fn, problems=(PROBLEM,), n=1, sampling=None, mode=Mode.SYSTEM2):
    policy = Scripted(tok, reply)
    runner = EpisodeRunner(policy.generate, tok, env_fn)
    sampling = sampling or SamplingParams(max_tokens=400, temperature=1.0, seed=5)
    return asyncio.run(runner.run(list(problems), mode, n, sampling)), policy


def tool_env(limits=None, **kw):
    return lambda: ToolEnv(TASK, FakeToolSet(), limits or Limits(), Mode.SYSTEM2, RewardFn(format_bonus=0.1), **kw)


def calc_then_answer(prompt, j):
    if "<tool_response>" not in prompt:
        return "I add.\n" + call("calculator", '{"expression": "3+4"}') + "text the stop string cuts off"
    return ANSWER


# -- markup ----------------------------------------------------------------------------------------------

def test_parse_tool_calls():
    text = ('a <tool_call>{"name": "calculator", "arguments": {"expression": "1+2"}}</tool_call> b '
            '<tool_call>{"name": "f", "arguments": "{\\"x\\": 1}"}</tool_call>'
            '<tool_call>{"name": "f"}</tool_call><tool_call>{nope}</tool_call>'
            '<tool_call>{"arguments": {}}</tool_call><tool_call>{"name": "g", "arguments": [1]}</tool_call>'
            '<tool_call>{"name": "h"')
    got = parse_tool_calls(text)
    assert [type(c) for c in got] == [ToolCall, ToolCall, ToolCall, ToolCallError, ToolCallError, ToolCallError,
                                      ToolCallError]
    assert (got[0].name, got[0].arguments) == ("calculator", {"expression": "1+2"})
    assert got[1].arguments == {"x": 1} and got[2].arguments == {}
    assert "not valid JSON" in got[3].message and '"name"' in got[4].message
    assert "must be a JSON object" in got[5].message and "never closed" in got[6].message
    assert parse_tool_calls("no calls here") == []


def test_plain_calls_fill_the_one_string_parameter():
    params = {"calculator": {"type": "object", "properties": {"expression": {"type": "string"}},
                             "required": ["expression"]},
              "memory": {"type": "object", "properties": {"action": {"type": "string"}, "key": {"type": "string"}},
                         "required": ["action", "key"]}}
    text = ("<tool_call>calculator\n670235*215837\n</tool_call><tool_call>memory\nx</tool_call>"
            "<tool_call>calc\n1+2</tool_call>"
            '<tool_call>{"name": "calculator", "arguments": {"expression": "2*3"}}</tool_call>')
    got = parse_tool_calls(text, params)
    assert (got[0].name, got[0].arguments) == ("calculator", {"expression": "670235*215837"})
    assert isinstance(got[1], ToolCallError) and "not called in plain text" in got[1].message
    assert isinstance(got[2], ToolCallError) and "unknown tool 'calc'" in got[2].message
    assert got[3].arguments == {"expression": "2*3"}  # JSON calls are read as before
    assert isinstance(parse_tool_calls(text)[0], ToolCallError)  # without the schemas only JSON is a call
    assert "unknown tool '12*34'" in parse_tool_calls("<tool_call>12*34</tool_call>", params)[0].message  # two tools
    one = {"calculator": params["calculator"]}
    bare = parse_tool_calls("<tool_call>12*34</tool_call><tool_call>\n5-1\n</tool_call>", one)
    assert [(c.name, c.arguments) for c in bare] == [("calculator", {"expression": "12*34"}),
                                                     ("calculator", {"expression": "5-1"})]
    assert "unknown tool 'calc'" in parse_tool_calls("<tool_call>calc\n1+2</tool_call>", one)[0].message


def test_tool_env_runs_a_plain_call():
    env = tool_env()()
    env.reset(PROBLEM)
    step = env.step("<tool_call>calculator\n3+4\n</tool_call>")
    assert not step.done and "<tool_response>\n7\n</tool_response>" in step.observation
    assert "is not called in plain text" in env.step("<tool_call>broken\n1</tool_call>").observation


def test_strip_tool_markup_keeps_the_rest():
    text = 'x<tool_call>{"a": 1}</tool_call>\n<tool_response>\n5\n</tool_response>\ny</think>\n\n<tool_call>{'
    assert strip_tool_markup(text) == "x\n\ny</think>\n\n"


# -- one-turn and multi-turn episodes ----------------------------------------------------------------------

def test_task_env_is_the_task_in_one_turn():
    env = TaskEnv(TASK, Mode.SYSTEM2, RewardFn(format_bonus=0.1))
    assert env.reset(PROBLEM) == TASK.prompt(PROBLEM, Mode.SYSTEM2) and env.stop == () and not env.runs_tools
    obs, reward, done, info = env.step("\n3+4=7\n</think>\n\n7", num_tokens=9)
    assert (obs, done, reward) == ("", True, pytest.approx(1.1)) and info["score"].correct
    assert env.step("</think>\n\n8").reward == pytest.approx(0.1)
    assert env.end("tokens").reward == 0.0


def test_one_turn_episode_through_the_runner(tok):
    (eps,), policy = run(tok, lambda p, j: f"\nstep {j}\n</think>\n\n{7 if j else 8}",
                         lambda: TaskEnv(TASK, Mode.SYSTEM2), n=2)
    assert len(policy.calls) == 1 and policy.calls[0][1] == 2, "one request for the problem's n samples"
    assert policy.calls[0][2].stop == () and policy.calls[0][2].seed == derive_seed(5, 0)
    assert [e.turns for e in eps] == [1, 1] and [len(e.segments) for e in eps] == [1, 1]
    assert [e.score.correct for e in eps] == [False, True]
    assert all(e.loss_mask == [1] * len(e.token_ids) and e.tool_calls == [] for e in eps)
    assert eps[1].completion().text == "\nstep 1\n</think>\n\n7"


def test_tool_episode_keeps_token_ids_and_masks_tool_responses(tok):
    (eps,), policy = run(tok, calc_then_answer, tool_env())
    ep = eps[0]
    assert [s.mask for s in ep.segments] == [1, 0, 1] and ep.turns == 2 and ep.finish_reason == "stop"
    first, obs, last = ep.segments
    assert first.text.endswith(TOOL_CALL_CLOSE) and "cuts off" not in first.text
    assert obs.text == "\n<tool_response>\n7\n</tool_response>\n"
    assert obs.token_ids == tok(obs.text, add_special_tokens=False)["input_ids"] and set(obs.logprobs) == {0.0}
    # the continuation's prompt is everything so far, as ids (never re-tokenised from text)
    prompt = render_prompt(tok, tool_env()().reset(PROBLEM), Mode.SYSTEM2)
    assert ep.prompt_ids == prompt == policy.calls[0][0]
    assert policy.calls[1][0] == prompt + first.token_ids + obs.token_ids and policy.calls[1][1] == 1
    mask = ep.loss_mask
    masked = [t for t, m in zip(ep.token_ids, mask) if not m]
    assert tok.decode(masked) == obs.text and len(mask) == len(ep.token_ids) == len(ep.logprobs)
    assert ep.model_tokens == len(first.token_ids) + len(last.token_ids)
    assert [(c.name, c.arguments, c.response, c.error) for c in ep.tool_calls] == [
        ("calculator", {"expression": "3+4"}, "7", False)]
    assert ep.score.correct and ep.reward.total == pytest.approx(1.1)


def test_tool_prompt_lists_the_tools():
    messages = tool_env()().reset(PROBLEM)
    assert messages[0]["role"] == "system" and '"name": "calculator"' in messages[0]["content"]
    assert "<tool_call>" in messages[0]["content"] and messages[1:] == TASK.prompt(PROBLEM, Mode.SYSTEM2)
    assert tool_env(tools_prompt="none")().reset(PROBLEM) == TASK.prompt(PROBLEM, Mode.SYSTEM2)
    with pytest.raises(ValueError, match="tools_prompt"):
        tool_env(tools_prompt="short")()


def test_tool_errors_come_back_as_responses(tok):
    calls = ["{not json", call("nosuch", "{}"), call("broken", "{}"), call("calculator", '{"expr": "1"}'),
             call("calculator", '{"expression": "import os"}')]

    def reply(prompt, j):
        k = prompt.count("<tool_response>")
        return f"try {k}\n" + ("<tool_call>" + calls[0] + TOOL_CALL_CLOSE if k == 0 else calls[k]) \
            if k < len(calls) else ANSWER

    (eps,), _ = run(tok, reply, tool_env(Limits(max_tool_calls=5, max_turns=6)))
    ep = eps[0]
    assert ep.turns == 6 and ep.score.correct and len(ep.tool_calls) == 5 and ep.tool_errors == 5
    responses = [c.response for c in ep.tool_calls]
    assert all(r.startswith("error:") for r in responses)
    assert "not valid JSON" in responses[0] and "unknown tool 'nosuch'" in responses[1]
    assert "the tool broke" in responses[2] and "expr" in responses[3]
    assert all(f"<tool_response>\n{r}\n</tool_response>" in ep.text for r in responses)
    stats = tool_stats(eps)
    assert stats["tool_errors_per_episode"] == 5 and stats["tool_error_rate"] == 1.0
    assert stats["correct_used_tool"] == 1.0 and stats["turns_per_episode"] == 6


def always_calls(prompt, j):
    return "again\n" + call("calculator", '{"expression": "1+1"}')


@pytest.mark.parametrize("limits, reason, turns, calls", [
    (Limits(max_tool_calls=2, max_turns=8), "tool_calls", 3, 2),
    (Limits(max_tool_calls=8, max_turns=3), "turns", 3, 2)])
def test_call_and_turn_limits_end_the_episode(tok, limits, reason, turns, calls):
    (eps,), policy = run(tok, always_calls, tool_env(limits))
    ep = eps[0]
    assert (ep.limit, ep.finish_reason, ep.turns, len(ep.tool_calls)) == (reason, "limit", turns, calls)
    assert ep.reward.total == 0.0 and not ep.score.well_formed, "no answer: nothing to score, not even format"
    assert len(policy.calls) == turns and ep.segments[-1].mask == 1, "the last turn gets no response"


def test_token_budgets(tok):
    # the model's tokens over all turns are bounded by max_tokens
    (eps,), policy = run(tok, always_calls, tool_env(Limits(max_tool_calls=50, max_turns=50)),
                         sampling=SamplingParams(max_tokens=120, temperature=1.0))
    ep = eps[0]
    assert ep.model_tokens <= 120 and ep.finish_reason == "length" and ep.limit == "tokens"
    assert [c[2].max_tokens for c in policy.calls] == [120 - sum(len(s.token_ids) for s in ep.segments[:i:2])
                                                      for i in range(0, 2 * len(policy.calls), 2)]
    # Limits.max_tokens also counts the tool responses
    (eps,), _ = run(tok, always_calls, tool_env(Limits(max_tool_calls=50, max_turns=50, max_tokens=150)))
    assert len(eps[0].token_ids) <= 150 and eps[0].limit == "tokens" and eps[0].finish_reason == "length"
    assert eps[0].reward.total == 0.0


def test_seeds_and_stop_strings(tok):
    (a, b), policy = run(tok, calc_then_answer, tool_env(), problems=[PROBLEM, TASK.parse_question("5+6")], n=2)
    first = [c for c in policy.calls if c[1] == 2]
    assert [c[2].seed for c in first] == [derive_seed(5, 0), derive_seed(5, 1)]
    assert all(c[2].stop == (TOOL_CALL_CLOSE,) for c in policy.calls)
    continuation_seeds = {c[2].seed for c in policy.calls if c[1] == 1}
    assert continuation_seeds == {derive_seed(derive_seed(5, i), i, j, 1) for i in range(2) for j in range(2)}


# -- the in-process driver ----------------------------------------------------------------------------------

def test_rows_keep_decoding_while_a_tool_runs(tok):
    """Episode A's tool waits until episode B, still decoding a long answer, has finished: with a driver that
    stopped decoding while a tool ran, the tool would time out (an error response)."""
    b_finished = threading.Event()
    slow = Tool("wait", "waits for the other episode", {"type": "object", "properties": {}},
                lambda: "done" if b_finished.wait(10) else "timed out")
    long_answer = "\n" + "b" * 60 + "\n</think>\n\n11"

    def reply(prompt, j):
        if "5+6" in prompt:
            return long_answer
        return ANSWER if "<tool_response>" in prompt else "wait\n" + call("wait", "{}")

    policy = Scripted(tok, reply)
    engine = FakeEngine(policy)
    add = engine.add

    def add_marking_b(prompt_ids, n, sampling):
        req = add(prompt_ids, n, sampling)
        if "5+6" in req.prompt:
            req.on_done = b_finished.set
        return req

    engine.add = add_marking_b
    make = lambda: ToolEnv(TASK, FakeToolSet(slow), Limits(), Mode.SYSTEM2)  # noqa: E731
    out = run_episodes(engine, tok, make, [PROBLEM, TASK.parse_question("5+6")], Mode.SYSTEM2, 1,
                       SamplingParams(max_tokens=200))
    a, b = out[0][0], out[1][0]
    assert a.tool_calls[0].response == "done" and not a.tool_calls[0].error
    assert a.score.correct and b.score.correct


class InlineToolEnv(ToolEnv):
    runs_tools = False  # tools called on the event loop's thread: the driver's schedule is then deterministic


def test_continuations_of_many_episodes_batch_together(tok):
    problems = [TASK.parse_question(q) for q in ("3+4", "1+2", "2+5")]
    policy = Scripted(tok, lambda p, j: ANSWER if "<tool_response>" in p else
                      "go\n" + call("calculator", '{"expression": "3+4"}'))
    engine = FakeEngine(policy)
    make = lambda: InlineToolEnv(TASK, FakeToolSet(), Limits(), Mode.SYSTEM2)  # noqa: E731
    out = run_episodes(engine, tok, make, problems, Mode.SYSTEM2, 2, SamplingParams(max_tokens=200))
    assert all(e.turns == 2 and len(e.tool_calls) == 1 for eps in out for e in eps)
    continuations = [[r for r in step if "<tool_response>" in r.prompt] for step in engine.log]
    assert max(len(c) for c in continuations) == 6, "all six continuations decode in the same steps"
    assert max(len(step) for step in engine.log[:1]) == 3, "the three first requests were admitted together"


def test_driver_frees_the_engine_when_an_episode_fails(tok):
    policy = Scripted(tok, lambda p, j: "x" * 5)
    engine = FakeEngine(policy)

    class Broken(TaskEnv):
        def step(self, turn, num_tokens=0):
            raise KeyError("env bug")

    problems = [TASK.parse_question("3+4"), TASK.parse_question("1+2")]
    slow = lambda p, j: "x" * (5 if "3+4" in p else 50)  # noqa: E731
    policy.reply = slow
    with pytest.raises(KeyError, match="env bug"):
        run_episodes(engine, tok, lambda: Broken(TASK, Mode.SYSTEM2), problems, Mode.SYSTEM2, 1,
                     SamplingParams(max_tokens=100))
    assert len(engine.cancelled) == 1 and not engine.running


def test_one_turn_episodes_sample_exactly_as_add_then_step(tok, tiny_model):
    """The rollout worker's old loop (every request added, then steps until all are done) and the runner over the
    driver give the same tokens, log-probs and texts, bit for bit."""
    problems = [TASK.parse_question(q) for q in ("3+4", "12+5", "1+1")]
    sampling = SamplingParams(max_tokens=12, temperature=1.0, seed=11)
    prompts = [render_prompt(tok, TASK.prompt(p, Mode.SYSTEM2), Mode.SYSTEM2) for p in problems]
    engine = Engine(tiny_model, tok)
    import dataclasses

    reqs = [engine.add(ids, 3, dataclasses.replace(sampling, seed=derive_seed(11, i))) for i, ids in enumerate(prompts)]
    while not all(r.done for r in reqs):
        engine.step()
    before = [[(c.token_ids, c.logprobs, c.text, c.finish_reason) for c in r.completions] for r in reqs]
    out = run_episodes(Engine(tiny_model, tok), tok, lambda: TaskEnv(TASK, Mode.SYSTEM2), problems, Mode.SYSTEM2, 3,
                       sampling)
    after = [[(e.completion().token_ids, e.completion().logprobs, e.completion().text, e.finish_reason) for e in eps]
             for eps in out]
    assert after == before
    assert [eps[0].prompt_ids for eps in out] == prompts


def test_episode_with_tools_must_fit_the_context(tok, tiny_model):
    """The tool instructions make a long prompt: past the model's positions is a clear error, not silent garbage."""
    make = lambda: ToolEnv(TASK, FakeToolSet(), Limits(), Mode.SYSTEM2)  # noqa: E731
    with pytest.raises(ValueError, match="tools_prompt=none"):
        run_episodes(Engine(tiny_model, tok), tok, make, [PROBLEM], Mode.SYSTEM2, 1, SamplingParams(max_tokens=8))
    short = lambda: ToolEnv(TASK, FakeToolSet(), Limits(), Mode.SYSTEM2, tools_prompt="none")  # noqa: E731
    (eps,) = run_episodes(Engine(tiny_model, tok), tok, short, [PROBLEM], Mode.SYSTEM2, 1, SamplingParams(max_tokens=8))
    assert eps[0].model_tokens <= 8
