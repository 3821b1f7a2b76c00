"""Zero start: can STaR bootstrap worked solutions from a model that saw only direct answers plus at most
10 worked examples? And does RL alone (no worked examples, format + correctness reward) get anywhere?

    python benchmarks/star_zero.py                 # ~10 min on 2 cores; writes benchmarks/results/star_zero.json (+ .png)
    python benchmarks/star_zero.py --r1-zero-s 0   # skip the RL-alone comparison
    python benchmarks/star_zero.py --task countdown --task-args '' --levels 2,3 --worked-levels 2,3 \
        --max-new-tokens 96 --out benchmarks/results/star_zero_countdown.json   # any task, its levels

1. Base model: the ``small`` preset trained from scratch on direct answers (System-1) to the task
   (default: n-digit addition, levels 1-4), plus exactly ``--worked`` (default 10) worked solutions (System-2), the same
   10 problems repeated a few per batch. Nothing else ever shows the model a worked solution.
2. STaR (``slowthink.rl.star``) from that base, in System-2 mode on levels 1-4: each iteration samples
   k solutions per training problem, keeps the verified ones, and fine-tunes the base on everything kept
   so far. Reported: held-out System-2 greedy pass@1 after each iteration (the curve), traces kept.
3. RL alone, in the spirit of R1-Zero: GRPO from a base that saw no worked example at all (the same
   recipe with ``--worked 0``), System-2 mode, reward = correctness + a format bonus, same wall time as
   STaR took (or ``--r1-zero-s``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from slowthink.config import parse_mapping  # noqa: E402
from slowthink.train.runlog import read_metrics, write_json

TASK = "arithmetic"
TASK_ARGS = {"op": "add", "cot": "cells"}
LEVELS = [1, 2, 3, 4]


def sub_problems(task, problem) -> list:
    """The sub-problems a worked solution of ``problem`` rests on (its reference derivation's step claims),
    as problems of their own whose direct answer is the claimed result."""
    from slowthink.tasks.base import Problem

    claims = task.step_claims(problem, task.solution_lines(problem))
    return [Problem(key=c.question, level=problem.level, question=c.question, answer=c.value, data={})
            for step in claims for c in step]


def train_base(out: Path, worked: int, steps: int, threads: int, seed: int = 0, worked_per_batch: int = 4,
               worked_levels: tuple[int, ...] = tuple(LEVELS), task_name: str = TASK, task_args: dict = TASK_ARGS,
               levels: tuple[int, ...] = tuple(LEVELS), sub_skills: float = 0.0, preset: str = "small",
               lr: float = 1e-3) -> Path:
    """SFT on direct answers plus ``worked`` fixed worked solutions (levels cycling through ``worked_levels``);
    returns the model folder. With ``sub_skills`` > 0, that share of the direct answers are to the
    sub-problems of a training problem's derivation (``sub_problems``) instead of to the problem itself."""
    from slowthink.train.data import reference_example
    from slowthink.models import build_or_load, save
    from slowthink.train.optimizers import make_optimizer
    from slowthink.train.sft import SFTConfig, lr_at, token_mean_backward
    from slowthink.tasks import get_task

    if (out / "model" / "config.json").exists():
        return out / "model"
    torch.set_num_threads(threads)
    task = get_task(task_name, **task_args)
    cfg = SFTConfig(out=str(out), levels=list(levels), model=preset, steps=steps, batch_size=64, lr=lr, warmup_steps=30,
                    optimizer="adamw")
    model, tok = build_or_load(preset, None, seed=seed)
    model.train()
    opt = make_optimizer(model, cfg)
    rng = random.Random(f"base-{seed}")
    fixed = [reference_example(task, tok, task.sample_split(rng, worked_levels[i % len(worked_levels)], "train"),
                                "system2")
             for i in range(worked)]
    for step in range(steps):
        r = random.Random(f"base-{seed}-{step}")
        batch = []
        while len(batch) < 64 - (worked_per_batch if fixed else 0):
            problem = task.sample_split(r, r.choice(levels), "train")
            if r.random() < sub_skills:
                problem = r.choice(sub_problems(task, problem))
            batch.append(reference_example(task, tok, problem, "system1"))
        batch += [r.choice(fixed) for _ in range(worked_per_batch)] if fixed else []
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        opt.zero_grad(set_to_none=True)
        token_mean_backward(model, [e.rendered for e in batch], tok.pad_token_id, 2)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "worked_examples.json", [{"question": e.problem.question, "level": e.problem.level}
                                              for e in fixed])
    save(model, tok, out / "model")
    return out / "model"


