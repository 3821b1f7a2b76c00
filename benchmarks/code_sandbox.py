"""The code task's sandbox on HumanEval: correctness of the verdicts, and what the sandbox costs.

    python benchmarks/code_sandbox.py          # ~1-2 minutes on 2 cores
    python benchmarks/code_sandbox.py --runs 200 --out benchmarks/results/code_sandbox.json

1. Verdicts. HumanEval's 164 canonical solutions, each scored by the ``code`` task as a model's answer (the
   full function in a ```python block), must pass: 164/164. Two broken versions of each must fail: the body
   replaced by ``return None``, and an off-by-one mutant (the first ``<``/``<=``/``>``/``>=`` of the body
   swapped with its neighbour, else the first integer constant plus one; solutions with neither are counted
   as not mutated). A mutant that still passes is one the tests cannot tell apart from the solution; the
   count is reported, not hidden. Scored 8 at a time, as in RL.
2. Cost per run. ``print(1)`` run ``--runs`` times in the sandbox (``run_python``) and as a bare
   ``python -c`` subprocess of the same interpreter (in a session of its own, as the sandbox's runs are),
   interleaved one by one so that the machine's load falls on both alike: median and p90 milliseconds each,
   and the difference.
3. Throughput. ``--runs`` sandbox runs of ``print(1)`` with 8 at once (a thread pool of 8), against the same
   number of bare subprocesses 8 at once, the two alternating in 4 blocks each: runs per second each.
The load average is recorded before and after: other processes share this machine's cores.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from slowthink.chat import Mode  # noqa: E402
from slowthink.tasks.code import CodeTask  # noqa: E402
from slowthink.tools.sandbox import MAX_CONCURRENT_RUNS, default_python, run_python  # noqa: E402

HUMANEVAL = ROOT.parent / "shared" / "data" / "humaneval" / "HumanEval.jsonl"
SWAP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt}


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[max(0, min(len(s) - 1, -(-int(q * len(s) * 1000) // 1000) - 1))]


def off_by_one(solution: str, entry_point: str) -> str | None:
    """The solution with one off-by-one change in the entry point's body, or None when it has no candidate."""
    tree = ast.parse(solution)
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == entry_point)
    nodes = [n for stmt in fn.body for n in ast.walk(stmt)]
    for node in nodes:
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                if type(op) in SWAP:
                    node.ops[i] = SWAP[type(op)]()
                    return ast.unparse(tree)
    for node in nodes:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            node.value += 1
            return ast.unparse(tree)
    return None


def verdicts(task: CodeTask) -> dict:
    problems = [task.sample(_Pick(i), 1) for i in range(len(task.records))]
    block = lambda code: f"```python\n{code.rstrip()}\n```"  # noqa: E731
    arms = {
        "canonical": [block(p.answer) for p in problems],
        "return_none": [block(f"{p.data['prompt']}    return None\n") for p in problems],
        "off_by_one": [None if (m := off_by_one(p.answer, p.data["entry_point"])) is None else block(m)
                       for p in problems],
    }
    out = {}
    for arm, answers in arms.items():
        jobs = [(p, a) for p, a in zip(problems, answers) if a is not None]
        start = time.perf_counter()
        with ThreadPoolExecutor(MAX_CONCURRENT_RUNS) as pool:
            scores = list(pool.map(lambda pa: task.score(pa[0], pa[1], Mode.SYSTEM1), jobs))
        wall = time.perf_counter() - start
        passed = [p.key for (p, _), s in zip(jobs, scores) if s.correct]
        out[arm] = {"scored": len(jobs), "passed": len(passed), "failed": len(jobs) - len(passed),
                    "not_scored": len(problems) - len(jobs), "wall_s": round(wall, 2),
                    "problems_per_s": round(len(jobs) / wall, 2),
                    "passed_ids" if arm != "canonical" else "failed_ids":
                        passed if arm != "canonical" else [p.key for (p, _), s in zip(jobs, scores) if not s.correct]}
        print(f"{arm}: {out[arm]['passed']}/{len(jobs)} pass ({wall:.1f} s)", flush=True)
    return out


class _Pick:
    """An rng for ``task.sample`` that picks record ``i``."""

    def __init__(self, i: int):
        self.i = i

    def randrange(self, n: int) -> int:
        return self.i


def bare(python: str) -> float:
    start = time.perf_counter()
    # A session of its own, as the sandbox's runs have: with the kernel's autogroup scheduling each session
    # gets its own share of the CPU, so without this the comparison under load would favour the sandbox.
    subprocess.run([python, "-c", "print(1)"], capture_output=True, check=True, env={}, timeout=30,
                   start_new_session=True)
    return time.perf_counter() - start


def sandboxed() -> float:
    start = time.perf_counter()
    result = run_python("print(1)", timeout_s=30)
    assert result.ok and result.stdout == "1\n", result
    return time.perf_counter() - start


def cost(runs: int, python: str) -> dict:
    box, plain = [], []
    for _ in range(runs):  # interleaved: load changes fall on both
        box.append(sandboxed())
        plain.append(bare(python))
    ms = lambda xs, q: round(1000 * percentile(xs, q), 1)  # noqa: E731
    return {"runs": runs, "sandbox_ms": {"median": round(1000 * statistics.median(box), 1), "p90": ms(box, 0.9)},
            "bare_python_ms": {"median": round(1000 * statistics.median(plain), 1), "p90": ms(plain, 0.9)},
            "overhead_ms_median": round(1000 * (statistics.median(box) - statistics.median(plain)), 1)}


def throughput(runs: int, python: str, rounds: int = 4) -> dict:
    """Runs per second, 8 at once; the two arms alternate in ``rounds`` blocks so load changes fall on both."""
    arms = {"sandbox": sandboxed, "bare_python": lambda: bare(python)}
    wall = dict.fromkeys(arms, 0.0)
    done = dict.fromkeys(arms, 0)
    with ThreadPoolExecutor(MAX_CONCURRENT_RUNS) as pool:
        for r in range(rounds):
            block = runs // rounds + (r < runs % rounds)
            for name, fn in arms.items():
                start = time.perf_counter()
                list(pool.map(lambda _: fn(), range(block)))
                wall[name] += time.perf_counter() - start
                done[name] += block
    out = {f"{name}_runs_per_s": round(done[name] / wall[name], 1) for name in arms}
    return {**out, "concurrency": MAX_CONCURRENT_RUNS, "runs": runs, "rounds": rounds}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(HUMANEVAL))
    ap.add_argument("--runs", type=int, default=100, help="runs for the cost and the throughput measurements")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "code_sandbox.json"))
    args = ap.parse_args()
    python = default_python()
    load_start = [round(v, 2) for v in os.getloadavg()]
    task = CodeTask(args.data)
    result = {
        "benchmark": "code_sandbox", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "machine": {"cpu": _cpu(), "cores": len(os.sched_getaffinity(0)), "os": platform.platform(),
                    "host_python": platform.python_version(), "sandbox_python": python,
                    "load_average_at_start": load_start},
        "settings": {"data": args.data, "problems": len(task.records), "timeout_s": task.timeout_s,
                     "memory_mb": task.memory_mb, "concurrency": MAX_CONCURRENT_RUNS, "runs": args.runs},
    }
    result["verdicts"] = verdicts(task)
    result["cost_per_run"] = cost(args.runs, python)
    print("cost:", result["cost_per_run"], flush=True)
    result["throughput"] = throughput(args.runs, python)
    print("throughput:", result["throughput"], flush=True)
    result["machine"]["sched_autogroup"] = _read("/proc/sys/kernel/sched_autogroup_enabled")
    result["machine"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
