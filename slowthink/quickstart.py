"""The quickstart: the paradigm in miniature, as a pipeline of stages.

    sft     train one small model from scratch on both modes (worked solutions and direct answers)
    eval    held-out accuracy by level, System-1 vs System-2 (greedy pass@1, pass@k, maj@k)
    rl      GRPO from the SFT model on the hardest level (the edge of its competence): before/after
    route   train the System-1/System-2 router (reasoning_effort=auto) and its Pareto plot: accuracy
            against tokens for every fixed setting and for the router
    search  test-time compute on the hardest level: System-2 greedy against self-consistency majority@n and a
            confidence-weighted majority@n (one pool of samples per problem, slowthink.search.scaling), with
            the pass@n ceiling; accuracy against policy tokens per question
    report  report.md, PNG plots, results.json; the table printed at the end

Each stage reads what earlier stages wrote in the run folder, so any stage can run alone
(``--stages eval,report``) and a killed quickstart picks up where it stopped. Further stages plug in as
entries of ``STAGES``.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .config import arg, check_device, require, to_dict
from .train.runlog import write_json
from .chat import Mode

STAGE_NAMES = ("sft", "eval", "rl", "route", "search", "report")


@dataclass
class QuickstartConfig:
    out: str = arg("runs/quickstart", "run folder")
    task: str = arg("arithmetic", "task name or path/to/file.py:ClassName")
    task_args: dict = arg({"op": "mul", "cot": "cells"}, "task constructor arguments")
    levels: list[int] = arg([1, 2, 3], "levels to train and evaluate on (1x1, 2x2 and 3x3 digits)")
    level_weights: list[float] = arg([1, 3, 1], "training weight of each level (1x1 has only 81 problems; 3x3 "
                                     "light, so the SFT model ends at the edge of its competence there)")
    model: str = arg("small", "model preset or model folder to start from")
    steps: int = arg(350, "SFT optimizer steps")
    batch_size: int = arg(64, "SFT examples per step")
    lr: float = arg(3e-3, "SFT peak learning rate")
    optimizer: str = arg("muon", "SFT optimizer: adamw, or muon (Muon on the hidden matrices, AdamW on the rest)")
    warmup_steps: int = arg(30, "SFT warm-up steps")
    system2_fraction: float = arg(0.75, "share of SFT examples with a worked solution")
    eval_every: int = arg(100, "periodic held-out evaluation during SFT (steps)")
    eval_per_level: int = arg(100, "held-out problems per level in the final evaluation")
    k: int = arg(4, "samples per problem for pass@k and maj@k in the final evaluation")
    temperature: float = arg(1.0, "sampling temperature for pass@k / maj@k")
    max_new_tokens: int = arg(160, "generation limit")
    rl_level: int = arg(0, "level for the RL stage (0: the hardest of levels)")
    rl_steps: int = arg(200, "GRPO steps in the RL stage (at most; see rl_time_budget_s)")
    rl_time_budget_s: float = arg(180.0, "wall-time cap of the RL stage in seconds (0: none)")
    rl_lr: float = arg(1e-5, "GRPO learning rate")
    rl_prompts_per_step: int = arg(16, "GRPO problems per step")
    rl_group_size: int = arg(8, "GRPO completions per problem")
    rl_eval_every: int = arg(20, "held-out evaluation during RL (steps)")
    route_per_level: int = arg(60, "route stage: training problems per level (train split) for the router")
    route_majority_ns: list[int] = arg([4, 8], "route stage: self-consistency arms (samples per question)")
    search_level: int = arg(0, "search stage: level of its held-out problems (0: the hardest of levels)")
    search_problems: int = arg(60, "search stage: held-out problems")
    search_ns: list[int] = arg([1, 2, 4, 8, 16], "search stage: samples per question (n) of majority@n and "
                               "confidence-weighted majority@n, all from one pool of max(n) samples per problem")
    search_temperature: float = arg(0.7, "search stage: sampling temperature of the pool")
    seed: int = arg(0, "seed")
    threads: int = arg(0, "torch threads (0: all cores)")
    device: str = arg("cpu", "torch device of every stage (cpu, cuda, cuda:1, ...)")
    stages: list[str] = arg(list(STAGE_NAMES), f"stages to run, in order, from: {', '.join(STAGE_NAMES)}")
    progress: bool = arg(True, "progress bars")

    def __post_init__(self):
        check_device(self.device)
        bad = [s for s in self.stages if s not in STAGE_NAMES]
        require(not bad, "stages", f"unknown stage(s) {bad}; choose from {list(STAGE_NAMES)}")
        require(self.eval_per_level > 0, "eval_per_level", "must be > 0")
        require(self.k >= 1, "k", "must be >= 1")
        from .train.optimizers import SFT_OPTIMIZERS

        require(self.optimizer in SFT_OPTIMIZERS, "optimizer", f"must be one of {SFT_OPTIMIZERS}")
        require(self.rl_level == 0 or self.rl_level in self.levels, "rl_level",
                f"must be 0 (the hardest) or one of levels {self.levels}")
        require(self.search_level >= 0, "search_level", "must be 0 (the hardest of levels) or a level")
        require(self.search_problems > 0, "search_problems", "must be > 0")
        ns = self.search_ns
        require(bool(ns) and min(ns) >= 1 and ns == sorted(set(ns)), "search_ns",
                f"must be increasing sample counts >= 1, got {ns}")
        require(self.search_temperature > 0, "search_temperature", "must be > 0 (the pool is sampled)")

    @property
    def hardest(self) -> int:
        return self.rl_level or max(self.levels)

    @property
    def search_at(self) -> int:
        return self.search_level or max(self.levels)


def stage_sft(cfg: QuickstartConfig, run: Path) -> None:
    from .train.sft import SFTConfig, train

    sft = SFTConfig(out=str(run / "sft"), task=cfg.task, task_args=cfg.task_args, levels=cfg.levels,
                    level_weights=cfg.level_weights,
                    system2_fraction=cfg.system2_fraction, model=cfg.model, steps=cfg.steps,
                    batch_size=cfg.batch_size, lr=cfg.lr, optimizer=cfg.optimizer, warmup_steps=cfg.warmup_steps,
                    seed=cfg.seed, eval_every=cfg.eval_every, max_new_tokens=cfg.max_new_tokens, threads=cfg.threads,
                    device=cfg.device, progress=cfg.progress)
    train(sft)
    shutil.rmtree(run / "model", ignore_errors=True)
    shutil.copytree(run / "sft" / "model", run / "model")


def stage_eval(cfg: QuickstartConfig, run: Path) -> None:
    from .engine import Engine
    from .evaluate import evaluate
    from .models import load_model
    from .tasks import get_task

    model_dir = run / "model"
    if not model_dir.exists():
        raise FileNotFoundError(f"{model_dir} is missing: run the 'sft' stage first")
    model, tok = load_model(model_dir, device=cfg.device)
    task = get_task(cfg.task, **cfg.task_args)
    problems = task.heldout_set(cfg.eval_per_level, tuple(cfg.levels), seed=cfg.seed + 1000)
    t0 = time.time()
    results = evaluate(Engine(model, tok), task, tok, problems, k=cfg.k, temperature=cfg.temperature,
                       max_tokens=cfg.max_new_tokens, seed=cfg.seed)
    write_json(run / "eval.json", {"task": cfg.task, "task_args": cfg.task_args, "levels": cfg.levels,
                                   "per_level": cfg.eval_per_level, "k": cfg.k, "seconds": time.time() - t0,
                                   "results": results})


def stage_rl(cfg: QuickstartConfig, run: Path) -> None:
    """GRPO on the hardest level, from the SFT model; its held-out pass@1 there before and after."""
    from .rl.grpo import GRPOConfig, train
    from .train.runlog import read_metrics

    if not (run / "model").exists():
        raise FileNotFoundError(f"{run / 'model'} is missing: run the 'sft' stage first")
    rl = GRPOConfig(out=str(run / "rl"), init=str(run / "model"), task=cfg.task, task_args=cfg.task_args,
                    levels=[cfg.hardest], steps=cfg.rl_steps, time_budget_s=cfg.rl_time_budget_s, lr=cfg.rl_lr,
                    prompts_per_step=cfg.rl_prompts_per_step, group_size=cfg.rl_group_size,
                    max_new_tokens=cfg.max_new_tokens, eval_every=cfg.rl_eval_every,
                    eval_per_level=cfg.eval_per_level, seed=cfg.seed, threads=cfg.threads, device=cfg.device,
                    progress=cfg.progress)
    train(rl)
    evals = [r for r in read_metrics(run / "rl") if "eval/system2_pass@1" in r]
    write_json(run / "rl.json", {"level": cfg.hardest, "per_level": cfg.eval_per_level,
                                 "before": evals[0]["eval/system2_pass@1"], "after": evals[-1]["eval/system2_pass@1"],
                                 "steps": evals[-1]["step"], "model": str(run / "rl" / "model")})


def stage_route(cfg: QuickstartConfig, run: Path) -> None:
    """Train the router beside the model (``model/router``: ``reasoning_effort=auto`` loads it), then
    score every fixed arm and the router on the held-out problems of all levels."""
    from .router.scoring import evaluate_routing
    from .router.train import RouterConfig, fit_router, load_engines, training_problems
    from .tasks import get_task

    if not (run / "model").exists():
        raise FileNotFoundError(f"{run / 'model'} is missing: run the 'sft' stage first")
    rc = RouterConfig(model=str(run / "model"), task=cfg.task, task_args=cfg.task_args, levels=cfg.levels,
                      per_level=cfg.route_per_level, majority_ns=cfg.route_majority_ns, max_tokens=cfg.max_new_tokens,
                      seed=cfg.seed, progress=cfg.progress)
    task = get_task(cfg.task, **cfg.task_args)
    engines, names = load_engines(rc.model, device=cfg.device)
    router, metrics = fit_router(rc, task, engines, names, training_problems(task, cfg.levels, rc.per_level, cfg.seed))
    router.save(run / "model" / "router")
    heldout = task.heldout_set(cfg.eval_per_level, tuple(cfg.levels), seed=cfg.seed + 1000)
    res = evaluate_routing(router, engines, task, heldout, seed=cfg.seed + 100, progress=cfg.progress)
    write_json(run / "route.json", {"training": metrics, **res})


def stage_search(cfg: QuickstartConfig, run: Path) -> None:
    """Test-time compute on held-out problems of one level (the hardest by default): System-2 greedy, then one
    pool of max(search_ns) samples per problem, scored at every n on its first n samples: self-consistency
    majority@n, confidence-weighted majority@n (each sample votes with exp(mean token logprob), no trained
    verifier) and the pass@n ceiling, with exact mean policy tokens per question."""
    from dataclasses import replace

    import torch

    from .engine import Engine
    from .models import load_model
    from .search import Policy
    from .search.scaling import CEILING, best_point, draw_pool, pool_curves
    from .tasks import get_task

    model_dir = run / "model"
    if not model_dir.exists():
        raise FileNotFoundError(f"{model_dir} is missing: run the 'sft' stage first")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.time()
    model, tok = load_model(model_dir, device=cfg.device)
    task = get_task(cfg.task, **cfg.task_args)
    level = cfg.search_at
    # The eval stage's held-out draw (same seed): the first problems of this level are the ones it scored.
    problems = task.heldout_set(cfg.search_problems, (level,), seed=cfg.seed + 1000)
    policy = Policy(Engine(model, tok), task, Mode.SYSTEM2, temperature=cfg.search_temperature,
                    max_tokens=cfg.max_new_tokens, seed=cfg.seed)
    # Greedy (the search "greedy" strategy's rule: one completion at T=0), all problems in one batched run.
    g = [pool[0] for pool in draw_pool(replace(policy, temperature=0.0), problems, 1, chunk=len(problems))]
    greedy = {"accuracy": sum(s["correct"] for s in g) / len(g),
              "mean_policy_tokens": sum(s["tokens"] for s in g) / len(g)}
    t_greedy = time.time() - t0
    pools = draw_pool(policy, problems, max(cfg.search_ns))
    curves = pool_curves(pools, cfg.search_ns, ("majority", "confidence_majority", CEILING))
    samples = [s for pool in pools for s in pool]
    best = best_point(curves)
    write_json(run / "search.json", {
        "level": level, "problems": len(problems), "temperature": cfg.search_temperature, "ns": cfg.search_ns,
        "max_new_tokens": cfg.max_new_tokens, "greedy": greedy, "curves": curves,
        "sampled_accuracy": sum(s["correct"] for s in samples) / len(samples),
        "mean_sample_tokens": sum(s["tokens"] for s in samples) / len(samples),
        "best": {k: best[k] for k in ("strategy", "n", "accuracy", "mean_policy_tokens")},
        "gain_points": round(100 * (best["accuracy"] - greedy["accuracy"]), 1),
        "ceiling": curves[CEILING][-1]["accuracy"],
        "seconds": round(time.time() - t0, 1), "greedy_seconds": round(t_greedy, 1)})


def stage_report(cfg: QuickstartConfig, run: Path) -> None:
    from .report import (TABLE_HEADER, markdown_table, plot_accuracy_by_level, plot_pareto, plot_rl, plot_training,
                         results_table)
    from .train.runlog import read_metrics

    if not (run / "eval.json").exists():
        raise FileNotFoundError(f"{run / 'eval.json'} is missing: run the 'eval' stage first")
    ev = json.loads((run / "eval.json").read_text())
    res = ev["results"]
    plot_training(read_metrics(run / "sft"), run / "training.png", title="SFT on both modes")
    plot_accuracy_by_level(res, run / "accuracy_by_level.png")
    s1, s2 = res[Mode.SYSTEM1]["overall"]["pass@1"], res[Mode.SYSTEM2]["overall"]["pass@1"]
    timings = json.loads((run / "timings.json").read_text()) if (run / "timings.json").exists() else {}
    summary = {"system1_pass@1": s1, "system2_pass@1": s2, "gap_points": round(100 * (s2 - s1), 1),
               "k": ev["k"], "eval": res, "timings_s": timings, "config": to_dict(cfg)}
    rl_section = ""
    if (run / "rl.json").exists():
        rl = json.loads((run / "rl.json").read_text())
        summary["rl"] = rl
        plot_rl(read_metrics(run / "rl"), run / "rl.png", title=f"GRPO on level {rl['level']} from the SFT model")
        rl_section = f"""

