"""Serving load run: thousands of chat completions at high concurrency, a share of them malformed, then a
count of the trace store.

    python benchmarks/serve_load.py --model runs/quickstart/model        # ~80 s on 2 cores
    python benchmarks/serve_load.py --model runs/quickstart/model --requests 2400 --concurrency 64 \
        --out benchmarks/results/serve_load.json

``--model`` is any trained model folder; ``slowthink quickstart --out runs/quickstart`` makes
``runs/quickstart/model`` (about 13 minutes on 2 cores).

Starts ``slowthink serve`` (``serve_main``) in a subprocess on 127.0.0.1 and a free port, with an API key
and a fresh trace database in a temporary folder (jobs off), so the server has its own interpreter and
the client threads do not share its GIL. Then ``--concurrency`` threads take requests from one fixed,
shuffled list (bounded: each request is sent once, with a per-request timeout and a run deadline):

* valid (the rest): arithmetic problems, levels 1-3, through the real ``openai`` client (no retries):
  streamed or not, n=1 or 2, ``reasoning_effort`` none / low / medium / high (a vote of up to 8 samples:
  as many as get 32 tokens of the request's budget) / auto (the router saved beside the model, if any; else
  medium), temperature 0 or 1, some with
  ``stream_options.include_usage``, some with ``metadata={"task": "arithmetic", "answer": ...}`` so the
  server verifies them, ``max_completion_tokens`` small (``--max-tokens``) to keep the run short.
* malformed (``--malformed-share``, cycled over the kinds in ``malformed_kinds``): raw HTTP with ``httpx``,
  each with the 4xx status it must get (invalid or too deeply nested JSON, wrong types, unknown model,
  negative max_tokens, bad reasoning_effort, a prompt longer than the context, a budget beyond it,
  missing or empty messages, wrong or missing API key, an unknown metadata task, wrong method, unknown
  path).

Checks, each a ``target_met`` entry in the JSON:

* ``valid_all_answered``: every valid request got 200 and a well-formed body. Non-streamed: a
  ``chatcmpl-`` id, n choices indexed 0..n-1, a finish reason of stop/length, ``reasoning_content``
  None exactly for effort none, usage adding up (total = prompt + completion, reasoning <= completion,
  completion >= 1). Streamed: every chunk has the same id, each choice index ends exactly once with a
  finish reason, the usage chunk is there exactly when asked for, the stream ends normally ([DONE]).
* ``malformed_all_4xx``: every malformed request got a 4xx (and the JSON records whether it was exactly
  the expected code and an OpenAI-shaped error body).
* ``no_5xx``: no 5xx, and no request without a response (connection error or timeout), on either side.
* ``one_trace_per_answered``: the trace store keys a row by (completion id, choice index), one row per
  returned choice. So "one record per answered request" is checked as: for every answered request,
  the rows with its completion id are exactly choice indices 0..n-1 (n=1: one row; n=2: two); no row
  has an id that no answered request got (malformed requests leave nothing); rows in all = the sum of n
  over answered requests; and each request's rows carry its stream flag and, exactly when it named a
  task, the task's verdict. Checked on the database after the server shut down gracefully (SIGTERM),
  and also recorded live, once the writer thread has caught up, before shutdown.

Also recorded: a status-code histogram per category, p50/p99/max latency of valid requests (nearest
rank; streamed ones until the last chunk), wall time, requests/s, and the machine (cpu, cores, torch,
load average). The client threads run on the same cores as the server.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_bench import free_port, machine_info, percentile, run_pool, wait_ready  # noqa: E402

KEY = "load-key"
NAME = "model"
EFFORTS = ("none", "low", "medium", "high", "auto")  # high: a vote of up to 8 samples within the budget; auto: the router, if saved


# -- the request plan ----------------------------------------------------------------------------------
def valid_plan(rng: random.Random, task, max_tokens: int, verify_share: float) -> dict:
    problem = task.sample(rng, rng.choice((1, 2, 3)))
    kw = dict(model=NAME, messages=[{"role": "user", "content": problem.question}],
              reasoning_effort=rng.choice(EFFORTS), n=rng.choice((1, 2)), stream=rng.random() < 0.5,
              temperature=rng.choice((0.0, 1.0)), max_completion_tokens=max_tokens)
    if kw["stream"] and rng.random() < 0.5:
        kw["stream_options"] = {"include_usage": True}
    if rng.random() < verify_share:
        kw["metadata"] = {"task": "arithmetic", "answer": problem.answer}
    return dict(category="valid", kind="valid", kwargs=kw)


def _chat(messages=(), **kw) -> dict:
    return {"model": NAME, "messages": [{"role": "user", "content": "12*34"}] if messages == () else messages,
            "max_completion_tokens": 16, **kw}


def malformed_kinds(context: int) -> dict[str, tuple[int, dict]]:
    """kind -> (expected status, request as keyword arguments of ``httpx.Client.request``)."""
    post = dict(method="POST", url="/chat/completions")
    long_prompt = [{"role": "user", "content": "1" * (context + 50)}]  # character tokenizer: > context tokens
    return {
        "invalid_json": (400, {**post, "content": b'{"model": "model", "messages": [', "headers": {
            "content-type": "application/json"}}),
        "not_an_object": (400, {**post, "json": [_chat()]}),
        "deeply_nested_json": (400, {**post, "content": b"[" * 100_000 + b"]" * 100_000, "headers": {
            "content-type": "application/json"}}),
        "messages_wrong_type": (400, {**post, "json": _chat(messages="12*34")}),
        "n_wrong_type": (400, {**post, "json": _chat(n="two")}),
        "role_unknown": (400, {**post, "json": _chat(messages=[{"role": "robot", "content": "12*34"}])}),
        "missing_messages": (400, {**post, "json": {"model": NAME}}),
        "empty_messages": (400, {**post, "json": _chat(messages=[])}),
        "unknown_model": (404, {**post, "json": {**_chat(), "model": "no-such-model"}}),
        "negative_max_tokens": (400, {**post, "json": {"model": NAME, "messages": _chat()["messages"],
                                                        "max_tokens": -5}}),
        "bad_reasoning_effort": (400, {**post, "json": _chat(reasoning_effort="extreme")}),
        "temperature_out_of_range": (400, {**post, "json": _chat(temperature=5)}),
        "prompt_beyond_context": (400, {**post, "json": _chat(messages=long_prompt)}),
        "budget_beyond_context": (400, {**post, "json": {**_chat(), "max_completion_tokens": context * 4}}),
        "unknown_metadata_task": (400, {**post, "json": _chat(metadata={"task": "no-such-task", "answer": "1"})}),
        "wrong_api_key": (401, {**post, "json": _chat(), "headers": {"authorization": "Bearer wrong-key"}}),
        "missing_api_key": (401, {**post, "json": _chat(), "headers": {"authorization": ""}}),
        "wrong_method": (405, {"method": "GET", "url": "/chat/completions"}),
        "unknown_path": (404, {"method": "POST", "url": "/chat/complete", "json": _chat()}),
    }


def build_plan(n_requests: int, malformed_share: float, seed: int, max_tokens: int, verify_share: float,
               context: int) -> list[dict]:
    from slowthink.tasks import Arithmetic

    rng = random.Random(seed)
    task = Arithmetic()
    kinds = malformed_kinds(context)
    names = sorted(kinds)
    n_bad = round(n_requests * malformed_share)
    plan = [dict(category="malformed", kind=names[i % len(names)], expected=kinds[names[i % len(names)]][0],
                 request=kinds[names[i % len(names)]][1]) for i in range(n_bad)]
    plan += [valid_plan(rng, task, max_tokens, verify_share) for _ in range(n_requests - n_bad)]
    rng.shuffle(plan)  # malformed requests arrive while valid ones are being generated
    return plan


# -- sending -------------------------------------------------------------------------------------------
def _extra(obj, name):
    v = getattr(obj, name, None)
    if v is None and getattr(obj, "model_extra", None):
        v = obj.model_extra.get(name)
    return v


def check_completion(r, kw: dict) -> list[str]:
    """What is wrong with a non-streamed reply (empty: well-formed)."""
    bad = []
    if not (isinstance(r.id, str) and r.id.startswith("chatcmpl-")):
        bad.append(f"id {r.id!r}")
    if [c.index for c in r.choices] != list(range(kw["n"])):
        bad.append(f"choice indices {[c.index for c in r.choices]}")
    for c in r.choices:
        if c.finish_reason not in ("stop", "length"):
            bad.append(f"finish_reason {c.finish_reason!r}")
        if not isinstance(c.message.content, str):
            bad.append("content not a string")
        reasoning = _extra(c.message, "reasoning_content")
        route = (r.model_extra or {}).get("route") or {}
        direct = kw["reasoning_effort"] == "none" or (kw["reasoning_effort"] == "auto" and route.get("arm") == "s1")
        if (reasoning is None) != direct:
            bad.append(f"reasoning_content {'absent' if reasoning is None else 'present'} for effort "
                       f"{kw['reasoning_effort']}")
    u = r.usage
    if u is None or u.total_tokens != u.prompt_tokens + u.completion_tokens or u.completion_tokens < 1 \
            or u.completion_tokens_details.reasoning_tokens > u.completion_tokens:
        bad.append(f"usage {u}")
    return bad


def check_stream(chunks: list, kw: dict) -> tuple[str | None, list[str]]:
    """(completion id, what is wrong) for a fully read stream."""
    bad = []
    ids = {ch.id for ch in chunks}
    if len(ids) != 1 or not next(iter(ids), "").startswith("chatcmpl-"):
        bad.append(f"chunk ids {sorted(ids)[:3]}")
    finished = Counter(c.index for ch in chunks for c in ch.choices if c.finish_reason is not None)
    if dict(finished) != {i: 1 for i in range(kw["n"])}:
        bad.append(f"finish reasons per index {dict(finished)}")
    for ch in chunks:
        for c in ch.choices:
            if c.finish_reason not in (None, "stop", "length"):
                bad.append(f"finish_reason {c.finish_reason!r}")
            if kw["reasoning_effort"] == "none" and _extra(c.delta, "reasoning_content"):
                bad.append("reasoning_content for effort none")
    usage_chunks = [ch for ch in chunks if ch.usage is not None]
    wants_usage = bool(kw.get("stream_options", {}).get("include_usage"))
    if len(usage_chunks) != int(wants_usage):
        bad.append(f"{len(usage_chunks)} usage chunks, include_usage={wants_usage}")
    return (next(iter(ids)) if len(ids) == 1 else None), bad


def send_valid(client, item: dict, timeout: float) -> dict:
    import openai

    kw = item["kwargs"]
    t0 = time.perf_counter()
    try:
        if kw["stream"]:
            chunks = list(client.chat.completions.create(**kw, timeout=timeout))
            cid, bad = check_stream(chunks, kw)
        else:
            r = client.chat.completions.create(**kw, timeout=timeout)
            cid, bad = r.id, check_completion(r, kw)
    except openai.APIStatusError as e:
        return dict(status=e.status_code, error=str(e)[:200], latency=time.perf_counter() - t0)
    except Exception as e:  # noqa: BLE001 - no response (timeout, connection, broken stream): reported
        return dict(status=None, error=f"{type(e).__name__}: {e}"[:200], latency=time.perf_counter() - t0)
    return dict(status=200, id=cid, bad=bad, latency=time.perf_counter() - t0)


def send_malformed(http, item: dict, timeout: float) -> dict:
    import httpx

    req = dict(item["request"])
    headers = {"authorization": f"Bearer {KEY}", **req.pop("headers", {})}
    t0 = time.perf_counter()
    try:
        r = http.request(headers=headers, timeout=timeout, **req)
    except httpx.HTTPError as e:
        return dict(status=None, error=f"{type(e).__name__}: {e}"[:200], latency=time.perf_counter() - t0)
    try:
        err = r.json().get("error")
        shaped = isinstance(err, dict) and {"message", "type", "param", "code"} <= set(err) \
            and isinstance(err["message"], str) and "Traceback" not in err["message"]
    except (ValueError, AttributeError):
        shaped = False
    return dict(status=r.status_code, error_shaped=shaped, latency=time.perf_counter() - t0)


def run_load(plan: list[dict], base_url: str, concurrency: int, timeout: float, deadline_s: float) -> tuple[list, float]:
    import httpx
    import openai

    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2)
    client = openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0, timeout=timeout,
                           http_client=httpx.Client(limits=limits, timeout=timeout))
    http = httpx.Client(base_url=base_url, limits=limits, timeout=timeout)
    def call(i: int) -> dict:
        item = plan[i]
        return (send_valid(client, item, timeout) if item["category"] == "valid"
                else send_malformed(http, item, timeout))

    try:
        return run_pool(len(plan), concurrency, time.monotonic() + deadline_s, call,
                        lambda: dict(status=None, error="run deadline passed", latency=0.0))
    finally:
        http.close()
        client.close()


# -- the trace store ------------------------------------------------------------------------------------
def read_traces(db: Path) -> dict[str, list[dict]]:
    """completion id -> its rows (choice index, stream flag, verification), by choice index."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute("SELECT id, choice_index, stream, task, task_correct, verify_error FROM traces").fetchall()
    finally:
        conn.close()
    by_id: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_id[row["id"]].append(dict(row))
    return {k: sorted(v, key=lambda r: r["choice_index"]) for k, v in by_id.items()}


