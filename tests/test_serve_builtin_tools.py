"""Built-in tools run by the server inside a request, driven by the real ``openai`` client (scripted scheduler as
in ``test_serve_tools.py``); a tool-using job that resumes after a SIGKILL from its last finished turn; replay
rebuilding per-episode tool state; the tool environment's hooks a request episode uses.
"""

from __future__ import annotations

import asyncio
import json

import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

from slowthink.serve.app import create_app
from scripted_scheduler import ScriptedScheduler
from serve_helpers import stop_server, wait_until_serving

from tool_serving import (ADD, CALL, KEY, NAME, Q, ask, long_model, scripted, scripted_server,  # noqa: F401
                          served, stream)


# -- built-in tools, run by the server inside the request -------------------------------------------------------
def calc(expression):
    return '<tool_call>\n{"name": "calculator", "arguments": {"expression": "%s"}}\n</tool_call>' % expression


def two_turns(prompt):
    """Calls the calculator, then answers with what it said."""
    if "<tool_response>" not in prompt:
        return "Compute it.\n" + calc("3*7") + "\nnever reached"
    said = prompt.rsplit("<tool_response>\n", 1)[1].split("\n</tool_response>", 1)[0]
    return f"So it is {said}.\n</think>\n\n{said}"


@pytest.fixture(scope="module")
def builtin(tok, long_model, tmp_path_factory):
    from slowthink.serve.limits import Limits
    from slowthink.tools.base import ToolSet

    tmp = tmp_path_factory.mktemp("builtin")
    script = scripted(two_turns)
    app = create_app(long_model, tok, NAME, api_key=KEY, max_batch=8, traces=tmp / "traces.db", jobs=tmp / "jobs.db",
                     builtin_tools=ToolSet(["calculator"]), limits=Limits(max_tool_calls=2))
    with scripted_server(app, tok, script, tok=tok, db=tmp / "traces.db") as server:
        yield server


def test_builtin_calculator_runs_inside_the_request(builtin):
    r = ask(builtin, two_turns)
    msg, tok = r.choices[0].message, builtin.tok
    assert msg.content == "21" and r.choices[0].finish_reason == "stop" and msg.tool_calls is None
    call = calc("3*7")
    assert msg.reasoning_content == f"Compute it.\n{call}\n<tool_response>\n21\n</tool_response>\nSo it is 21."
    assert r.model_extra["tool_use"] == [{"turns": 2, "limit": None,
                                          "calls": [{"name": "calculator", "arguments": {"expression": "3*7"},
                                                     "error": False}]}]
    first, second = builtin.fake.prompts  # the calculator in the prompt; the turn goes on after its response
    assert '"name": "calculator"' in first and first.endswith("<|im_start|>assistant\n<think>\n")
    observation = "\n<tool_response>\n21\n</tool_response>\n"
    assert second == first + "Compute it.\n" + call + observation
    turn1 = len(tok("Compute it.\n" + call)["input_ids"])
    turn2 = len(tok("So it is 21.\n</think>\n\n21")["input_ids"]) + 1  # and the end of turn
    assert r.usage.completion_tokens == turn1 + turn2  # every generated token, no tool response
    assert r.usage.completion_tokens_details.reasoning_tokens == turn1 + len(tok("So it is 21.\n</think>")["input_ids"])


def test_builtin_several_choices_are_episodes_of_their_own(builtin):
    r = ask(builtin, two_turns, n=2, temperature=1.0, seed=3)
    assert [c.message.content for c in r.choices] == ["21", "21"]
    assert [u["turns"] for u in r.model_extra["tool_use"]] == [2, 2] and len(builtin.fake.prompts) == 4
    single = ask(builtin, two_turns)
    assert r.usage.completion_tokens == 2 * single.usage.completion_tokens


def test_builtin_tool_error_is_read_by_the_model(builtin):
    r = ask(builtin, lambda p: two_turns(p).replace("3*7", "3*x"))
    assert r.choices[0].message.content.startswith("error: ")
    assert r.model_extra["tool_use"][0]["calls"][0]["error"] is True
    r = ask(builtin, lambda p: two_turns(p).replace('"calculator"', '"nobody"'))  # a tool no one has
    assert r.choices[0].message.content.startswith("error: ") and "nobody" in r.choices[0].message.content
    assert r.choices[0].message.tool_calls is None and r.model_extra["tool_use"][0]["turns"] == 2