## RL: GRPO on level {rl['level']}, starting from the SFT model

Held-out System-2 greedy pass@1 on level {rl['level']} ({rl['per_level']} problems):
**{rl['before']:.1%} before RL, {rl['after']:.1%} after {rl['steps']} GRPO steps
({100 * (rl['after'] - rl['before']):+.1f} points)**, rewards from the task's verifier only.
The RL model is in `rl/model/`.

![rl](rl.png)"""
    route_section = ""
    if (run / "route.json").exists():
        rt = json.loads((run / "route.json").read_text())
        summary["route"] = {k: rt[k] for k in ("best_fixed", "bar", "predictor_auroc", "slow_share_for_80pct_gap")}
        plot_pareto(rt, run / "route.png", f"Routing on {rt['problems']} held-out problems, levels {cfg.levels}")
        rows = [[f"fixed {f['name']}", f"{f['accuracy']:.1%}", f"{f['mean_tokens']:.1f}"] for f in rt["fixed"]]
        rows += [[r["label"], f"{r['accuracy']:.1%}", f"{r['mean_tokens']:.1f}"] for r in rt["routed"]
                 if r.get("tradeoff") in (0.0, 0.05, 0.2)]
        bar, best = rt["bar"], rt["best_fixed"]
        within = bar["cheapest_router_within"]
        verdict = (f"the router's cheapest setting within {bar['within_points']:g} point of {best['name']} "
                   f"({best['accuracy']:.1%}) is `{within['label']}`: {within['accuracy']:.1%} with "
                   f"{within['token_fraction_of_best']:.0%} of its tokens" if within else
                   f"no router setting came within {bar['within_points']:g} point of {best['name']} ({best['accuracy']:.1%})")
        route_section = f"""