def base_eval(model_dir: Path, setting: dict, per_level: int, max_new_tokens: int, sub_skills: bool = False) -> dict:
    """The base's held-out greedy pass@1 in both modes (System-1 is what its direct answers taught it); with
    ``sub_skills``, also its direct answers to the held-out problems' sub-problems (``sub_problems``)."""
    from slowthink.engine import Engine
    from slowthink.evaluate import heldout_metrics
    from slowthink.models import load_model
    from slowthink.tasks import get_task

    model, tok = load_model(str(model_dir))
    task = get_task(setting["task_name"], **setting["task_args"])
    heldout = task.heldout_set(per_level, setting["levels"])
    engine = Engine(model.eval(), tok)
    ev = heldout_metrics(engine, task, tok, heldout, ("system1", "system2"), max_new_tokens)
    out = {**{k: round(v, 4) for k, v in ev.items()}, **steps_right(engine, task, tok, heldout, max_new_tokens)}
    if sub_skills:
        subs = {p.key: p for h in heldout for p in sub_problems(task, h)}
        sub_ev = heldout_metrics(engine, task, tok, list(subs.values()), ("system1",), max_new_tokens)
        out["sub_problems_system1_pass@1"] = round(sub_ev["eval/system1_pass@1"], 4)
        out["sub_problems"] = len(subs)
    return out


def steps_right(engine, task, tok, heldout, max_new_tokens: int) -> dict:
    """Of the held-out problems System-2 greedy answers right, how many have every worked step right by
    the task's step checker too: a right answer behind wrong steps is not a worked solution."""
    from slowthink.engine import SamplingParams
    from slowthink.rl.rewards import verified_steps
    from slowthink.tokenizer import render_prompt

    if task.step_labels(heldout[0], "") is None:  # the task cannot check steps
        return {}
    prompts = [render_prompt(tok, task.prompt(p, "system2"), "system2") for p in heldout]
    greedy = engine.generate(prompts, n=1, sampling=SamplingParams(max_tokens=max_new_tokens, temperature=0.0))
    right = [(p, c[0].text) for p, c in zip(heldout, greedy) if task.score(p, c[0].text, "system2").correct]
    return {"system2_right": len(right),
            "system2_right_with_right_steps": sum(verified_steps(task, p, t, "system2") for p, t in right)}