def trace_check(stored: dict[str, list[dict]], answered: dict[str, dict]) -> dict:
    """Compare the rows stored with the answered requests (completion id -> its n, stream, verified).
    A request's rows must be choice indices 0..n-1 exactly, carry its stream flag, and be verified
    (task set, a verdict, no verifier error) exactly when it named a task."""
    wrong, mismatched = {}, {}
    for cid, a in answered.items():
        rows = stored.get(cid, [])
        if [r["choice_index"] for r in rows] != list(range(a["n"])):
            wrong[cid] = [r["choice_index"] for r in rows]
        elif any(bool(r["stream"]) != a["stream"] or (r["task"] is not None) != a["verified"]
                 or (a["verified"] and (r["task_correct"] is None or r["verify_error"] is not None)) for r in rows):
            mismatched[cid] = rows
    orphans = sorted(set(stored) - set(answered))
    rows = sum(len(v) for v in stored.values())
    expected = sum(a["n"] for a in answered.values())
    verdicts = [r["task_correct"] for cid, a in answered.items() if a["verified"] for r in stored.get(cid, [])]
    return dict(rows=rows, expected_rows=expected, answered_requests=len(answered),
                requests_with_wrong_rows=len(wrong), missing_requests=sum(1 for v in wrong.values() if not v),
                requests_with_mismatched_rows=len(mismatched),
                rows_without_answered_request=sum(len(stored[c]) for c in orphans),
                verified_rows=len(verdicts), verified_rows_correct=sum(v == 1 for v in verdicts),
                examples_wrong=dict(list(wrong.items())[:5]), examples_mismatched=dict(list(mismatched.items())[:3]),
                examples_orphans=orphans[:5],
                ok=not wrong and not mismatched and not orphans and rows == expected)


