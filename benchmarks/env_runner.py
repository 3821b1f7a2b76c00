"""The episode runner's in-process driver, side by side with its peers, on one engine and model.

1. one_turn: a one-turn rollout (GRPO's: P problems x n samples, seeded) by the rollout worker's old loop (add
   every request, step until all are done) and by ``run_episodes`` over ``TaskEnv``s. Same outputs, bit for bit
   (checked), and the time of each.
2. multi_turn: episodes of several turns, each turn ending at a stop string and answered by an environment, by
   the driver (every episode's continuation decodes in the same batch) and one episode at a time (the same runner,
   called per episode: what a loop that finishes one episode before starting the next does). The turns are
   synthetic: a vowel stands for ``</tool_call>`` (a randomly initialised model writes one every ~20 tokens) and
   the environment answers with a fixed ``<tool_response>``, so the measurement is the scheduling, not a tool.

    python benchmarks/env_runner.py --threads 1 --out benchmarks/results/env_runner.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from slowthink.chat import Mode
from slowthink.engine import Engine, SamplingParams, derive_seed
from slowthink.env import Limits, StepResult, TaskEnv, run_episodes
from slowthink.models import build_model
from slowthink.rl.rewards import RewardFn
from slowthink.tasks import Arithmetic
from slowthink.tokenizer import build_char_tokenizer, render_prompt

VOWELS = ("a", "e", "i", "o", "u")


class SyntheticToolEnv(TaskEnv):
    """Each of the first ``tool_turns`` turns (they end at a vowel, the stop string) gets a fixed tool response;
    the next turn is the final one, scored by the task."""

    stop = VOWELS
    runs_tools = False  # the response is fixed: nothing blocks, so both contenders schedule deterministically

    def __init__(self, task, tool_turns: int):
        super().__init__(task, Mode.SYSTEM2, RewardFn())
        self.tool_turns, self.turns, self.limits = tool_turns, 0, Limits()

    def step(self, assistant_turn: str, num_tokens: int = 0) -> StepResult:
        self.turns += 1
        if self.turns <= self.tool_turns:
            return StepResult("\n<tool_response>\nok\n</tool_response>\n", 0.0, False, {"tool_calls": []})
        return super().step(assistant_turn, num_tokens)


def old_loop(engine, prompts, n, sampling):
    reqs = [engine.add(ids, n, dataclasses.replace(sampling, seed=derive_seed(sampling.seed, i)))
            for i, ids in enumerate(prompts)]
    while not all(r.done for r in reqs):
        engine.step()
    return [[(c.token_ids, c.logprobs, c.text) for c in r.completions] for r in reqs]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--problems", type=int, default=16)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=96)
    p.add_argument("--tool-turns", type=int, default=3)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="benchmarks/results/env_runner.json")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    load_before = os.getloadavg()
    tok = build_char_tokenizer()
    model = build_model("tiny", tok, seed=0).eval()
    task = Arithmetic(op="add", max_level=3)
    import random

    rng = random.Random(0)
    problems = [task.sample_split(rng, rng.choice([1, 2, 3]), "train") for _ in range(a.problems)]
    sampling = SamplingParams(max_tokens=a.max_tokens, temperature=1.0, seed=7)
    prompts = [render_prompt(tok, task.prompt(q, Mode.SYSTEM2), Mode.SYSTEM2) for q in problems]
    engine = Engine(model, tok)

    # 1. one turn: old loop vs runner, alternating
    old_t, new_t = [], []
    for _ in range(a.reps):
        before, t = timed(lambda: old_loop(engine, prompts, a.n, sampling))
        old_t.append(t)
        eps, t = timed(lambda: run_episodes(engine, tok, lambda: TaskEnv(task, Mode.SYSTEM2), problems,
                                            Mode.SYSTEM2, a.n, sampling))
        new_t.append(t)
        after = [[(e.token_ids, e.logprobs, e.completion().text) for e in row] for row in eps]
        if after != before:
            sys.exit("one-turn outputs differ between the old loop and the runner")

    # 2. multi-turn: batched driver vs one episode at a time
    make = lambda: SyntheticToolEnv(task, a.tool_turns)  # noqa: E731
    batched_t, serial_t = [], []
    for _ in range(a.reps):
        batched, t = timed(lambda: run_episodes(engine, tok, make, problems, Mode.SYSTEM2, a.n, sampling))
        batched_t.append(t)
        serial, t = timed(lambda: [run_episodes(engine, tok, make, [q], Mode.SYSTEM2, 1,
                                                dataclasses.replace(sampling, seed=derive_seed(7, i, j)))
                                   for i, q in enumerate(problems) for j in range(a.n)])
        serial_t.append(t)
    flat = [e for row in batched for e in row]
    turns = sum(e.turns for e in flat) / len(flat)
    tokens = sum(len(e.token_ids) for e in flat)
    med = statistics.median
    result = {
        "benchmark": "env_runner", "command": " ".join(sys.argv),
        "settings": vars(a), "model": "tiny preset (random init), char tokenizer",
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(),
                    "threads": a.threads, "torch": torch.__version__, "python": platform.python_version()},
        "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
        "one_turn": {"episodes": a.problems * a.n, "identical_outputs": True,
                     "old_loop_s": old_t, "runner_s": new_t,
                     "runner_over_old": med(new_t) / med(old_t)},
        "multi_turn": {"episodes": len(flat), "mean_turns": turns, "completion_tokens": tokens,
                       "batched_driver_s": batched_t, "one_episode_at_a_time_s": serial_t,
                       "speedup": med(serial_t) / med(batched_t)},
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("one_turn", "multi_turn")}, indent=2))


if __name__ == "__main__":
    main()