## Routing: reasoning_effort=auto

The router (saved in `model/router/`, used by `slowthink solve --reasoning-effort auto` and the server)
predicts from cheap signals how each fixed setting would do on a question and runs the cheapest one predicted
to do about as well as the best. On the held-out problems of all levels, {verdict}.

{markdown_table(["setting", "accuracy", "tokens/question"], rows)}

![routing](route.png)"""
    search_section = ""
    if (run / "search.json").exists():
        sr = json.loads((run / "search.json").read_text())
        summary["search"] = sr
        search_section = search_report(sr, run)
    write_json(run / "results.json", summary)
    table = markdown_table(TABLE_HEADER, results_table(res))
    k = ev["k"]
    extra = ""
    if k > 1:
        extra = "\n\n" + markdown_table(
            ["mode", "pass@1", "sampled pass@1", f"pass@{k}", f"maj@{k}"],
            [[m, f"{r['overall']['pass@1']:.1%}", f"{r['overall']['sampled_pass@1']:.1%}",
              f"{r['overall'][f'pass@{k}']:.1%}", f"{r['overall'][f'maj@{k}']:.1%}"] for m, r in res.items()])
    (run / "report.md").write_text(f"""# slowthink quickstart

Task `{cfg.task}` {cfg.task_args}, levels {cfg.levels}; model preset `{cfg.model}` trained from scratch for
{cfg.steps} steps on worked solutions (System-2) and direct answers (System-1) mixed.
Held-out: {ev['per_level']} problems per level, disjoint from training by construction.

