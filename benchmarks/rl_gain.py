"""RL gain: from one SFT checkpoint at the edge of its competence, how far does each RL method lift
held-out pass@1 in the same wall-time budget on this machine?

    python benchmarks/rl_gain.py --budget-s 180                 # start checkpoint + every method, ~25 min on 2 cores
    python benchmarks/rl_gain.py --methods grpo --budget-s 900  # the headline: GRPO, 15 minutes
    python benchmarks/rl_gain.py --methods rloo,ppo --budget-s 300 --out benchmarks/results/rl_gain_table.json

The start checkpoint (``--init``, default: made once and cached in ``runs/rl_start``) is the levels-1-2
quickstart recipe (``recipes/quickstart_l12.yaml``) stopped early: the ``small`` preset after 350 SFT
steps on 2-digit multiplication (worked solutions and direct answers), when its held-out System-2 greedy pass@1 on 2x2 digits is low but not
zero. Every method then trains from it on the same level with the same time budget (``time_budget_s``
of its config: the run stops after the step that crosses it, evaluates, and saves), the same held-out
problems (the task's fixed held-out split, ``--eval-per-level`` of them) and the same generation limit.
Reported per method: held-out pass@1 at the start and at the end, wall seconds, samples generated
(completions the policy sampled, including STaR's and DPO's offline sampling), and the learning curve.
Methods of one invocation run one after another, never side by side. A table may also be run in parts,
one process per part with ``--threads 1`` side by side on the cores, and merged by ``rl_gain_merge.py``
(the merged JSON keeps each part's command and load averages; benchmarks/README.md says how each table ran).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from slowthink.train.runlog import read_metrics, write_json

TASK = dict(task="arithmetic", task_args={"op": "mul", "cot": "cells"})
START = dict(levels=[1, 2], level_weights=[1, 3], model="small", steps=350, batch_size=64, lr=6e-4,
             optimizer="adamw", warmup_steps=30, system2_fraction=0.75)


def make_start(out: Path, threads: int) -> Path:
    from slowthink.train.sft import SFTConfig, train

    if not (out / "model" / "config.json").exists():
        train(SFTConfig(out=str(out), **TASK, **START, eval_every=0, eval_per_level=16, threads=threads))
    return out / "model"


def common(args, init: Path, out: Path) -> dict:
    return dict(out=str(out), init=str(init), **TASK, levels=[args.level], mode="system2",
                max_new_tokens=args.max_new_tokens, eval_per_level=args.eval_per_level, eval_every=args.eval_every,
                time_budget_s=args.budget_s, steps=100_000, threads=args.threads, seed=args.seed, progress=True)


def pg(name: str, **overrides):
    """A policy-gradient method on the GRPO loop (GRPO, Dr. GRPO, DAPO, RLOO), with its switches."""
    def build(args, init, out):
        if name == "rloo":
            from slowthink.rl.rloo import RLOOConfig as Config, train
        else:
            from slowthink.rl.grpo import GRPOConfig as Config, train
        return Config(**common(args, init, out), prompts_per_step=args.prompts_per_step,
                      group_size=args.group_size, lr=args.lr, temperature=args.temperature,
                      optimizer=args.optimizer, momentum=args.momentum, **overrides), train
    return build


def ppo(args, init, out):
    from slowthink.rl.ppo import PPOConfig, train

    return PPOConfig(**common(args, init, out), prompts_per_step=args.prompts_per_step, group_size=args.group_size,
                     lr=args.ppo_lr, temperature=args.temperature, epochs_per_step=2), train


def star(args, init, out):
    """STaR without rationalisation (hints only cost samples here, dev/LOG.md); it stops after the
    iteration that crosses the budget (or after ``--star-iterations``), so its wall time can overshoot
    the budget by up to one iteration: reported as measured."""
    from slowthink.rl.star import STaRConfig, train

    c = common(args, init, out)
    for k in ("eval_every", "steps"):
        c.pop(k)
    return STaRConfig(**c, iterations=args.star_iterations, problems_per_iteration=128,
                      samples_per_problem=args.group_size, temperature=args.temperature, rationalize=False), train


def dpo(args, init, out):
    from slowthink.rl.dpo import DPOConfig, train

    c = common(args, init, out)
    for k in ("time_budget_s", "steps"):
        c.pop(k)
    c["eval_every"] = 0  # before and after only
    return DPOConfig(**c, num_problems=args.dpo_problems, samples_per_problem=args.group_size,
                     temperature=args.temperature, epochs=2.0), train


METHODS = {
    "grpo": pg("grpo", loss_agg="sequence_mean", clip_high=0.2),
    "grpo_defaults": pg("grpo"),  # `slowthink train grpo`'s defaults: token-mean loss, clip-higher 0.28, std-scaled
    "dr_grpo": pg("grpo", loss_agg="constant_normalizer", scale_by_std=False, clip_high=0.2),
    "dapo": pg("grpo", loss_agg="token_mean", clip_high=0.28, dynamic_sampling=True, overlong_filter=True),
    "rloo": pg("rloo"),
    "ppo": ppo,
    "star": star,
    "dpo": dpo,
}


def summarize(name: str, run: Path, wall: float, k: int) -> dict:
    rows = read_metrics(run)
    evals = [(r["step"], r["eval/system2_pass@1"]) for r in rows if "eval/system2_pass@1" in r]
    # GRPO-loop trainers log cumulative samples; STaR logs each iteration's; DPO its offline sampling.
    if name == "star":
        samples = sum(r.get("samples", 0) for r in rows)
    elif name == "dpo":
        samples = k * max((r.get("data/problems", 0) for r in rows), default=0)
    else:
        samples = max((r.get("samples", 0) for r in rows), default=0)
    return {"method": name, "start_pass@1": evals[0][1], "final_pass@1": evals[-1][1],
            "gain_points": round(100 * (evals[-1][1] - evals[0][1]), 1), "wall_s": round(wall, 1),
            "samples": samples, "steps": max(r["step"] for r in rows), "curve": evals, "run": str(run)}


def plot(results: list[dict], path: Path, budget: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        steps = [s for s, _ in r["curve"]]
        last = max(steps) or 1
        ax.plot([s / last * r["wall_s"] / 60 for s in steps], [v for _, v in r["curve"]], marker="o",
                label=f"{r['method']} ({r['final_pass@1']:.0%})")
    ax.set_xlabel("wall time (minutes, step-proportional)")
    ax.set_ylabel("held-out System-2 greedy pass@1")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"RL from one SFT checkpoint, {budget / 60:.0f} min each")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from {list(METHODS)}")
    p.add_argument("--init", default="", help="start model folder (default: make runs/rl_start)")
    p.add_argument("--level", type=int, default=2)
    p.add_argument("--budget-s", type=float, default=300.0, help="wall-time budget per method")
    p.add_argument("--prompts-per-step", type=int, default=16)
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--optimizer", default="sgd", help="GRPO-loop methods' optimizer (adamw or sgd; dev/LOG.md)")
    p.add_argument("--momentum", type=float, default=0.0)
    p.add_argument("--lr", type=float, default=3e-3, help="GRPO-loop methods' lr (SGD step on the clipped gradient)")
    p.add_argument("--ppo-lr", type=float, default=1e-5, help="PPO's AdamW lr (PPO keeps AdamW)")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--star-iterations", type=int, default=4, help="STaR's iteration cap (the budget also stops it)")
    p.add_argument("--dpo-problems", type=int, default=256,
                   help="problems DPO samples its pairs from (offline: one sampling phase, then 2 epochs on the pairs)")
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--eval-per-level", type=int, default=200)
    p.add_argument("--eval-every", type=int, default=40)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", default="runs/rl_gain", help="where the method runs go")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "rl_gain.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        p.error(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    init = Path(args.init) if args.init else make_start(ROOT / "runs" / "rl_start", args.threads)
    load = os.getloadavg()
    results = []
    for name in names:
        out = Path(args.runs) / name
        if out.exists():
            import shutil

            shutil.rmtree(out)  # a fresh run: the budget must not include a previous run's steps
        cfg, train = METHODS[name](args, init, out)
        t0 = time.time()
        train(cfg)
        results.append(summarize(name, out, time.time() - t0, args.group_size))
        print(json.dumps({k: v for k, v in results[-1].items() if k != "curve"}))
    report = {"benchmark": "rl_gain", "command": " ".join(sys.argv), "init": str(init), "level": args.level,
              "settings": {k: v for k, v in vars(args).items() if k not in ("out", "runs")},
              "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "torch": torch.__version__, "loadavg_before": load, "loadavg_after": os.getloadavg()},
              "results": results}
    out = Path(args.out)
    write_json(out, report)
    plot(results, out.with_suffix(".png"), args.budget_s)
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