def test_builtin_limit_ends_the_choice(builtin):
    r = ask(builtin, lambda p: "Again.\n" + calc("1+1"), max_completion_tokens=1000)  # the server allows 2 calls
    assert r.choices[0].finish_reason == "length", r
    use = r.model_extra["tool_use"][0]
    assert use["limit"] == "tool_calls" and len(use["calls"]) == 2 and use["turns"] == 3, (use, r.usage)
    assert len(builtin.fake.prompts) == 3 and r.choices[0].message.reasoning_content.count("<tool_response>") == 2


def test_builtin_then_client_function(builtin):
    lookup = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}

    def reply(prompt):
        if "<tool_response>" not in prompt:
            return two_turns(prompt)
        return "Now ask the client.\n</think>\n\n" + CALL.replace('"add"', '"lookup"').replace(
            '{"a": 3, "b": 4}', '{"q": 21}')

    r = ask(builtin, reply, tools=[lookup])
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls" and msg.content is None
    assert [(c.function.name, json.loads(c.function.arguments)) for c in msg.tool_calls] == [("lookup", {"q": 21})]
    assert "<tool_response>\n21\n</tool_response>" in msg.reasoning_content  # the server's call, in the reasoning
    assert '"name": "lookup"' in builtin.fake.prompts[0] and '"name": "calculator"' in builtin.fake.prompts[0]


def test_builtin_streamed_and_tool_choice_none(builtin):
    plain = ask(builtin, two_turns)
    chunks = stream(builtin, two_turns, stream_options={"include_usage": True})
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    reasoning = "".join(getattr(d, "reasoning_content", None) or "" for d in deltas)
    assert reasoning == plain.choices[0].message.reasoning_content
    assert "".join(d.content or "" for d in deltas) == "21"
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    (finishing,) = [c for c in chunks if c.choices and c.choices[0].finish_reason]  # what ran, as in the plain one
    assert finishing.model_extra["tool_use"] == plain.model_extra["tool_use"][0]
    r = ask(builtin, two_turns, tool_choice="none")  # no tools at all: one turn, nothing run
    assert "<tools>" not in builtin.fake.prompts[0] and len(builtin.fake.prompts) == 1
    assert "tool_use" not in r.model_extra and calc("3*7") in r.choices[0].message.reasoning_content


def test_builtin_trace_exports_tool_responses_out_of_the_loss(builtin, tmp_path):
    """A built-in tool episode's trace keeps its structure: exported and rendered for training, the model's tokens
    (its call included) are in the loss and the tool response's are not."""
    from slowthink.serve.traces import export_jsonl, iter_traces, traces_to_examples

    r = ask(builtin, two_turns, metadata={"task": "arithmetic", "answer": "21"})
    builtin.app.state.server.traces.flush()
    (row,) = list(iter_traces(builtin.db, completion_id=r.id))
    assert row["correct"] is True and "<tool_response>\n21\n</tool_response>" in row["completion"]
    assert len(row["completion_ids"]) == len(row["completion_mask"]) and 0 in row["completion_mask"]
    out = tmp_path / "traces.jsonl"
    export_jsonl(builtin.db, out, verified_only=True)
    examples = traces_to_examples(out, builtin.tok)
    (ex,) = [e for e in examples if "Compute it." in builtin.tok.decode(e.ids)]
    tok, completion = builtin.tok, list(zip(ex.ids, ex.mask))[ex.prompt_len:]
    trained = tok.decode([i for i, m in completion if m], skip_special_tokens=False)
    context = tok.decode([i for i, m in completion if not m], skip_special_tokens=False)
    assert context == "\n<tool_response>\n21\n</tool_response>\n"  # the response: context only
    assert trained == "Compute it.\n" + calc("3*7") + "So it is 21.\n</think>\n\n21" + tok.eos_token
    assert tok.decode(ex.ids[:ex.prompt_len], skip_special_tokens=False) == builtin.fake.prompts[0]  # as served


