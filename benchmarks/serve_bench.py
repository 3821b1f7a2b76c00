"""Serving throughput: the same N chat completions sent one at a time, then by C concurrent clients.

    python benchmarks/serve_bench.py --model runs/quickstart/model          # ~1-2 min on 2 cores
    python benchmarks/serve_bench.py --model runs/quickstart/model --n 128 --concurrency 32 \
        --out benchmarks/results/serve.json

Starts ``slowthink serve`` (``serve_main``) in a subprocess on 127.0.0.1 and a free port, so the server
has its own interpreter (GIL) and the client threads do not slow its event loop or engine thread. The
requests are N held-out arithmetic problems (``Arithmetic().heldout_set(N, (1, 2))[:N]``: all 11
level-1 problems there are, the rest level 2), the question
as the only user message, ``reasoning_effort="low"`` (System-2, 256-token budget), temperature 0,
non-streaming, through the real ``openai`` client (no retries, a per-request timeout).

Phases, in one run against one server: a few warm-up requests (not counted), then (1) sequential: the
N requests one after another; (2) concurrent: the same N requests from C threads sharing one client
(exactly N requests, a wall-clock deadline). Per phase: completion tokens/s (sum of
``usage.completion_tokens`` / wall time of the phase), requests/s, p50/p99 latency (nearest rank) and
accuracy. Accuracy scores the completion the way ``slowthink.evaluate`` does, System-2 on the whole
completion, rebuilt as ``f"{reasoning_content}\\n</think>\\n\\n{content}"`` (a reply whose think block
never closed has content "" and so scores wrong); System-1 scoring of ``content`` alone is recorded too.
The client threads run on the same cores as the server: on a 2-core machine they take CPU from it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine_info(server_threads: int | None) -> dict:
    import torch

    from slowthink.train.runlog import cpu_model

    cpu = cpu_model()
    return dict(cpu=cpu, cores=len(os.sched_getaffinity(0)), torch=torch.__version__,
                server_torch_threads=server_threads or torch.get_num_threads(),
                python=platform.python_version(), load_average_at_start=[round(v, 2) for v in os.getloadavg()])


def start_server(model: str, port: int, max_batch: int, threads: int | None, log_path: Path) -> subprocess.Popen:
    code = ("import sys, torch\n"
            f"if {threads!r}: torch.set_num_threads({threads!r})\n"
            "from slowthink.serve.app import serve_main\n"
            f"sys.exit(serve_main({model!r}, '127.0.0.1', {port}, None, {max_batch}, model_name='model'))\n")
    with open(log_path, "w") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})


def wait_ready(base_url: str, proc: subprocess.Popen, timeout: float, api_key: str | None = None) -> None:
    """Poll /models until it answers 200 (with the key, when the server wants one: else it answers 401)."""
    import httpx

    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready")
        try:
            if httpx.get(f"{base_url}/models", headers=headers, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"server not ready after {timeout:.0f} s")


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(-(-q * len(s) // 1)) - 1))  # nearest rank
    return s[k]


def one_request(client, problem, timeout: float) -> dict:
    t0 = time.perf_counter()
    try:
        r = client.chat.completions.create(
            model="model", messages=[{"role": "user", "content": problem.question}],
            reasoning_effort="low", temperature=0, stream=False, timeout=timeout)
    except Exception as e:  # noqa: BLE001 - counted as a failure, reported
        return dict(ok=False, error=f"{type(e).__name__}: {e}"[:200], latency=time.perf_counter() - t0)
    latency = time.perf_counter() - t0
    msg = r.choices[0].message
    reasoning = getattr(msg, "reasoning_content", None)
    if reasoning is None and msg.model_extra:
        reasoning = msg.model_extra.get("reasoning_content")
    return dict(ok=True, latency=latency, completion_tokens=r.usage.completion_tokens,
                content=msg.content or "", reasoning=reasoning or "", finish_reason=r.choices[0].finish_reason)


def score(task, problem, res: dict) -> tuple[bool, bool]:
    if not res["ok"]:
        return False, False
    s2 = task.score(problem, f"{res['reasoning']}\n</think>\n\n{res['content']}", mode="system2").correct
    s1 = task.score(problem, res["content"], mode="system1").correct
    return s2, s1


def summarize(name: str, results: list[dict], wall: float, task, problems, concurrency: int) -> dict:
    ok = [r for r in results if r["ok"]]
    lat = [r["latency"] for r in ok]
    tokens = sum(r["completion_tokens"] for r in ok)
    scores = [score(task, p, r) for p, r in zip(problems, results)]
    return dict(phase=name, concurrency=concurrency, requests=len(results), ok=len(ok),
                errors=sorted({r["error"] for r in results if not r["ok"]})[:5],
                wall_s=round(wall, 3), completion_tokens=tokens,
                completion_tokens_per_s=round(tokens / wall, 1), requests_per_s=round(len(ok) / wall, 2),
                latency_p50_s=round(percentile(lat, 0.50), 4) if lat else None,
                latency_p99_s=round(percentile(lat, 0.99), 4) if lat else None,
                latency_max_s=round(max(lat), 4) if lat else None,
                mean_completion_tokens=round(tokens / max(1, len(ok)), 1),
                finish_length=sum(r.get("finish_reason") == "length" for r in ok),
                accuracy_system2=round(sum(s2 for s2, _ in scores) / len(results), 4),
                accuracy_system1_content=round(sum(s1 for _, s1 in scores) / len(results), 4))


def run_sequential(client, problems, timeout: float, deadline: float) -> tuple[list[dict], float]:
    out = []
    t0 = time.perf_counter()
    for p in problems:
        if time.monotonic() > deadline:
            out.append(dict(ok=False, error="phase deadline passed", latency=0.0))
            continue
        out.append(one_request(client, p, timeout))
    return out, time.perf_counter() - t0


def run_pool(n: int, concurrency: int, deadline: float, call, expired) -> tuple[list, float]:
    """``call(i)`` for every ``i < n`` from ``concurrency`` threads that start together; items still
    unstarted at ``deadline`` (monotonic) get ``expired()``. Returns the results in order and the wall
    time from the common start to the last finish."""
    out: list = [None] * n
    start = threading.Barrier(concurrency + 1)
    todo = iter(range(n))
    lock = threading.Lock()

    def worker():
        start.wait()
        while True:
            with lock:
                i = next(todo, None)
            if i is None:
                return
            out[i] = expired() if time.monotonic() > deadline else call(i)

    with ThreadPoolExecutor(concurrency) as ex:
        futs = [ex.submit(worker) for _ in range(concurrency)]
        start.wait()
        t0 = time.perf_counter()
        for f in futs:
            f.result()
        wall = time.perf_counter() - t0
    return out, wall


def run_concurrent(client, problems, concurrency: int, timeout: float, deadline: float) -> tuple[list[dict], float]:
    return run_pool(len(problems), concurrency, deadline, lambda i: one_request(client, problems[i], timeout),
                    lambda: dict(ok=False, error="phase deadline passed", latency=0.0))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="runs/quickstart/model", help="a trained model folder")
    ap.add_argument("--n", type=int, default=128, help="requests per phase")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--max-batch", type=int, default=64, help="the server's engine batch")
    ap.add_argument("--server-threads", type=int, default=None, help="torch threads in the server")
    ap.add_argument("--timeout", type=float, default=120.0, help="per-request timeout, s")
    ap.add_argument("--phase-timeout", type=float, default=600.0, help="wall-clock limit per phase, s")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/serve.json"))
    args = ap.parse_args()

    import openai

    from slowthink.tasks import Arithmetic
    from slowthink.tasks.base import HELDOUT_SET

    task = Arithmetic()
    # level 1 has only 11 held-out problems (one-digit operands): take them all, fill up with level 2
    problems = task.heldout_set(args.n, (1, 2))[: args.n]
    if len(problems) < args.n:
        print(f"only {len(problems)} held-out problems available", file=sys.stderr)
    info = machine_info(args.server_threads)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"serve_bench_{port}.log"
    t_all = time.perf_counter()
    proc = start_server(args.model, port, args.max_batch, args.server_threads, log_path)
    try:
        wait_ready(base_url, proc, timeout=180)
        client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=args.timeout,
                               http_client=None)
        warm = [one_request(client, p, args.timeout) for p in problems[: args.warmup]]
        if not all(w["ok"] for w in warm):
            raise RuntimeError(f"warm-up failed: {[w.get('error') for w in warm]}")
        seq, seq_wall = run_sequential(client, problems, args.timeout, time.monotonic() + args.phase_timeout)
        con, con_wall = run_concurrent(client, problems, args.concurrency, args.timeout,
                                       time.monotonic() + args.phase_timeout)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    info["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]

    s = summarize("sequential", seq, seq_wall, task, problems, 1)
    c = summarize(f"concurrent x{args.concurrency}", con, con_wall, task, problems, args.concurrency)
    same = sum(a["ok"] and b["ok"] and a["content"] == b["content"] and a["reasoning"] == b["reasoning"]
               for a, b in zip(seq, con))
    ratio = round(c["completion_tokens_per_s"] / s["completion_tokens_per_s"], 2)
    report = dict(
        benchmark="serve_bench", date=time.strftime("%Y-%m-%d"), machine=info,
        setup=dict(model=args.model, n=len(problems),
                   per_level={lv: sum(p.level == lv for p in problems) for lv in (1, 2)}, heldout_set=HELDOUT_SET,
                   reasoning_effort="low", temperature=0, stream=False, client=f"openai {openai.__version__}",
                   concurrency=args.concurrency, max_batch=args.max_batch, warmup_requests=args.warmup),
        phases=[s, c], concurrent_over_sequential_tokens_per_s=ratio,
        concurrent_over_sequential_requests_per_s=round(c["requests_per_s"] / s["requests_per_s"], 2),
        target_ratio=5.0, target_met=ratio >= 5.0,
        identical_replies_sequential_vs_concurrent=same,
        sample_replies=[dict(question=p.question, answer=p.answer, reasoning=r.get("reasoning"), content=r.get("content"))
                        for p, r in zip(problems[:3], seq)],
        total_runtime_s=round(time.perf_counter() - t_all, 1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")

    print(f"{info['cpu']}, {info['cores']} cores, torch {info['torch']}, load {info['load_average_at_start']} -> "
          f"{info['load_average_at_end']}")
    print(f"{len(problems)} held-out arithmetic problems {report['setup']['per_level']} (level: count), effort=low, temperature 0, non-streaming")
    print(f"{'phase':<16}{'ok':>8}{'wall s':>9}{'tok/s':>9}{'req/s':>8}{'p50 s':>8}{'p99 s':>8}"
          f"{'tok/req':>9}{'acc s2':>8}{'acc s1':>8}")
    for r in (s, c):
        print(f"{r['phase']:<16}{r['ok']:>4}/{r['requests']:<3}{r['wall_s']:>9.2f}{r['completion_tokens_per_s']:>9.1f}"
              f"{r['requests_per_s']:>8.2f}{r['latency_p50_s']:>8.3f}{r['latency_p99_s']:>8.3f}"
              f"{r['mean_completion_tokens']:>9.1f}{r['accuracy_system2']:>8.3f}{r['accuracy_system1_content']:>8.3f}")
    print(f"concurrent / sequential: {ratio}x tokens/s (target >= 5x: {'met' if ratio >= 5 else 'NOT met'}); "
          f"identical replies {same}/{len(problems)}; total {report['total_runtime_s']} s; -> {args.out}")
    for r in (s, c):
        if r["errors"]:
            print(f"{r['phase']} errors: {r['errors']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
