"""Trace store, feedback, export, async jobs (and their survival of SIGKILL), and traces -> training examples.

The in-process server runs a tiny model over-fitted in a second to answer "3+4" with 7 in both modes, so
the task verifier sees both correct and wrong answers. The SIGKILL test runs ``slowthink serve`` as a
subprocess on a saved copy of that model.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

from slowthink.models import build_model, save
from slowthink.serve.app import create_app
from slowthink.serve.traces import iter_traces, traces_to_examples
from slowthink.tasks.arithmetic import Arithmetic
from slowthink.tasks.base import Problem
from slowthink.tokenizer import IM_END, render_example
from serve_helpers import Q, free_port, overfit_seven, serve_in_thread, stop_server, wait_until_serving

torch.set_num_threads(1)

KEY = "test-key"
NAME = "tiny-seven"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def served(tmp_path_factory, tok):
    tmp = tmp_path_factory.mktemp("jobs_traces")
    model = overfit_seven(tok)
    app = create_app(model, tok, NAME, api_key=KEY, max_batch=16, traces=tmp / "traces.db", jobs=tmp / "jobs.db",
                     job_concurrency=2)
    with serve_in_thread(app) as port:
        base = f"http://127.0.0.1:{port}/v1"
        client = openai.OpenAI(base_url=base, api_key=KEY, max_retries=0, timeout=60)
        http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
        yield {"client": client, "http": http, "base": base, "app": app, "model": model, "tok": tok, "tmp": tmp,
               "traces": tmp / "traces.db", "jobs": tmp / "jobs.db"}
        http.close()


def _rows(s, completion_id):
    s["app"].state.traces.flush()
    return list(iter_traces(s["traces"], completion_id=completion_id))


def _count(s):
    s["app"].state.traces.flush()
    return len(list(iter_traces(s["traces"])))


def _ask(s, messages=Q, **kw):
    kw.setdefault("temperature", 0)
    kw.setdefault("max_completion_tokens", 24)
    return s["client"].chat.completions.create(model=NAME, messages=messages, **kw)


# -- traces --------------------------------------------------------------------------------------------
def test_each_returned_choice_is_stored_once(served):
    before = _count(served)
    r = _ask(served, n=2, temperature=1.0, seed=3, reasoning_effort="low")
    rows = _rows(served, r.id)
    assert [x["choice_index"] for x in rows] == [0, 1]
    for row, choice in zip(rows, r.choices):
        assert (row["reasoning"], row["answer"]) == (choice.message.reasoning_content, choice.message.content)
        assert row["finish_reason"] == choice.finish_reason and row["source"] == "chat" and not row["stream"]
        assert row["messages"] == Q and row["mode"] == "system2" and row["reasoning_effort"] == "low"
        assert row["model"] == NAME and row["prompt_tokens"] == r.usage.prompt_tokens and row["latency_s"] > 0
        assert row["correct"] is None and row["task"] is None
    assert sum(x["completion_tokens"] for x in rows) == r.usage.completion_tokens
    assert sum(x["reasoning_tokens"] for x in rows) == r.usage.completion_tokens_details.reasoning_tokens

    chunks = list(_ask(served, n=2, temperature=1.0, seed=4, reasoning_effort="none", stream=True))
    cid = chunks[0].id
    rows = _rows(served, cid)
    assert [x["choice_index"] for x in rows] == [0, 1] and all(x["stream"] for x in rows)
    for i, row in enumerate(rows):
        content = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices and ch.choices[0].index == i)
        assert row["answer"] == content and row["reasoning"] is None and row["mode"] == "system1"
    assert _count(served) == before + 4  # nothing else written, nothing twice


def test_metadata_task_verifies_the_answer(served):
    cases = []
    for effort in ("none", "low"):
        for answer in ("7", "8"):
            r = _ask(served, reasoning_effort=effort, metadata={"task": "arithmetic", "answer": answer, "tag": "x"})
            cases.append((r, answer))
    for r, answer in cases:
        (row,) = _rows(served, r.id)
        assert r.choices[0].message.content == "7"  # the over-fitted model answers 7 in both modes
        assert row["task"] == "arithmetic" and row["expected_answer"] == answer and row["extracted_answer"] == "7"
        assert row["task_correct"] is (answer == "7") and row["correct"] is (answer == "7")
        assert row["metadata"] == {"task": "arithmetic", "answer": answer, "tag": "x"}
        problem = Problem(key="3+4", level=1, question="3+4", answer=answer)
        assert Arithmetic().score(problem, row["completion"], row["mode"]).correct is row["task_correct"]


@pytest.mark.parametrize("metadata,fragment", [
    ({"task": "no-such-task", "answer": "7"}, "unknown task"),
    ({"task": str(REPO / "tests/plugins/good.py"), "answer": "7"}, "unknown task"),  # never import a file
    ({"task": "arithmetic"}, "metadata.answer"),
    ({"task": "countdown", "answer": "3+4"}, "problem_data"),
    ({"task": "arithmetic", "answer": "7", "problem_data": "[1"}, "not JSON"),
])
def test_bad_verification_metadata_is_400(served, metadata, fragment):
    before = _count(served)
    with pytest.raises(openai.BadRequestError) as e:
        _ask(served, metadata=metadata)
    assert e.value.body["param"] == "metadata" and fragment in e.value.body["message"]
    r = served["http"].post("/chat/completions", json={"model": NAME, "messages": Q, "metadata": {"answer": 7}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "metadata.answer"  # OpenAI: string values
    assert _count(served) == before


def test_feedback(served):
    r = _ask(served, reasoning_effort="none", metadata={"task": "arithmetic", "answer": "7"})
    assert _rows(served, r.id)[0]["correct"] is True
    http = served["http"]
    ok = http.post("/feedback", json={"completion_id": r.id, "choice_index": 0, "correct": False, "comment": "no"})
    assert ok.status_code == 200 and ok.json()["correct"] is False
    (row,) = _rows(served, r.id)
    assert row["feedback_correct"] is False and row["task_correct"] is True and row["correct"] is False
    assert row["feedback_comment"] == "no"
    assert http.post("/feedback", json={"completion_id": r.id, "correct": True}).status_code == 200  # index 0
    assert _rows(served, r.id)[0]["correct"] is True

    for body in ({"completion_id": "chatcmpl-nope", "correct": True}, {"completion_id": r.id, "choice_index": 1,
                                                                         "correct": True}):
        nf = http.post("/feedback", json=body)
        assert nf.status_code == 404 and nf.json()["error"]["code"] == "completion_not_found"
        assert set(nf.json()["error"]) == {"message", "type", "param", "code"}
    for content in (b"{not json", b"[1]", json.dumps({"completion_id": r.id}).encode(),
                    json.dumps({"completion_id": r.id, "correct": "yes"}).encode(),
                    json.dumps({"completion_id": r.id, "correct": True, "choice_index": -1}).encode(),
                    json.dumps({"correct": True}).encode()):
        bad = http.post("/feedback", content=content, headers={"Content-Type": "application/json"})
        assert bad.status_code == 400, content
        assert bad.json()["error"]["type"] == "invalid_request_error"
    assert httpx.post(served["base"] + "/feedback", json={"completion_id": r.id, "correct": True}).status_code == 401


def test_export_cli_verified_only(served, tmp_path):
    from slowthink.cli import main

    right = _ask(served, reasoning_effort="low", metadata={"task": "arithmetic", "answer": "7"})
    wrong = _ask(served, reasoning_effort="low", metadata={"task": "arithmetic", "answer": "9"})
    plain = _ask(served, reasoning_effort="none")
    served["app"].state.traces.flush()
    everything, verified = tmp_path / "all.jsonl", tmp_path / "verified.jsonl"
    assert main(["traces", "export", "--db", str(served["traces"]), "--out", str(everything)]) == 0
    assert main(["traces", "export", "--db", str(served["traces"]), "--out", str(verified), "--verified-only"]) == 0
    all_recs = [json.loads(line) for line in everything.read_text().splitlines()]
    ver_recs = [json.loads(line) for line in verified.read_text().splitlines()]
    assert len(all_recs) == _count(served) and len({(x["id"], x["choice_index"]) for x in all_recs}) == len(all_recs)
    assert ver_recs and all(x["correct"] is True for x in ver_recs)
    assert [x for x in all_recs if x["correct"] is True] == ver_recs
    ids = {x["id"] for x in ver_recs}
    assert right.id in ids and wrong.id not in ids and plain.id not in ids
    rec = next(x for x in ver_recs if x["id"] == right.id)
    assert rec["messages"] == Q and rec["answer"] == "7" and rec["reasoning_effort"] == "low"
    assert main(["traces", "export", "--db", str(tmp_path / "missing.db"), "--out", str(tmp_path / "x")]) == 2


def test_traces_to_examples_and_a_training_step(served, tmp_path):
    """The loop: serve -> verify (task or feedback) -> export -> examples -> the loss STaR minimises falls."""
    from slowthink.cli import main

    tok = served["tok"]
    q2 = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "30+12"}]
    by_task = _ask(served, reasoning_effort="low", metadata={"task": "arithmetic", "answer": "7"})
    by_feedback = _ask(served, q2, reasoning_effort="none")
    cut = _ask(served, reasoning_effort="low", max_completion_tokens=2)  # truncated: never kept
    for r in (by_feedback, cut):
        assert served["http"].post("/feedback", json={"completion_id": r.id, "correct": True}).status_code == 200
    served["app"].state.traces.flush()
    out = tmp_path / "verified.jsonl"
    assert main(["traces", "export", "--db", str(served["traces"]), "--out", str(out), "--verified-only"]) == 0
    examples = traces_to_examples(out, tok, Arithmetic())
    texts = [tok.decode(e.ids, skip_special_tokens=False) for e in examples]
    assert len(set(texts)) == len(texts)  # distinct
    expected = render_example(tok, q2, "system1", by_feedback.choices[0].message.content)
    assert expected.ids in [e.ids for e in examples]
    s2 = render_example(tok, Q, "system2", _rows(served, by_task.id)[0]["completion"])
    assert s2.ids in [e.ids for e in examples]
    cut_row = _rows(served, cut.id)[0]
    assert cut_row["correct"] is True and cut_row["finish_reason"] == "length"
    assert render_example(tok, Q, "system2", cut_row["completion"]).ids not in [e.ids for e in examples]
    for e in examples:  # the loss covers the completion and its end of turn, nothing of the prompt
        assert e.ids[-1] == tok.convert_tokens_to_ids(IM_END) and e.prompt_len < len(e.ids)
        assert e.mask == [0] * e.prompt_len + [1] * (len(e.ids) - e.prompt_len)
    s1 = [e.ids for e in traces_to_examples(out, tok, Arithmetic(), mode="system1")]
    assert expected.ids in s1 and s2.ids not in s1

    # The last link: `slowthink train star --from-traces` fine-tunes on the served traces. With no
    # sampling of its own (0 samples kept: the model's own tries are cut at 1 token), every
    # fine-tuning example comes from the export; the loss must fall over the inner fine-tune.
    from slowthink.models import save
    from slowthink.train.runlog import read_metrics

    init = tmp_path / "init"
    save(build_model("tiny", tok, seed=1), tok, init)
    run = tmp_path / "star"
    assert main(["train", "star", "--init", str(init), "--task", "arithmetic", "--levels", "1",
                 "--from-traces", str(out), "--iterations", "1", "--problems-per-iteration", "2",
                 "--samples-per-problem", "1", "--max-new-tokens", "1", "--rationalize", "no",
                 "--steps-per-iteration", "6", "--batch-size", str(len(examples)), "--lr", "3e-3",
                 "--warmup-steps", "0", "--eval-per-level", "0", "--threads", "1", "--progress", "no",
                 "--out", str(run)]) == 0
    it = [r for r in read_metrics(run) if "ft_steps" in r][0]
    assert it["traces_kept"] == 0 and it["ft_steps"] == 6 and it["ft_loss_last"] < 0.8 * it["ft_loss"]
    assert (run / "model" / "config.json").exists()
    assert main(["train", "star", "--init", str(init), "--from-traces", str(tmp_path / "nope.jsonl"),
                 "--out", str(tmp_path / "bad")]) == 2


# -- jobs ----------------------------------------------------------------------------------------------
def _wait_job(http, job_id, statuses=("succeeded", "failed", "cancelled"), timeout=30):
    deadline = time.time() + timeout
    while True:
        j = http.get(f"/jobs/{job_id}").json()
        if j["status"] in statuses:
            return j
        assert time.time() < deadline, f"job {job_id} still {j['status']}"
        time.sleep(0.02)


def test_job_create_poll_succeeds(served):
    http = served["http"]
    body = {"model": NAME, "messages": Q, "temperature": 0, "max_completion_tokens": 24, "reasoning_effort": "low",
            "n": 2, "metadata": {"task": "arithmetic", "answer": "7"}}
    r = http.post("/jobs", json=body)
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["status"] == "queued" and job["id"].startswith("job-") and job["result"] is None
    done = _wait_job(http, job["id"])
    assert done["status"] == "succeeded" and done["error"] is None and done["attempts"] == 1
    result = openai.types.chat.ChatCompletion.model_validate(done["result"])
    plain = _ask(served, reasoning_effort="low", n=2)
    assert [c.message for c in result.choices] == [c.message for c in plain.choices]  # greedy: same answer
    assert result.usage == plain.usage
    rows = _rows(served, result.id)
    assert len(rows) == 2 and all(x["source"] == "job" and x["correct"] is True for x in rows)
    assert http.get(f"/jobs/{job['id']}").json() == done  # stable
    listed = http.get("/jobs", params={"status": "succeeded"}).json()["data"]
    assert job["id"] in [j["id"] for j in listed]


def test_job_cancel_queued_and_running(served, monkeypatch):
    http, app = served["http"], served["app"]
    engine = app.state.engine
    real_step = engine.step
    monkeypatch.setattr(engine, "step", lambda: (time.sleep(0.004), real_step())[1])  # ~2 s per long job
    body = {"model": NAME, "messages": Q, "temperature": 0, "max_completion_tokens": 480, "ignore_eos": True}
    ids = [http.post("/jobs", json=body).json()["id"] for _ in range(3)]  # concurrency 2: the third waits
    _wait_job(http, ids[0], ("running",))
    _wait_job(http, ids[1], ("running",))
    assert http.get(f"/jobs/{ids[2]}").json()["status"] == "queued"
    queued = http.delete(f"/jobs/{ids[2]}")
    assert queued.status_code == 200 and queued.json()["status"] == "cancelled"
    deadline = time.time() + 10
    while len(engine.rows) != 2:  # both running jobs are decoding
        assert time.time() < deadline
        time.sleep(0.005)
    running = http.delete(f"/jobs/{ids[0]}").json()
    assert running["status"] == "cancelled" and running["result"] is None
    deadline = time.time() + 1.5
    while len(engine.rows) != 1:  # its slot is freed now, not when its budget runs out
        assert time.time() < deadline, "the cancelled job kept running in the engine"
        time.sleep(0.005)
    assert http.get(f"/jobs/{ids[1]}").json()["status"] == "running"
    finished = _wait_job(http, ids[1])
    assert finished["status"] == "succeeded"
    assert finished["result"]["usage"]["completion_tokens"] == 480  # ignore_eos: the whole budget
    time.sleep(0.2)
    for job_id, attempts in ((ids[0], 1), (ids[2], 0)):
        j = http.get(f"/jobs/{job_id}").json()
        assert j["status"] == "cancelled" and j["result"] is None and j["attempts"] == attempts
    with sqlite3.connect(served["jobs"]) as db:
        cids = [db.execute("SELECT completion_id FROM jobs WHERE id=?", (i,)).fetchone()[0] for i in ids]
    assert [len(_rows(served, c)) for c in cids] == [0, 1, 0]  # only the returned completion is traced
    gone = http.delete(f"/jobs/{ids[1]}")  # finished: deleted
    assert gone.status_code == 200 and gone.json() == {"id": ids[1], "object": "chat.completion.job.deleted",
                                                       "deleted": True}
    assert http.get(f"/jobs/{ids[1]}").status_code == 404 and http.delete(f"/jobs/{ids[1]}").status_code == 404


def test_job_errors(served):
    http = served["http"]
    for method in ("get", "delete"):
        r = getattr(http, method)("/jobs/job-nope")
        assert r.status_code == 404 and r.json()["error"]["code"] == "job_not_found"
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    for body, status, param in (({"model": NAME}, 400, "messages"),
                                ({"model": NAME, "messages": Q, "stream": True}, 400, "stream"),
                                ({"model": NAME, "messages": Q, "n": 0}, 400, "n"),
                                ({"model": NAME, "messages": Q, "max_completion_tokens": 100_000}, 400,
                                 "max_completion_tokens"),
                                ({"model": "other", "messages": Q}, 404, "model")):
        r = http.post("/jobs", json=body)
        assert r.status_code == status and r.json()["error"]["param"] == param, r.text
    r = http.post("/jobs", content=b"{oops", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    assert http.get("/jobs", params={"status": "bogus"}).status_code == 400
    assert httpx.get(served["base"] + "/jobs/job-nope").status_code == 401


# -- durability ----------------------------------------------------------------------------------------
def _start_server(model_dir, port, tmp, log):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "SLOWTHINK_API_KEY": KEY}
    proc = subprocess.Popen([sys.executable, "-m", "slowthink.cli", "serve", "--model", str(model_dir), "--port",
                             str(port), "--traces", str(tmp / "traces.db"), "--jobs", str(tmp / "jobs.db"),
                             "--job-concurrency", "1"], cwd=str(REPO), env=env, stdout=log, stderr=subprocess.STDOUT)
    return wait_until_serving(proc, port, KEY)


def test_jobs_survive_sigkill(served, tmp_path):
    model_dir = tmp_path / NAME
    save(served["model"], served["tok"], model_dir)
    port = free_port()
    base = f"http://127.0.0.1:{port}/v1"
    with open(tmp_path / "server.log", "wb") as log, \
            httpx.Client(base_url=base, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as http:
        proc = _start_server(model_dir, port, tmp_path, log)
        try:
            bodies = [{"model": NAME, "messages": [{"role": "user", "content": f"{i}+{i}"}], "temperature": 1.0,
                       "seed": i, "max_completion_tokens": 400, "ignore_eos": True} for i in range(5)]
            ids = [http.post("/jobs", json=b).json()["id"] for b in bodies]
            deadline = time.time() + 60
            while True:  # kill once one job is done and the next is running (one at a time)
                seen = {i: http.get(f"/jobs/{i}").json() for i in ids}
                if any(j["status"] == "succeeded" for j in seen.values()) and \
                        any(j["status"] == "running" for j in seen.values()):
                    break
                assert time.time() < deadline, [j["status"] for j in seen.values()]
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        before = {i: j for i, j in seen.items() if j["status"] == "succeeded"}
        unfinished = [i for i, j in seen.items() if j["status"] != "succeeded"]
        assert before and unfinished

        proc = _start_server(model_dir, port, tmp_path, log)
        try:
            after = {i: _wait_job(http, i, timeout=90) for i in ids}
        finally:
            stop_server(proc)
    assert all(j["status"] == "succeeded" for j in after.values()), {i: j["status"] for i, j in after.items()}
    for i, j in before.items():
        assert after[i] == j  # finished results are untouched by the restart
    for i in ids:
        usage = after[i]["result"]["usage"]
        assert usage["completion_tokens"] == 400 and after[i]["result"]["choices"][0]["finish_reason"] == "length"
    assert any(after[i]["attempts"] == 2 for i in unfinished)  # the one running at the kill ran again
    rows = list(iter_traces(tmp_path / "traces.db"))
    assert sorted(r["id"] for r in rows) == sorted(j["result"]["id"] for j in after.values())  # once each
    for r in rows:
        job = next(j for j in after.values() if j["result"]["id"] == r["id"])
        assert r["source"] == "job" and r["answer"] == job["result"]["choices"][0]["message"]["content"]