def wait_traces(db: Path, expected_rows: int, timeout: float) -> tuple[dict, float]:
    """The live store once it holds ``expected_rows`` rows (or at ``timeout``), and how long that took."""
    t0 = time.monotonic()
    while True:
        stored = read_traces(db)
        if sum(len(v) for v in stored.values()) >= expected_rows or time.monotonic() - t0 > timeout:
            return stored, time.monotonic() - t0
        time.sleep(0.2)


# -- the server -----------------------------------------------------------------------------------------
def start_server(model: str, port: int, traces: Path, max_batch: int, max_queue: int, threads: int,
                 log_path: Path):
    code = (f"import sys, torch\ntorch.set_num_threads({threads})\n"
            "from slowthink.serve.app import serve_main\n"
            f"sys.exit(serve_main({model!r}, '127.0.0.1', {port}, {KEY!r}, {max_batch}, {max_queue}, "
            f"model_name={NAME!r}, traces={str(traces)!r}, jobs=None))\n")
    with open(log_path, "w") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})


def stop_server(proc: subprocess.Popen) -> int | None:
    """SIGTERM (uvicorn shuts down gracefully: the trace writer drains its queue); kill after 60 s."""
    proc.terminate()
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


def model_context(model: str) -> int:
    cfg = json.loads((Path(model) / "config.json").read_text())
    return int(cfg["max_position_embeddings"])