**System-2 greedy accuracy {s2:.1%} vs System-1 {s1:.1%}: {100 * (s2 - s1):+.1f} points from thinking first.**

{table}{extra}

![training](training.png)

![accuracy by level](accuracy_by_level.png){rl_section}{route_section}{search_section}

Stage wall times (s): {json.dumps(timings)}

The model is in `model/` (Hugging Face format): `AutoModelForCausalLM.from_pretrained("{run / 'model'}")`.
""")


SEARCH_LABEL = {"majority": "majority", "confidence_majority": "confidence-weighted majority"}


def search_report(sr: dict, run: Path) -> str:
    """The report's "Test-time compute" section (and ``search.png``) from ``search.json``."""
    from .report import markdown_table, plot_scaling

    plot_scaling(sr, run / "search.png", f"Test-time compute: {sr['problems']} held-out level-{sr['level']} problems, "
                 f"T={sr['temperature']:g}")
    g, best, cv = sr["greedy"], sr["best"], sr["curves"]
    rows = [["greedy (T=0)", "1", f"{g['mean_policy_tokens']:.0f}", f"{g['accuracy']:.1%}", "", "", ""]]
    for i, n in enumerate(sr["ns"]):
        rows.append([f"T={sr['temperature']:g}", str(n), f"{cv['majority'][i]['mean_policy_tokens']:.0f}", "",
                     f"{cv['majority'][i]['accuracy']:.1%}", f"{cv['confidence_majority'][i]['accuracy']:.1%}",
                     f"{cv['pass_at_n_ceiling'][i]['accuracy']:.1%}"])
    label = f"{SEARCH_LABEL.get(best['strategy'], best['strategy'])}@{best['n']}"
    if sr["gain_points"] > 0:
        verdict = (f"the best strategy, **{label}, is right on {best['accuracy']:.1%} vs greedy's "
                   f"{g['accuracy']:.1%} ({sr['gain_points']:+.1f} points)** at {best['mean_policy_tokens']:.0f} "
                   "policy tokens per question "
                   f"({best['mean_policy_tokens'] / max(g['mean_policy_tokens'], 1e-9):.1f}x greedy's)")
    else:
        verdict = (f"**no sampling strategy beats System-2 greedy ({g['accuracy']:.1%})**: the best, {label}, is right "
                   f"on {best['accuracy']:.1%} ({sr['gain_points']:+.1f} points) at {best['mean_policy_tokens']:.0f} "
                   "policy tokens per question")
    if g["accuracy"] == 1.0:
        verdict += (". Greedy already solves every problem, so extra samples have nothing to add here; a harder level "
                    "(`search_level`, or `recipes/quickstart_3digit.yaml`) leaves them room")
    nmax = sr["ns"][-1]
    return f"""

## Test-time compute: spending more tokens per question on level {sr['level']}

On {sr['problems']} held-out level-{sr['level']} problems (one problem is {100 / sr['problems']:.1f} points),
{verdict}.
Self-consistency takes the most common answer of n samples (T={sr['temperature']:g}); the confidence-weighted
majority lets each sample vote with its own confidence, exp(mean token log-prob), so it needs no trained
verifier (after DeepConf). All n share one pool of {nmax} samples per problem; tokens are the policy tokens
generated per question, every sample counted. pass@{nmax} ({sr['ceiling']:.1%}) is a ceiling, not a strategy:
the share of problems with a right answer among the samples, which a perfect picker would reach.

{markdown_table(["setting", "n", "tokens/question", "greedy", "majority@n", "confidence-weighted@n", "pass@n ceiling"],
                rows)}

![test-time compute](search.png)"""


STAGES = {"sft": stage_sft, "eval": stage_eval, "rl": stage_rl, "route": stage_route, "search": stage_search,
          "report": stage_report}


def run_quickstart(cfg: QuickstartConfig) -> dict:
    run = Path(cfg.out)
    run.mkdir(parents=True, exist_ok=True)
    write_json(run / "quickstart_config.json", to_dict(cfg))
    timings_path = run / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    for name in cfg.stages:
        t0 = time.time()
        STAGES[name](cfg, run)
        timings[name] = round(time.time() - t0, 1)
        write_json(timings_path, timings)
    return json.loads((run / "results.json").read_text()) if (run / "results.json").exists() else {}