def test_context_error_names_the_tool_schemas(served):
    """Tool schemas can fill a small model's context: the 400 says they are in the prompt and what to do."""
    wordy = {"type": "function", "function": {**ADD["function"], "description": "Add. " * 500}}
    r = served.http.post("/chat/completions", json={"model": NAME, "messages": Q, "tools": [wordy]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded", r.text
    assert "tool schemas included (add)" in r.json()["error"]["message"]
    assert served.http.post("/chat/completions", json={"model": NAME, "messages": Q, "tools": [wordy],
                                                       "tool_choice": "none"}).status_code == 200


def test_builtin_name_clash_is_refused(builtin):
    mine = {"type": "function", "function": {"name": "calculator", "parameters": {"type": "object"}}}
    r = builtin.http.post("/chat/completions", json={"model": NAME, "messages": Q, "tools": [mine]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tools" and "--builtin-tools" in r.text


# -- a tool-using job resumes after a SIGKILL from its last finished turn ---------------------------------------
TOOLS_PY = '''from pathlib import Path


def add(a: int, b: int) -> str:
    """Add two integers (each call is written down, to count them)."""
    with open(Path(__file__).with_name("calls.txt"), "a") as f:
        f.write(f"{a}+{b}\\n")
    return str(a + b)
'''


def _start(port, folder, log):
    import os
    import subprocess
    import sys
    from pathlib import Path

    tests = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": f"{tests.parent}{os.pathsep}{tests}", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(tests / "scripted_scheduler.py"), str(port), str(folder), KEY],
                            cwd=str(tests.parent), env=env, stdout=log, stderr=subprocess.STDOUT)
    return wait_until_serving(proc, port, KEY, timeout_s=120)


def _poll(http, job_id, done, timeout=60):
    import time

    deadline = time.time() + timeout
    while True:
        job = http.get(f"/jobs/{job_id}").json()
        if done(job):
            return job
        assert time.time() < deadline, job
        time.sleep(0.05)


def test_tool_job_resumes_after_sigkill(tmp_path):
    import signal

    from serve_helpers import free_port

    (tmp_path / "tools.py").write_text(TOOLS_PY)
    port = free_port()
    with open(tmp_path / "server.log", "wb") as log, \
            httpx.Client(base_url=f"http://127.0.0.1:{port}/v1", headers={"Authorization": f"Bearer {KEY}"},
                         timeout=30) as http:
        proc = _start(port, tmp_path, log)
        try:
            job = http.post("/jobs", json={"model": NAME, "messages": Q, "reasoning_effort": "low"}).json()
            running = _poll(http, job["id"], lambda j: j["progress"] is not None)  # the first turn is persisted
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert running["status"] == "running" and running["progress"] == {"turns": [1], "tool_calls": [["add"]]}
        assert (tmp_path / "calls.txt").read_text() == "3+4\n"
        (tmp_path / "go").touch()  # the restarted server's model may finish its answer

        proc = _start(port, tmp_path, log)
        try:
            done = _poll(http, job["id"], lambda j: j["status"] not in ("queued", "running"))
        finally:
            stop_server(proc)
    assert done["status"] == "succeeded" and done["attempts"] == 2, done
    choice = done["result"]["choices"][0]
    assert choice["message"]["content"] == "7" and choice["finish_reason"] == "stop"
    call = '<tool_call>\n{"name": "add", "arguments": {"a": 3, "b": 4}}\n</tool_call>'
    said = f"Add them.\n{call}\n<tool_response>\n7\n</tool_response>\nThe tool says 7."
    assert choice["message"]["reasoning_content"] == said
    assert done["result"]["tool_use"] == [{"turns": 2, "limit": None,
                                           "calls": [{"name": "add", "arguments": {"a": 3, "b": 4}, "error": False}]}]
    assert (tmp_path / "calls.txt").read_text() == "3+4\n"  # the tool ran once across the kill
    prompts = [json.loads(line) for line in (tmp_path / "prompts.jsonl").read_text().splitlines()]
    # before the kill: the first turn and its continuation; after: only the continuation, from the same ids
    assert len(prompts) == 3 and prompts[2] == prompts[1] and prompts[1].startswith(prompts[0] + "Add them.\n" + call)


# -- replay after a restart rebuilds per-episode tool state ---------------------------------------------------
def memory_call(arguments):
    return '<tool_call>\n{"name": "memory", "arguments": %s}\n</tool_call>' % json.dumps(arguments)


def noting(prompt):
    """Turn 1 writes an episode note, turn 2 calls ``tally`` (a side effect: a line in calls.txt), turn 3 reads the
    note; then the answer is what the read gave."""
    responses = prompt.count("<tool_response>")
    if responses == 0:
        return "Note it.\n" + memory_call({"action": "write", "key": "plan", "text": "carry the 1"})
    if responses == 1:
        return "Count it.\n" + CALL.replace("add", "tally")
    if responses == 2:
        return "Read it.\n" + memory_call({"action": "read", "key": "plan"})
    said = prompt.rsplit("<tool_response>\n", 1)[1].split("\n</tool_response>", 1)[0]
    return f"It says {said}.\n</think>\n\n{said}"


def test_replay_rebuilds_episode_memory_without_rerunning_side_effects(tok, tmp_path):
    """A job's committed turns replayed into a fresh episode: the memory tool's episode note written before the
    restart is there for the turn after it, and the side-effecting tool of the same turn does not run again."""
    from slowthink.models import build_model
    from slowthink.serve.episodes import run_episodes
    from slowthink.serve.state import open_server
    from slowthink.tools.base import ToolSet

    model = build_model("tiny", tok, seed=0, max_positions=4096).eval()  # room for the memory tool's schema
    (tmp_path / "tools.py").write_text(TOOLS_PY.replace("def add", "def tally"))
    fake = ScriptedScheduler(tok, noting)

    async def generate(prompt_ids, n, sampling):
        return [fake.complete(tok.decode(prompt_ids, skip_special_tokens=False), sampling) for _ in range(n)]

    def episode(saved=None):
        server = open_server(model, tok, NAME, toolset=ToolSet(["memory"], tools_file=str(tmp_path / "tools.py")))
        p = server.prepare({"model": NAME, "messages": Q, "reasoning_effort": "low", "max_completion_tokens": 1000})
        committed = []
        (ep,), (log,) = asyncio.run(run_episodes(server, p, generate, saved,
                                                 lambda logs: committed.append(list(logs[0].turns))))
        server.tool_pool.shutdown()
        return ep, committed

    first, committed = episode()
    assert first.text.endswith("</think>\n\ncarry the 1") and len(committed) == 3
    assert (tmp_path / "calls.txt").read_text() == "3+4\n"
    resumed, _ = episode(saved=[committed[1]])  # restarted once the write's and tally's turns were committed
    assert resumed.text == first.text  # the read after the restart found the note
    assert [c.response for c in resumed.tool_calls] == ["saved note 'plan' (episode)", "7", "carry the 1"]
    assert (tmp_path / "calls.txt").read_text() == "3+4\n"  # tally ran once, before the restart


def test_tool_env_hooks_carry_a_request_episode(tok):
    """``RequestToolEnv`` changes ``ToolEnv`` through its public hooks only (``prompt``, ``run_calls``,
    ``reward``): the request's messages, recorded responses for a replayed turn, no reward; ``step``'s
    bookkeeping (limits, observation, the end) stays ``ToolEnv``'s."""
    from slowthink.chat import Mode
    from slowthink.engine import Completion
    from slowthink.env.base import Limits as EpisodeLimits
    from slowthink.serve.episodes import RequestToolEnv, Transcript
    from slowthink.tasks.base import Problem
    from slowthink.tools.base import ToolSet

    turn = {"token_ids": [1], "logprobs": [0.0], "text": "x", "finish_reason": "stop"}
    saved = [{"completion": turn, "observation": "", "calls": [{"turn": 1, "name": "calculator",
                                                               "arguments": {"expression": "3*7"},
                                                               "response": "twenty-one", "error": False}]}]
    env = RequestToolEnv(Q, ToolSet(["calculator"]), EpisodeLimits(max_tool_calls=2), Mode.SYSTEM2, frozenset(),
                         Transcript(saved))
    assert env.reset(Problem(key=NAME, level=0, question="", answer=None)) == Q

    async def sampled(prompt_ids, n, sampling):  # the runner samples each turn through the log's wrapper
        return [Completion([1], [0.0], "y", "stop")]

    generate = env.log.wrap(sampled)
    assert asyncio.run(generate([], 1, None))[0].text == "x"  # turn 1 comes from the log
    replayed = env.step("x\n" + calc("3*7"))  # the recorded response, not the calculator's 21
    assert replayed.observation == "\n<tool_response>\ntwenty-one\n</tool_response>\n" and not replayed.done
    assert asyncio.run(generate([], 1, None))[0].text == "y"
    ran = env.step("y\n" + calc("2*2"))
    assert ran.observation == "\n<tool_response>\n4\n</tool_response>\n" and len(env.log.turns) == 2
    over = env.step("z\n" + calc("1+1"))  # ToolEnv's limit: a third call is past max_tool_calls
    assert over.done and over.info["limit"] == "tool_calls" and over.reward == 0.0 and over.info["reward"] is None