def curve(rows: list[dict], key: str = "eval/system2_pass@1") -> list[tuple[int, float]]:
    """(step, value) of every metrics row that has ``key``."""
    return [(r["step"], r[key]) for r in rows if key in r]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worked", type=int, default=10, help="worked examples the base model sees (at most 10)")
    p.add_argument("--base-steps", type=int, default=300)
    p.add_argument("--model", default="small", help="model preset of the base, trained from scratch")
    p.add_argument("--base-lr", type=float, default=1e-3, help="peak lr of the base's training")
    p.add_argument("--worked-per-batch", type=int, default=4, help="of the base's 64 examples per step, how many are "
                   "drawn from the worked examples (the rest are direct answers)")
    p.add_argument("--task", default=TASK, help="task name or path/to/file.py:ClassName")
    p.add_argument("--task-args", default="op=add,cot=cells", help="task constructor arguments ('' for none)")
    p.add_argument("--levels", default="1,2,3,4", help="levels of the base's direct answers, STaR and evaluation")
    p.add_argument("--base-levels", default="", help="levels of the base's direct answers, if not --levels")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--sub-skills", type=float, default=0.0, help="share of the base's direct answers that are to "
                   "the sub-problems of a derivation (its step claims; e.g. cot=chain) instead of whole problems")
    p.add_argument("--worked-levels", default="1,2,3,4", help="levels the worked examples are drawn from, in turn")
    p.add_argument("--iterations", type=int, default=4)
    p.add_argument("--problems", type=int, default=256, help="train problems per STaR iteration")
    p.add_argument("--k", type=int, default=4, help="samples per problem")
    p.add_argument("--lr", type=float, default=3e-4, help="STaR fine-tune lr (the base is not converged on System-2)")
    p.add_argument("--epochs", type=float, default=3.0, help="STaR inner fine-tune passes over the kept traces")
    p.add_argument("--steps-per-iteration", type=int, default=0, help="STaR inner fine-tune optimizer steps instead "
                   "of --epochs (0: use epochs); with the few traces of a first iteration, epochs give ~2 steps")
    p.add_argument("--temperature", type=float, default=1.0, help="STaR sampling temperature")
    p.add_argument("--rationalize", action="store_true", help="retry unsolved problems with the answer as a hint")
    p.add_argument("--curriculum-every", type=int, default=0, help="STaR starts at level 1 and adds a level every N "
                   "iterations (0: all levels from the start)")
    p.add_argument("--verify-steps", action="store_true", help="keep only traces whose every step is right "
                   "(the task's step checker), not only the final answer")
    p.add_argument("--eval-per-level", type=int, default=50)
    p.add_argument("--r1-zero-s", type=float, default=-1, help="GRPO-alone wall time (-1: as long as STaR took)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--runs", default="runs/star_zero")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "star_zero.json"))
    args = p.parse_args()
    if not 0 <= args.worked <= 10:
        p.error("--worked must be in 0..10 (the experiment allows at most 10 worked examples)")
    torch.set_num_threads(args.threads)
    runs = Path(args.runs)
    t0 = time.time()
    worked_levels = tuple(int(x) for x in args.worked_levels.split(","))
    levels = [int(x) for x in args.levels.split(",")]
    task_args = parse_mapping(args.task_args) if args.task_args else {}
    setting = dict(task_name=args.task, task_args=task_args, levels=tuple(levels))
    base_setting = {**setting, "levels": tuple(int(x) for x in (args.base_levels or args.levels).split(","))}
    base = train_base(runs / f"base_w{args.worked}", args.worked, args.base_steps, args.threads,
                      worked_per_batch=args.worked_per_batch, worked_levels=worked_levels, sub_skills=args.sub_skills,
                      preset=args.model, lr=args.base_lr, **base_setting)
    base_scores = base_eval(base, setting, args.eval_per_level, args.max_new_tokens, args.sub_skills > 0)
    print(f"base: {base_scores}")
    base_s = time.time() - t0

    from slowthink.rl.star import STaRConfig, train as star_train

    star_run = runs / "star"
    shutil.rmtree(star_run, ignore_errors=True)
    t0 = time.time()
    star_train(STaRConfig(out=str(star_run), init=str(base), task=args.task, task_args=task_args, levels=levels,
                          mode="system2", iterations=args.iterations, problems_per_iteration=args.problems,
                          samples_per_problem=args.k, temperature=args.temperature,
                          max_new_tokens=args.max_new_tokens,
                          rationalize=args.rationalize, verify_steps=args.verify_steps, epochs=args.epochs,
                          steps_per_iteration=args.steps_per_iteration,
                          curriculum_every=args.curriculum_every,
                          lr=args.lr, eval_per_level=args.eval_per_level, threads=args.threads))
    star_s = time.time() - t0
    final_scores = base_eval(star_run / "model", setting, args.eval_per_level, args.max_new_tokens,
                             args.sub_skills > 0)
    print(f"after STaR: {final_scores}")
    rows = read_metrics(star_run)
    iters = [{k: r[k] for k in ("step", "hardest_level", "solved_direct", "solved_rationalized", "sampled_pass_rate",
                                "hinted_pass_rate", "traces_kept", "train_set", "samples")
              if k in r} for r in rows if "traces_kept" in r]
    star_curve = curve(rows)
    result = {"benchmark": "star_zero", "command": " ".join(sys.argv), "task": {"name": args.task, **task_args},
              "levels": levels, "base_levels": list(base_setting["levels"]), "worked_examples": args.worked,
              "worked_levels": list(worked_levels), "star_options": {
                  k: getattr(args, k) for k in ("iterations", "problems", "k", "lr", "epochs", "steps_per_iteration",
                                                "temperature", "rationalize", "verify_steps", "curriculum_every")},
              "base_steps": args.base_steps, "model": args.model, "base_lr": args.base_lr,
              "worked_per_batch": args.worked_per_batch,
              "sub_skills": args.sub_skills, "base_s": round(base_s, 1),
              "base_heldout": base_scores,
              "star": {"curve": star_curve,
                       "curve_by_level": {str(lv): curve(rows, f"eval/system2_L{lv}") for lv in levels},
                       "iterations": iters, "wall_s": round(star_s, 1),
                       "gain_points": round(100 * (star_curve[-1][1] - star_curve[0][1]), 1),
                       "final_heldout": final_scores}}

    if args.r1_zero_s != 0:
        from slowthink.rl.grpo import GRPOConfig, train as grpo_train

        zero_base = train_base(runs / "base_w0", 0, args.base_steps, args.threads, sub_skills=args.sub_skills,
                               preset=args.model, lr=args.base_lr, **base_setting)
        zero_run = runs / "r1_zero"
        shutil.rmtree(zero_run, ignore_errors=True)
        budget = star_s if args.r1_zero_s < 0 else args.r1_zero_s
        t0 = time.time()
        grpo_train(GRPOConfig(out=str(zero_run), init=str(zero_base), task=args.task, task_args=task_args,
                              levels=levels, mode="system2", steps=100_000, time_budget_s=budget, lr=1e-5,
                              format_reward=0.5, max_new_tokens=args.max_new_tokens, eval_every=25,
                              eval_per_level=args.eval_per_level, threads=args.threads))
        zero_rows = read_metrics(zero_run)
        zc = curve(zero_rows)
        zrows = [r for r in zero_rows if "reward_mean" in r]
        result["r1_zero"] = {"curve": zc, "wall_s": round(time.time() - t0, 1), "steps": len(zrows),
                             "well_formed_first_last": [zrows[0]["well_formed"], zrows[-1]["well_formed"]],
                             "pass_rate_first_last": [zrows[0]["pass_rate"], zrows[-1]["pass_rate"]]}
    out = Path(args.out)
    write_json(out, result)
    plot(result, out.with_suffix(".png"))
    print(json.dumps({k: v for k, v in result.items() if k != "command"}, indent=1))
    return 0


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    xs, ys = zip(*result["star"]["curve"])
    ax.plot(xs, ys, marker="o", label=f"STaR from direct answers + {result['worked_examples']} worked examples")
    for level, points in result["star"].get("curve_by_level", {}).items():
        lx, ly = zip(*points)
        ax.plot(lx, ly, linewidth=0.9, alpha=0.7, linestyle=":", marker=".", label=f"level {level} alone")
    ax.set_xlabel("STaR iteration")
    ax.set_ylabel(f"held-out System-2 greedy pass@1 (levels {','.join(map(str, result['levels']))})")
    ax.set_ylim(0, 1.02)
    if "r1_zero" in result:
        zx, zy = zip(*result["r1_zero"]["curve"])
        last = max(zx) or 1
        ax.plot([x / last * max(xs) for x in zx], zy, marker="s", color="gray",
                label=f"GRPO alone, no worked examples ({result['r1_zero']['wall_s']:.0f} s; x rescaled to fit)")
    base = result.get("base_heldout", {})
    if "eval/system1_pass@1" in base:
        ax.axhline(base["eval/system1_pass@1"], color="tab:green", linestyle="--", linewidth=1,
                   label="the base's System-1 (direct answer) pass@1")
    if "sub_problems_system1_pass@1" in base:
        ax.axhline(base["sub_problems_system1_pass@1"], color="tab:olive", linestyle=":", linewidth=1,
                   label=f"the base's direct answers to the sub-problems of held-out problems ({base['sub_problems']}; "
                         "a sub-problem may also occur in training)")
    final = result["star"].get("final_heldout", {})
    if "system2_right" in base and "system2_right" in final:
        ax.text(0.01, 0.97, f"right System-2 answers with every step right: base {base['system2_right_with_right_steps']}"
                f" of {base['system2_right']}, after STaR {final['system2_right_with_right_steps']} of "
                f"{final['system2_right']}", transform=ax.transAxes, fontsize=8, va="top")
    ax.legend(fontsize=7, loc="upper right", bbox_to_anchor=(1.0, 0.86))
    ax.set_title(f"Zero start on {result['task']['name']}: bootstrapping worked solutions")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
