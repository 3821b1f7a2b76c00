"""What a tool turn costs the server itself: requests through ``/v1/chat/completions`` with a scripted model, so
the time measured is the server's (parsing, rendering, the episode runner, the tool, the response) and none of
it is decoding.

    python benchmarks/serve_tools.py          # writes benchmarks/results/serve_tools.json; ~2 minutes on 2 cores
    python benchmarks/serve_tools.py --requests 64 --concurrency 16 --rounds 5

Two servers (``create_app``, one with ``--builtin-tools calculator``, each served by uvicorn on a thread of this
process) have the scripted scheduler of the tests in the engine's place (``tests/scripted_scheduler.py``: it
answers a prompt at once with a fixed text, tokenised as the engine would). Scenarios, each the same number of
requests through the ``openai`` client:

* ``plain``: one turn, no tools (the effort service's path), on a server without built-in tools;
* ``client_tools``: the same server, ``tools=[add]``: the model's ``<tool_call>`` parsed into ``message.tool_calls``;
* ``builtin_0``, ``builtin_1``, ``builtin_4``: a server with ``--builtin-tools calculator``, one episode per
  request with 0, 1 or 4 calculator calls run by the server before the answer (1, 2, 5 model turns).

Every scenario runs once per round (``--rounds``, interleaved), each time twice: its requests one at a time
(latency: p50 and p99, nearest rank) and ``--concurrency`` at once (``concurrent``: requests/s, p50, p99). The
round with the median one-at-a-time p50 is kept, with every round's p50. For the built-in scenarios the cost
per tool turn is ``(p50 - builtin_0 p50) / calls``, one at a time. Also recorded: the machine and load average.
Client threads share the servers' process (and GIL), so absolute numbers are lower bounds of what a separate
server does; the scenarios are compared side by side in one run. A real model's decoding, not measured here,
adds its own time per token on top.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

ADD = {"type": "function", "function": {"name": "add", "description": "Add two integers.",
                                        "parameters": {"type": "object", "properties": {"a": {"type": "integer"},
                                                                                        "b": {"type": "integer"}}}}}
CALL = '<tool_call>\n{"name": "%s", "arguments": %s}\n</tool_call>'


def reply(prompt: str) -> str:
    """The scripted model: the scenario is in the user's message ("plain", "client", "builtin N")."""
    user = prompt.split("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0]
    if user == "client":
        return "Adding.\n</think>\n\n" + CALL % ("add", '{"a": 3, "b": 4}')
    if user.startswith("builtin"):
        if prompt.count("<tool_response>") < int(user.split()[1]):
            return "Compute.\n" + CALL % ("calculator", '{"expression": "37*41"}')
        return "Done.\n</think>\n\n1517"
    return "Just answer.\n</think>\n\n7"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(round(q * len(ordered) + 0.5)) - 1))]


def run_scenario(client, name: str, content: str, tools, requests: int, concurrency: int) -> dict:
    def one(_):
        t = time.perf_counter()
        kw = {"tools": tools} if tools else {}
        r = client.chat.completions.create(model="bench", messages=[{"role": "user", "content": content}],
                                           reasoning_effort="low", max_completion_tokens=1000, **kw)
        return time.perf_counter() - t, r

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        out = list(pool.map(one, range(requests)))
    wall = time.perf_counter() - t0
    lat = [x for x, _ in out]
    last = out[-1][1]
    return {"scenario": name, "requests": requests, "requests_per_s": round(requests / wall, 1),
            "p50_ms": round(1000 * percentile(lat, 0.5), 2), "p99_ms": round(1000 * percentile(lat, 0.99), 2),
            "finish_reason": last.choices[0].finish_reason, "content": last.choices[0].message.content,
            "tool_use": (last.model_extra or {}).get("tool_use")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=128)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=5, help="every scenario runs once per round; the median is kept")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve_tools.json"))
    args = ap.parse_args()

    import openai
    import torch

    from scripted_scheduler import ScriptedScheduler
    from serve_helpers import serve_in_thread
    from slowthink.models import build_model
    from slowthink.serve.app import create_app
    from slowthink.tokenizer import build_char_tokenizer
    from slowthink.tools.base import ToolSet

    torch.set_num_threads(1)
    tok = build_char_tokenizer()
    model = build_model("tiny", tok, seed=0, max_positions=4096).eval()

    def scripted_app(builtin):
        app = create_app(model, tok, "bench", builtin_tools=builtin, max_batch=64)
        app.state.server.scheduler = app.state.scheduler = ScriptedScheduler(tok, reply)
        return app

    scenarios = [(None, "plain", "plain", None), (None, "client_tools", "client", [ADD]),
                 ("tools", "builtin_0", "builtin 0", None), ("tools", "builtin_1", "builtin 1", None),
                 ("tools", "builtin_4", "builtin 4", None)]
    rounds: dict[str, list[dict]] = {s[1]: [] for s in scenarios}
    with serve_in_thread(scripted_app(None), start_timeout=120) as plain_port, \
            serve_in_thread(scripted_app(ToolSet(["calculator"])), start_timeout=120) as tools_port:
        clients = {key: openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0,
                                      timeout=120) for key, port in ((None, plain_port), ("tools", tools_port))}
        for key, client in clients.items():
            run_scenario(client, "warmup", "plain" if key is None else "builtin 1", None, 16, 4)
        for _ in range(args.rounds):  # interleaved, so a burst of load elsewhere hits every scenario alike
            for key, name, content, tools in scenarios:
                alone = run_scenario(clients[key], name, content, tools, args.requests, 1)
                busy = run_scenario(clients[key], name, content, tools, args.requests, args.concurrency)
                rounds[name].append({**alone, "requests_per_s": None, "concurrent": {
                    k: busy[k] for k in ("requests_per_s", "p50_ms", "p99_ms")}})
    results = []
    for name, runs in rounds.items():
        mid = sorted(runs, key=lambda r: r["p50_ms"])[len(runs) // 2]  # the round with the median p50
        results.append({**{k: v for k, v in mid.items() if k != "requests_per_s"},
                        "p50_ms_per_round": [r["p50_ms"] for r in runs]})
    by = {r["scenario"]: r for r in results}
    for name, calls in (("builtin_1", 1), ("builtin_4", 4)):
        by[name]["per_tool_turn_ms"] = round((by[name]["p50_ms"] - by["builtin_0"]["p50_ms"]) / calls, 2)
    report = {"benchmark": "serve_tools", "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
              "settings": {"requests": args.requests, "concurrency": args.concurrency, "rounds": args.rounds,
                           "reasoning_effort": "low",
                           "model": "scripted (tests/scripted_scheduler.py): no decoding is measured"},
              "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "python": platform.python_version(), "torch": torch.__version__,
                          "load_average": [round(v, 2) for v in os.getloadavg()]},
              "results": results}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    for r in results:
        print(f"{r['scenario']:13s} alone: p50 {r['p50_ms']:7.2f} ms p99 {r['p99_ms']:7.2f} ms   "
              f"{args.concurrency} at once: {r['concurrent']['requests_per_s']:7.1f} req/s   "
              f"per tool turn: {r.get('per_tool_turn_ms', '-')} ms")


if __name__ == "__main__":
    main()