# -- the report -----------------------------------------------------------------------------------------
def summarize(plan: list[dict], results: list[dict], wall: float) -> dict:
    valid = [(p, r) for p, r in zip(plan, results) if p["category"] == "valid"]
    bad = [(p, r) for p, r in zip(plan, results) if p["category"] == "malformed"]
    valid_status = Counter(str(r["status"]) for _, r in valid)
    bad_status = Counter(str(r["status"]) for _, r in bad)
    answered = [(p, r) for p, r in valid if r["status"] == 200 and r.get("id")]
    malformed_bodies = [(p, r) for p, r in answered if r["bad"]]
    by_kind: dict[str, dict] = {}
    for p, r in bad:
        k = by_kind.setdefault(p["kind"], dict(expected=p["expected"], statuses=Counter(), error_shaped=0, count=0))
        k["statuses"][str(r["status"])] += 1
        k["count"] += 1
        k["error_shaped"] += bool(r.get("error_shaped"))
    for k in by_kind.values():
        k["statuses"] = dict(k["statuses"])
    lat = [r["latency"] for _, r in answered]
    lat_stream = [r["latency"] for p, r in answered if p["kwargs"]["stream"]]
    lat_plain = [r["latency"] for p, r in answered if not p["kwargs"]["stream"]]

    def pct(xs, q):
        return round(percentile(xs, q), 4) if xs else None

    all_status = Counter(str(r["status"]) for r in results)
    n_5xx = sum(c for s, c in all_status.items() if s.isdigit() and int(s) >= 500)
    no_response = all_status.get("None", 0)
    mix = Counter()
    for p, _ in valid:
        kw = p["kwargs"]
        mix[f"stream={kw['stream']}"] += 1
        mix[f"n={kw['n']}"] += 1
        mix[f"effort={kw['reasoning_effort']}"] += 1
        mix[f"temperature={kw['temperature']}"] += 1
        mix["include_usage"] += bool(kw.get("stream_options"))
        mix["verified (metadata.task)"] += "metadata" in kw
    return dict(
        requests=len(results), valid=len(valid), malformed=len(bad),
        valid_mix=dict(sorted(mix.items())),
        status_histogram=dict(sorted(all_status.items())),
        status_histogram_valid=dict(sorted(valid_status.items())),
        status_histogram_malformed=dict(sorted(bad_status.items())),
        malformed_by_kind=dict(sorted(by_kind.items())),
        malformed_exact_expected_status=sum(str(r["status"]) == str(p["expected"]) for p, r in bad),
        malformed_openai_error_shape=sum(bool(r.get("error_shaped")) for _, r in bad),
        answered=len(answered), answered_with_malformed_body=len(malformed_bodies),
        malformed_body_examples=[dict(kwargs=p["kwargs"], problems=r["bad"][:3]) for p, r in malformed_bodies[:5]],
        status_5xx=n_5xx, no_response=no_response,
        errors=sorted({r["error"] for r in results if r.get("error") and r["status"] is None})[:5],
        wall_s=round(wall, 2), requests_per_s=round(len(results) / wall, 1),
        latency_valid_p50_s=pct(lat, 0.5), latency_valid_p99_s=pct(lat, 0.99),
        latency_valid_max_s=round(max(lat), 4) if lat else None,
        latency_stream_p50_s=pct(lat_stream, 0.5), latency_stream_p99_s=pct(lat_stream, 0.99),
        latency_plain_p50_s=pct(lat_plain, 0.5), latency_plain_p99_s=pct(lat_plain, 0.99),
        latency_malformed_p50_s=pct([r["latency"] for _, r in bad], 0.5),
        latency_malformed_p99_s=pct([r["latency"] for _, r in bad], 0.99),
    ), {r["id"]: dict(n=p["kwargs"]["n"], stream=p["kwargs"]["stream"], verified="metadata" in p["kwargs"])
        for p, r in answered}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="runs/quickstart/model", help="a trained model folder")
    ap.add_argument("--requests", type=int, default=2400, help="requests in all, malformed included")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--malformed-share", type=float, default=0.125)
    ap.add_argument("--verify-share", type=float, default=0.25, help="share of valid requests naming a task")
    ap.add_argument("--max-tokens", type=int, default=128, help="max_completion_tokens of valid requests")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-batch", type=int, default=64, help="the server's engine batch")
    ap.add_argument("--max-queue", type=int, default=256, help="the server's queue (beyond it: 429)")
    ap.add_argument("--server-threads", type=int, default=1,
                    help="torch threads in the server (1: the client threads need the other core, and OpenMP "
                         "threads spin-waiting for a core taken by another process slow it many times over)")
    ap.add_argument("--timeout", type=float, default=120.0, help="per-request timeout, s")
    ap.add_argument("--deadline", type=float, default=1200.0, help="wall-clock limit of the load phase, s")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/serve_load.json"))
    args = ap.parse_args()
    if not 0 <= args.malformed_share < 1:
        ap.error("--malformed-share must be in [0, 1)")

    import openai

    context = model_context(args.model)
    plan = build_plan(args.requests, args.malformed_share, args.seed, args.max_tokens, args.verify_share, context)
    info = machine_info(args.server_threads)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="serve_load_") as tmp:
        db, log_path = Path(tmp) / "traces.db", Path(tmp) / "server.log"
        proc = start_server(args.model, port, db, args.max_batch, args.max_queue, args.server_threads, log_path)
        exit_code = None
        try:
            wait_ready(base_url, proc, timeout=180, api_key=KEY)
            results, wall = run_load(plan, base_url, args.concurrency, args.timeout, args.deadline)
            summary, answered = summarize(plan, results, wall)
            live, settle_s = wait_traces(db, sum(a["n"] for a in answered.values()), timeout=30)
            live_check = trace_check(live, answered)
        finally:
            exit_code = stop_server(proc)
        final_check = trace_check(read_traces(db), answered)
        log_tail = log_path.read_text().splitlines()
    server_errors = [line for line in log_tail if "Traceback" in line or "ERROR" in line][:10]
    info["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]

    targets = dict(
        at_least_2000_requests=summary["requests"] >= 2000,
        concurrency_at_least_64=args.concurrency >= 64,
        valid_all_answered=summary["answered"] == summary["valid"] and summary["answered_with_malformed_body"] == 0,
        malformed_all_4xx=all(str(r["status"]).startswith("4") for p, r in zip(plan, results)
                              if p["category"] == "malformed") and summary["malformed"] > 0,
        no_5xx=summary["status_5xx"] == 0 and summary["no_response"] == 0,
        one_trace_per_answered=final_check["ok"],
    )
    report = dict(
        benchmark="serve_load", date=time.strftime("%Y-%m-%d"), machine=info,
        setup=dict(model=args.model, requests=args.requests, concurrency=args.concurrency,
                   malformed_share=args.malformed_share, verify_share=args.verify_share,
                   max_completion_tokens=args.max_tokens, seed=args.seed, max_batch=args.max_batch,
                   max_queue=args.max_queue, context=context, client=f"openai {openai.__version__}",
                   per_request_timeout_s=args.timeout, api_key=True, jobs=False),
        **summary,
        traces_after_shutdown=final_check,
        traces_live=dict(**live_check, seconds_to_settle_after_last_reply=round(settle_s, 2)),
        # uvicorn re-raises SIGTERM once its shutdown is done, hence exit code -15 after a clean stop
        server_exit_code=exit_code, server_log_errors=server_errors,
        server_shutdown_complete=any("Application shutdown complete" in line for line in log_tail),
        target_met=targets, all_targets_met=all(targets.values()),
        total_runtime_s=round(time.perf_counter() - t_all, 1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")

    s = summary
    print(f"{info['cpu']}, {info['cores']} cores, torch {info['torch']}, load {info['load_average_at_start']} -> "
          f"{info['load_average_at_end']}")
    print(f"{s['requests']} requests at concurrency {args.concurrency}: {s['valid']} valid, {s['malformed']} "
          f"malformed; wall {s['wall_s']} s ({s['requests_per_s']} req/s)")
    print(f"status codes: all {s['status_histogram']}; valid {s['status_histogram_valid']}; "
          f"malformed {s['status_histogram_malformed']}")
    print(f"malformed: exact expected status {s['malformed_exact_expected_status']}/{s['malformed']}, "
          f"OpenAI error shape {s['malformed_openai_error_shape']}/{s['malformed']}")
    print(f"valid answered {s['answered']}/{s['valid']} (bad bodies {s['answered_with_malformed_body']}); "
          f"5xx {s['status_5xx']}; no response {s['no_response']}")
    print(f"latency valid p50 {s['latency_valid_p50_s']} s, p99 {s['latency_valid_p99_s']} s, "
          f"max {s['latency_valid_max_s']} s")
    print(f"traces after shutdown: {final_check['rows']} rows for {final_check['answered_requests']} answered "
          f"requests (expected {final_check['expected_rows']}; wrong {final_check['requests_with_wrong_rows']}, "
          f"orphans {final_check['rows_without_answered_request']}); live {live_check['rows']} after "
          f"{settle_s:.2f} s")
    print("targets: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in targets.items()))
    print(f"total {report['total_runtime_s']} s -> {args.out}")
    if server_errors:
        print("server log errors:\n  " + "\n  ".join(server_errors), file=sys.stderr)
    return 0 if report["all_targets_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
