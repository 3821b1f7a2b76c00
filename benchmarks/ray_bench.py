"""Ray mode against local mode on this machine: throughput, the same learning run locally and on Ray, staleness
with and without correction, a run whose workers are killed at random, a straggler, and a throughput model from
the measured per-component costs.

    python benchmarks/ray_bench.py                       # every part, ~15 min on 2 cores -> results/ray.json
    python benchmarks/ray_bench.py --parts same_result   # one part; its result is merged into the existing JSON

The script re-runs itself inside a network namespace with only loopback (``unshare -n -p -f --mount-proc``; root)
so Ray's traffic stays on the machine. The policy is a tiny model given a short SFT on 1-digit addition (made
here, ~1 min); every GRPO run starts from it with the same seed. Samples/s counts every step but the first (the
first includes the actors' start); throughput runs are interleaved and medians reported. Load averages are
recorded before and after each part: the machine is shared.

``same_result`` and ``staleness`` need a run that learns: the tiny model given System-2 (worked solution) SFT on
1- and 2-digit addition, snapshot at step 350 of 600 (~1.5 min, made here), then GRPO on 2-digit addition in
System-2 (``LEARN``), held-out greedy pass@1 on 200 level-2 problems by the trainer's own held-out evaluation.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import signal
import sys
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

WORK = Path("/tmp/slowthink_ray_bench")
BASE = dict(steps=6, prompts_per_step=8, group_size=8, max_new_tokens=16, lr=3e-4, eval_every=0, eval_per_level=0,
            checkpoint_every=100, progress=False, seed=1, levels=[1], threads=1)
# the learning setting of same_result and staleness (chosen because held-out pass@1 rises from its start: the
# System-1 starts and lrs tried are in dev/LOG.md); eval every quarter of the run
LEARN = dict(steps=200, prompts_per_step=8, group_size=8, max_new_tokens=40, lr=3e-5, mode="system2", levels=[2],
             eval_every=50, eval_per_level=200, checkpoint_every=1000, progress=False, seed=1, threads=1)
LEARN_SFT = dict(steps=600, snapshot=350, levels=[1, 2], batch_size=32, lr=3e-3, system2_fraction=1.0)


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def sft_model() -> str:
    from conftest import tiny_sft
    from slowthink.tokenizer import build_char_tokenizer

    folder = WORK / "sft150"
    if not (folder / "model" / "config.json").exists():
        tiny_sft(folder, build_char_tokenizer(), steps=150, system2_fraction=0.0)
    return str(folder / "model")


def learn_start() -> str:
    """The start of the learning runs: a System-2 SFT on 1-2 digit addition, its step-``snapshot`` model (held-out
    level-2 pass@1 ~14%: room to learn)."""
    from slowthink.models import build_model
    from slowthink.tokenizer import build_char_tokenizer
    from slowthink.train.sft import SFTConfig, train

    c, folder = LEARN_SFT, WORK / "s2sft"
    model = folder / "snapshots" / f"step_{c['snapshot']}"
    if not (model / "config.json").exists():
        tok = build_char_tokenizer()
        cfg = SFTConfig(out=str(folder), levels=c["levels"], steps=c["steps"], batch_size=c["batch_size"], lr=c["lr"],
                        optimizer="adamw", warmup_steps=5, system2_fraction=c["system2_fraction"], micro_batches=1,
                        eval_every=0, eval_per_level=0, checkpoint_every=1000, threads=1, progress=False,
                        snapshot_every=c["snapshot"])
        train(cfg, task=task(), model=build_model("tiny", tok, seed=0), tok=tok)
    return str(model)


def task():
    from slowthink.tasks import Arithmetic

    return Arithmetic(op="add", max_level=2)


def grpo(init: str, name: str, base: dict | None = None, **kw) -> tuple[list[dict], list[dict], float]:
    """A GRPO run from scratch (its folder emptied first) with ``base`` (default ``BASE``) updated by ``kw``: its
    per-step metrics, its held-out evaluations and its wall seconds."""
    import shutil

    from slowthink.rl.grpo import GRPOConfig, train
    from slowthink.train.runlog import read_metrics

    out = WORK / name
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    train(GRPOConfig(init=init, out=str(out), **{**(base or BASE), **kw}), task=task())
    rows = [m for m in read_metrics(out) if "reward_mean" in m]
    evals = [{k: v for k, v in m.items() if k == "step" or k.startswith("eval/")} for m in read_metrics(out)
             if any(k.startswith("eval/") for k in m)]
    return rows, evals, time.perf_counter() - t0


def samples_per_s(rows: list[dict], base: dict = BASE) -> float:
    """Samples over wall time of every step but the first."""
    later = rows[1:]
    return len(later) * base["prompts_per_step"] * base["group_size"] / sum(r["step_s"] for r in later)


def median(xs: list[float]) -> float:
    xs = sorted(xs)
    return (xs[(len(xs) - 1) // 2] + xs[len(xs) // 2]) / 2


def part_throughput(init: str, rounds: int, steps: int, prompts: int = BASE["prompts_per_step"]) -> dict:
    """Local, Ray with 1 and with 2 workers, interleaved ``rounds`` times (the machine's load drifts); per mode the
    median over all rounds' steps (first step of each run left out) of step, rollout, learner and sync seconds.
    ``prompts``: problems per step (each with ``group_size`` samples): Ray's cost per step is fixed, so a larger
    step spreads it thinner."""
    out = {"load_before": load(), "rounds": rounds, "steps_per_run": steps, "prompts_per_step": prompts}
    runs = {"local": {}, "ray_1_worker": dict(ray="local", rollout_workers=1, worker_cpus=1.0),
            "ray_2_workers": dict(ray="local", rollout_workers=2, worker_cpus=1.0)}
    steps_of = {name: [] for name in runs}
    for _ in range(rounds):
        for name, kw in runs.items():
            rows, _, _ = grpo(init, f"tp_{name}", steps=steps, prompts_per_step=prompts, **kw)
            steps_of[name] += rows[1:]
    n = prompts * BASE["group_size"]
    for name, rows in steps_of.items():
        out[name] = {k: median([r.get(k, 0.0) for r in rows]) for k in ("step_s", "rollout_s", "learner_s", "sync_s",
                                                                        "sync_mb")}
        out[name]["samples_per_s"] = n / out[name]["step_s"]
        out[name]["step_s_all"] = [round(r["step_s"], 3) for r in rows]
    for name in ("ray_1_worker", "ray_2_workers"):
        out[name]["overhead_vs_local"] = 1 - out[name]["samples_per_s"] / out["local"]["samples_per_s"]
    out["load_after"] = load()
    return out


def pass_se(p: float, n: int) -> float:
    """Standard error of a pass rate ``p`` measured on ``n`` problems: sqrt(p (1 - p) / n)."""
    if n <= 0 or not 0.0 <= p <= 1.0:
        raise ValueError(f"pass rate needs n > 0 and 0 <= p <= 1, got p={p}, n={n}")
    return math.sqrt(p * (1 - p) / n)


def compare_pass(p_a: float, n_a: int, p_b: float, n_b: int) -> dict:
    """``b - a`` with the standard error of the difference of two independent pass rates, and whether the
    difference is within one such standard error."""
    diff, se = p_b - p_a, math.hypot(pass_se(p_a, n_a), pass_se(p_b, n_b))
    return {"diff": diff, "se_diff": se, "within_one_se": abs(diff) <= se}


def heldout_curve(evals: list[dict], mode: str) -> list[dict]:
    """The run's held-out evaluations as ``{step, pass, n, se}`` (the trainer's greedy pass@1 in ``mode``)."""
    key = f"eval/{mode}_pass@1"
    return [{"step": e["step"], "pass": e[key], "n": e[f"eval/{mode}_n"],
             "se": pass_se(e[key], e[f"eval/{mode}_n"])} for e in evals if key in e]


def learning_run(init: str, name: str, **kw) -> dict:
    """A ``LEARN`` GRPO run: per-step reward and staleness, held-out curve, speed, the load around it."""
    before = load()
    rows, evals, wall = grpo(init, name, base=LEARN, **kw)
    return {"load_before": before, "load_after": load(), "wall_s": wall, "steps": len(rows),
            "samples": rows[-1]["samples"], "samples_per_s": samples_per_s(rows, LEARN),
            "reward": [r["reward_mean"] for r in rows], "pass_rate": [r["pass_rate"] for r in rows],
            "staleness_max": [r.get("staleness_max", 0.0) for r in rows],
            "logp_diff_mean": [r.get("logp_diff_mean") for r in rows],
            "is_weight_mean": [r.get("is_weight_mean") for r in rows],
            "heldout": heldout_curve(evals, LEARN["mode"]),
            # logged only by a Ray rollout pool: shows the samples came from the actors
            "steps_with_weight_sync": sum("sync_mb" in r for r in rows),
            "sync_s_median": median([r["sync_s"] for r in rows if "sync_s" in r]) if "sync_s" in rows[-1] else None,
            "step_s_median": median([r["step_s"] for r in rows[1:]])}


def part_same_result(init: str) -> dict:
    """From the same start and seed, a local GRPO run and a Ray run with 2 rollout workers, the same steps and
    samples: held-out pass@1 at the start and the end of each, and whether the end points agree within one
    standard error (computed, not asserted)."""
    out = {"settings": LEARN, "start": init, "load_before": load()}
    out["local"] = learning_run(init, "same_local")
    out["ray_2_workers"] = learning_run(init, "same_ray", ray="local", rollout_workers=2, worker_cpus=1.0)
    ends = {name: out[name]["heldout"][-1] for name in ("local", "ray_2_workers")}
    for name in ("local", "ray_2_workers"):  # each run learned: its gain over its own start
        first = out[name]["heldout"][0]
        out[name]["gain"] = compare_pass(first["pass"], first["n"], ends[name]["pass"], ends[name]["n"])
    out["end_ray_minus_local"] = compare_pass(ends["local"]["pass"], ends["local"]["n"],
                                              ends["ray_2_workers"]["pass"], ends["ray_2_workers"]["n"])
    out["within_one_se"] = out["end_ray_minus_local"]["within_one_se"]
    out["same_samples_count"] = out["local"]["samples"] == out["ray_2_workers"]["samples"]
    out["reward_max_abs_diff"] = max(abs(a - b) for a, b in zip(out["local"]["reward"],
                                                                 out["ray_2_workers"]["reward"]))
    out["load_after"] = load()
    return out


STALENESS_ARMS = {"k0": {}, "k1": dict(async_rollout=True, max_staleness=1),
                  "k1_tis": dict(async_rollout=True, max_staleness=1, is_correction="token"),
                  "k2": dict(async_rollout=True, max_staleness=2),
                  "k2_tis": dict(async_rollout=True, max_staleness=2, is_correction="token")}


def part_staleness(init: str, lr: float) -> dict:
    """The ``LEARN`` run (at ``lr``) on Ray (2 workers) at staleness 0, 1, 2, without and with token-level
    truncated IS."""
    out = {"settings": {**LEARN, "lr": lr}, "start": init, "load_before": load(), "arms": STALENESS_ARMS}
    for name, kw in STALENESS_ARMS.items():
        out[name] = learning_run(init, f"st_{name}", ray="local", rollout_workers=2, worker_cpus=1.0, lr=lr, **kw)
    out["load_after"] = load()
    return out


def _actor_pids(name: str) -> list[int]:
    import psutil

    pids = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if cmd.startswith(f"ray::{name}"):
            pids.append(p.pid)
    return pids


def part_kills(init: str, steps: int, kills: int) -> dict:
    """A run where a random rollout worker is SIGKILLed at random moments; every step must still have all its
    samples (the pool raises otherwise) and the run must finish."""
    rng, killed, stop = random.Random(0), [], threading.Event()

    import shutil

    metrics_file = WORK / "kills" / "metrics.jsonl"
    shutil.rmtree(WORK / "kills", ignore_errors=True)

    def killer():  # from the first logged step on, a kill every 0.5-2 s (a step here takes ~0.1 s)
        while not stop.is_set() and not (metrics_file.exists() and metrics_file.stat().st_size):
            time.sleep(0.05)
        while not stop.is_set() and len(killed) < kills:
            time.sleep(rng.uniform(0.5, 2.0))
            pids = _actor_pids("RolloutActor")
            if pids:
                victim = rng.choice(pids)
                try:
                    os.kill(victim, signal.SIGKILL)
                    killed.append((time.time(), victim))
                except ProcessLookupError:
                    pass

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    rows, _, wall = grpo(init, "kills", ray="local", rollout_workers=2, steps=steps)
    stop.set()
    n = BASE["prompts_per_step"] * BASE["group_size"]
    start = rows[0]["time"] - rows[0]["step_s"] if rows else 0.0  # the training window: first step's start to last's end
    during = [k for k in killed if rows and start <= k[0] <= rows[-1]["time"]]
    return {"load": load(), "steps_done": len(rows), "kills": [(round(t - start, 2), pid) for t, pid in killed],
            "kills_during_training": len(during), "wall_s": wall,
            "samples_per_step": n, "samples_total": rows[-1]["samples"] if rows else 0,
            "every_sample_accounted": bool(rows) and rows[-1]["samples"] == len(rows) * n,
            "workers_replaced": max((r.get("replaced_workers", 0) for r in rows), default=0),
            "reassigned_problems_per_step": [r.get("reassigned_problems", 0) for r in rows]}


def part_straggler(init: str, delay_s: float, timeout_s: float) -> dict:
    from slowthink.chat import Mode
    from slowthink.distributed.rollout_pool import RayRolloutPool
    from slowthink.engine import SamplingParams
    from slowthink.models import load_model
    from slowthink.rl.batch import sample_problems
    from slowthink.rl.rewards import RewardFn

    model, tok = load_model(init)
    pool = RayRolloutPool(model, tok, task(), RewardFn(), 2, cpus=1.0, timeout_s=timeout_s)
    pool.load_weights(model.state_dict(), 0)
    problems = sample_problems(task(), 0, 0, BASE["prompts_per_step"], [1])
    sampling = SamplingParams(max_tokens=BASE["max_new_tokens"], temperature=1.0, seed=5)
    t0 = time.perf_counter()
    ref = pool.rollout(problems, Mode.SYSTEM1, BASE["group_size"], sampling)
    healthy = time.perf_counter() - t0
    pool.pop_metrics()
    pool.set_delay(1, delay_s)
    t0 = time.perf_counter()
    got = pool.rollout(problems, Mode.SYSTEM1, BASE["group_size"], sampling)
    slow = time.perf_counter() - t0
    m = pool.pop_metrics()
    pool.close()
    same = [[c.token_ids for c in g.completions] for g in ref] == [[c.token_ids for c in g.completions] for g in got]
    return {"load": load(), "healthy_rollout_s": healthy, "straggler_delay_s": delay_s, "timeout_s": timeout_s,
            "rollout_with_straggler_s": slow, "same_samples": same, **m}


def part_sync(init: str, syncs: int) -> dict:
    """Where a weight sync's time goes (the learning start, 2 workers, every tensor changed as after an AdamW
    step): the driver's diff, ``ray.put`` of the tensors as sent (``pack``ed byte arrays) and, side by side, of the
    same tensors pickled as torch tensors, the actors' load round trip, and an empty call's round trip."""
    from slowthink.distributed.rollout_pool import RayRolloutPool, pack
    from slowthink.models import load_model
    from slowthink.rl.rewards import RewardFn

    model, tok = load_model(init)
    pool = RayRolloutPool(model, tok, task(), RewardFn(), 2, cpus=1.0)
    pool.load_weights(model.state_dict(), 0, wait=True)
    times = {k: [] for k in ("load_weights_s", "put_packed_s", "put_torch_s", "actors_load_s", "empty_call_s")}

    def timed(key, fn):
        t0 = time.perf_counter()
        out = fn()
        times[key].append(time.perf_counter() - t0)
        return out

    import ray
    for version in range(1, syncs + 1):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1e-4)
        timed("load_weights_s", lambda: pool.load_weights(model.state_dict(), version, wait=True))
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        ref = timed("put_packed_s", lambda: ray.put(pack(state)))
        timed("put_torch_s", lambda: ray.put(state))
        timed("actors_load_s", lambda: ray.get([a.load_weights.remote(ref, version) for a in pool.actors]))
        timed("empty_call_s", lambda: ray.get([a.pid.remote() for a in pool.actors]))
    pool.close()
    mb = sum(v.numel() * v.element_size() for v in model.state_dict().values()) / 2**20
    return {"load": load(), "syncs": syncs, "state_mb": mb, **{k: median(v) for k, v in times.items()}}


def throughput_model(tp: dict) -> dict:
    """Step time from measured per-component costs. Per step: S samples; r = local rollout seconds per sample on
    one worker, l = learner seconds per sample, s = weight-sync seconds. Synchronous Ray with N workers and M
    learners: T = s + S r / N + S l / M; asynchronous (staleness >= 1): T = max(S r / N, s + S l / M)."""
    S = tp.get("prompts_per_step", BASE["prompts_per_step"]) * BASE["group_size"]
    one = tp["ray_1_worker"]
    r = one["rollout_s"] / S
    l_cost = one["learner_s"] / S
    s = one["sync_s"]

    def sync(n, m):
        return S / (s + S * r / n + S * l_cost / m)

    def asyn(n, m):
        return S / max(S * r / n, s + S * l_cost / m)

    table = {f"N{n}_M{m}": {"sync_samples_per_s": sync(n, m), "async_samples_per_s": asyn(n, m),
                            "async_speedup": asyn(n, m) / sync(n, m)} for n in (1, 2, 4, 8, 16) for m in (1, 2, 4)}
    return {"rollout_s_per_sample": r, "learner_s_per_sample": l_cost, "sync_s": s,
            "predicted_ray_2_workers_samples_per_s": sync(2, 1),
            "measured_ray_2_workers_samples_per_s": tp["ray_2_workers"]["samples_per_s"],
            "note": "2 workers on 2 cores share the cores with the learner and other engineers' jobs, so the "
                    "model's N-fold rollout speed-up cannot show here; it predicts machines with a core (GPU) per "
                    "worker",
            "table": table,
            "published": {"veRL fully async (128 GPUs)": "2.35-2.67x over synchronous",
                          "AReaL (arXiv:2505.24298)": "up to 2.77x over synchronous"}}


def moving_mean(xs: list[float], width: int) -> list[float]:
    """Mean of each value and the ``width - 1`` before it (fewer at the start)."""
    return [sum(xs[max(0, i - width + 1):i + 1]) / (i + 1 - max(0, i - width + 1)) for i in range(len(xs))]


def plot(st: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_r, ax_h) = plt.subplots(1, 2, figsize=(11, 4))
    for i, name in enumerate(a for a in STALENESS_ARMS if a in st):
        style = dict(label=name, color=f"C{i}", ls="--" if name.endswith("tis") else "-")
        reward = st[name]["reward"]
        ax_r.plot(range(1, len(reward) + 1), moving_mean(reward, 10), **style)
        curve = st[name]["heldout"]
        ax_h.errorbar([c["step"] for c in curve], [c["pass"] for c in curve], yerr=[c["se"] for c in curve],
                      marker="o", capsize=3, **style)
    samples = st["settings"]["prompts_per_step"] * st["settings"]["group_size"]
    ax_r.set(xlabel="step", ylabel=f"mean reward of the step's {samples} samples",
             title="training reward (10-step moving mean)")
    ax_h.set(xlabel="step", ylabel="greedy pass@1 (+-1 SE)",
             title=f"held-out ({st['settings']['eval_per_level']} problems)")
    ax_r.legend()
    fig.suptitle(f"GRPO through Ray (2 workers), lr {st['settings']['lr']:g}: staleness k, with (tis) and without "
                 "correction")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def dumps(obj) -> str:
    """JSON with one value per line, except lists of numbers (per-step curves), which stay on one line."""
    import re

    return re.sub(r"\[([^\[\]{}\"]*)\]", lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]",
                  json.dumps(obj, indent=1))


PARTS = ("throughput", "sync", "same_result", "staleness", "kills", "straggler")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--parts", default=",".join(PARTS))
    p.add_argument("--rounds", type=int, default=2, help="throughput: interleaved rounds of local / Ray runs")
    p.add_argument("--steps", type=int, default=8, help="throughput: steps per run")
    p.add_argument("--prompts", type=int, default=BASE["prompts_per_step"], help="throughput: problems per step "
                   "(results under throughput_pN when not the default)")
    p.add_argument("--learn-steps", type=int, default=LEARN["steps"],
                   help="same_result, staleness: GRPO steps per run (held-out eval every quarter)")
    p.add_argument("--staleness-lr", type=float, default=LEARN["lr"],
                   help="staleness: GRPO lr; other than LEARN's, the part is stored as staleness_lr<LR> (own PNG)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ray.json"))
    p.add_argument("--replot", action="store_true", help="only redraw the staleness PNGs from the JSON")
    args = p.parse_args()
    if args.replot:
        for key, part in json.loads(Path(args.out).read_text()).items():
            if key.startswith("staleness") and "arms" in part:
                plot(part, Path(args.out).with_name(f"ray_{key}.png"))
        return
    parts = args.parts.split(",")
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise SystemExit(f"--parts: unknown {sorted(unknown)}; choose from {', '.join(PARTS)}")
    if args.learn_steps < 4:
        raise SystemExit(f"--learn-steps must be >= 4 (an eval every quarter), got {args.learn_steps}")
    LEARN.update(steps=args.learn_steps, eval_every=args.learn_steps // 4)
    if os.environ.get("SLOWTHINK_RAY_BENCH_NS") != "1":  # re-run inside a loopback-only network namespace
        import subprocess

        from slowthink.distributed.cluster import loopback_command

        env = {**os.environ, "SLOWTHINK_RAY_BENCH_NS": "1"}
        cmd = loopback_command([str(Path(__file__).resolve()), *sys.argv[1:]])
        cmd[1:2] = ["-n", "-p", "-f", "--mount-proc"]
        sys.exit(subprocess.run(cmd, env=env).returncode)
    import ray

    WORK.mkdir(parents=True, exist_ok=True)
    # one torch thread per process: on this shared 2-core machine two OpenMP threads made the learner 5-20x
    # slower than one (measured), which would swamp what is compared here
    torch.set_num_threads(1)
    init = sft_model()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/ray_bench.py " + " ".join(sys.argv[1:])
    result = {}  # this invocation's parts

    def save():  # after every part, merged into the file: the parts it did not run, and a later failure, keep theirs
        old = json.loads(path.read_text()) if path.exists() else {}
        commands = old.get("command", "")
        if command not in commands.split(" ; "):
            commands = f"{commands} ; {command}" if commands else command
        merged = {**old, **result, "command": commands, "settings": BASE,
                  "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                              "ray": ray.__version__},
                  "model": "tiny preset, 150 SFT steps on 1-digit addition (System-1); same_result and staleness: "
                           "see their start and settings"}
        path.write_text(dumps(merged))

    if "throughput" in parts:
        key = "throughput" if args.prompts == BASE["prompts_per_step"] else f"throughput_p{args.prompts}"
        result[key] = part_throughput(init, args.rounds, args.steps, args.prompts)
        result[key.replace("throughput", "throughput_model")] = throughput_model(result[key])
        save()
    if "sync" in parts:
        result["sync"] = part_sync(learn_start(), syncs=40)
        save()
    if "same_result" in parts:
        result["same_result"] = part_same_result(learn_start())
        save()
    if "staleness" in parts:
        key = "staleness" if args.staleness_lr == LEARN["lr"] else f"staleness_lr{args.staleness_lr:g}"
        result[key] = part_staleness(learn_start(), args.staleness_lr)
        plot(result[key], path.with_name(f"ray_{key}.png"))
        save()
    if "kills" in parts:
        result["kills"] = part_kills(init, steps=60, kills=3)
        save()
    if "straggler" in parts:
        result["straggler"] = part_straggler(init, delay_s=120.0, timeout_s=10.0)
        save()
    ray.shutdown()
    print(json.dumps({k: v for k, v in result.items() if k in ("throughput", "kills", "straggler")}, indent=1)[:3000])
    for key, part in result.items():  # the learning parts: held-out pass@1 at each evaluation, per run
        for run, got in part.items():
            if isinstance(got, dict) and "heldout" in got:
                print(key, run, "held-out", [round(h["pass"], 3) for h in got["heldout"]])


if __name__ == "__main__":
    main()
