"""The quickstart: the paradigm in miniature, as a pipeline of stages.

    sft     train one small model from scratch on both modes (worked solutions and direct answers)
    eval    held-out accuracy by level, System-1 vs System-2 (greedy pass@1, pass@k, maj@k)
    rl      GRPO from the SFT model on the hardest level (the edge of its competence): before/after
    route   train the System-1/System-2 router (reasoning_effort=auto) and its Pareto plot: accuracy
            against tokens for every fixed setting and for the router
    search  test-time compute on the hardest level: System-2 greedy against self-consistency majority@n and a
            confidence-weighted majority@n (one pool of samples per problem, slowthink.search.scaling), with
            the pass@n ceiling; accuracy against policy tokens per question
    report  report.md, PNG plots (slowthink.quickstart_report), results.json with the machine, each stage's
            wall time, the config and the command that reproduces the run; the table printed at the end

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

from .chat import Mode
from .config import RunConfig, arg, require, to_dict
from .tasks.record import DEFAULT_TASK
from .train.runlog import write_json

STAGE_NAMES = ("sft", "eval", "rl", "route", "search", "report")


# The default task's settings, used only when the task is the default one and the field is left empty:
# multiplication up to 3x3 digits, 1x1 light (it has only 81 problems) and 3x3 light, so the SFT model ends at the
# edge of its competence there.
DEFAULT_TASK_SETTINGS = {"task_args": {"op": "mul", "cot": "cells"}, "levels": [1, 2, 3], "level_weights": [1, 3, 1]}


@dataclass
class QuickstartConfig(RunConfig):
    out: str = arg("runs/quickstart", "run folder")
    task: str = arg(DEFAULT_TASK, "task name or path/to/file.py:ClassName")
    task_args: dict = arg({}, f"task constructor arguments (default for {DEFAULT_TASK}: op=mul,cot=cells; else none)")
    levels: list[int] = arg([], f"levels to train and evaluate on (default for {DEFAULT_TASK}: 1,2,3, i.e. 1x1 to "
                                "3x3 digits; else all of the task's)")
    level_weights: list[float] = arg([], f"training weight of each level (default for {DEFAULT_TASK}'s default "
                                         "levels: 1,3,1; else uniform)")
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
    stages: list[str] = arg(list(STAGE_NAMES), f"stages to run, in order, from: {', '.join(STAGE_NAMES)}")

    def __post_init__(self):
        super().__post_init__()
        if self.task == DEFAULT_TASK:
            self.task_args = self.task_args or dict(DEFAULT_TASK_SETTINGS["task_args"])
            if not self.levels:
                self.levels = list(DEFAULT_TASK_SETTINGS["levels"])
                self.level_weights = self.level_weights or list(DEFAULT_TASK_SETTINGS["level_weights"])
        bad = [s for s in self.stages if s not in STAGE_NAMES]
        require(not bad, "stages", f"unknown stage(s) {bad}; choose from {list(STAGE_NAMES)}")
        require(self.eval_per_level > 0, "eval_per_level", "must be > 0")
        require(self.k >= 1, "k", "must be >= 1")
        from .train.optimizers import SFT_OPTIMIZERS

        require(self.optimizer in SFT_OPTIMIZERS, "optimizer", f"must be one of {SFT_OPTIMIZERS}")
        require(self.rl_level == 0 or not self.levels or self.rl_level in self.levels, "rl_level",
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


def _require_model(run: Path) -> Path:
    """The run's model folder, written by the sft stage (every later stage starts from it)."""
    if not (run / "model").exists():
        raise FileNotFoundError(f"{run / 'model'} is missing: run the 'sft' stage first")
    return run / "model"


def _load_engine(cfg: QuickstartConfig, run: Path):
    """The run's model on an Engine, and the task."""
    import torch

    from .engine import Engine
    from .models import load_model

    model_dir = _require_model(run)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model, tok = load_model(model_dir, device=cfg.device)
    return Engine(model, tok), _task(cfg)


def _task(cfg: QuickstartConfig):
    """The task, behind the verifier guard (``tasks.guard``)."""
    from .tasks import get_task
    from .tasks.guard import guard

    return guard(get_task(cfg.task, **cfg.task_args), strict=cfg.strict_verifier)


def _heldout(task, per_level: int, levels) -> list:
    # The named held-out set, as every command evaluates on: the first problems of a level are the same in each
    # stage, and the same the RL stage's periodic evaluation and `slowthink eval` use.
    return task.heldout_set(per_level, tuple(levels))


def stage_sft(cfg: QuickstartConfig, run: Path) -> None:
    from .train.sft import SFTConfig, train

    train(SFTConfig(out=str(run / "sft"), task=cfg.task, task_args=cfg.task_args, levels=cfg.levels,
                    level_weights=cfg.level_weights, system2_fraction=cfg.system2_fraction, model=cfg.model,
                    steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, optimizer=cfg.optimizer,
                    warmup_steps=cfg.warmup_steps, seed=cfg.seed, eval_every=cfg.eval_every,
                    max_new_tokens=cfg.max_new_tokens, threads=cfg.threads, device=cfg.device, progress=cfg.progress,
                    strict_verifier=cfg.strict_verifier))
    shutil.rmtree(run / "model", ignore_errors=True)
    shutil.copytree(run / "sft" / "model", run / "model")


def stage_eval(cfg: QuickstartConfig, run: Path) -> None:
    from .evaluate import evaluate
    from .tasks.base import HELDOUT_SET

    engine, task = _load_engine(cfg, run)
    problems = _heldout(task, cfg.eval_per_level, cfg.levels)
    t0 = time.time()
    results = evaluate(engine, task, engine.tokenizer, problems, k=cfg.k, temperature=cfg.temperature,
                       max_tokens=cfg.max_new_tokens, seed=cfg.seed)
    write_json(run / "eval.json", {"task": cfg.task, "task_args": cfg.task_args, "levels": cfg.levels,
                                   "per_level": cfg.eval_per_level, "heldout_set": HELDOUT_SET,
                                   "problems": len(problems), "k": cfg.k, "seconds": time.time() - t0,
                                   "results": results})


def stage_rl(cfg: QuickstartConfig, run: Path) -> None:
    """GRPO on the hardest level, from the SFT model; its held-out pass@1 there before and after."""
    from .rl.grpo import GRPOConfig, train
    from .train.runlog import read_metrics

    train(GRPOConfig(out=str(run / "rl"), init=str(_require_model(run)), task=cfg.task, task_args=cfg.task_args,
                     levels=[cfg.hardest], steps=cfg.rl_steps, time_budget_s=cfg.rl_time_budget_s, lr=cfg.rl_lr,
                     prompts_per_step=cfg.rl_prompts_per_step, group_size=cfg.rl_group_size,
                     max_new_tokens=cfg.max_new_tokens, eval_every=cfg.rl_eval_every,
                     eval_per_level=cfg.eval_per_level, seed=cfg.seed, threads=cfg.threads, device=cfg.device,
                     progress=cfg.progress, strict_verifier=cfg.strict_verifier))
    evals = [r for r in read_metrics(run / "rl") if "eval/system2_pass@1" in r]
    write_json(run / "rl.json", {"level": cfg.hardest, "per_level": cfg.eval_per_level,
                                 "n": evals[-1]["eval/system2_n"],  # the problems behind before and after
                                 "before": evals[0]["eval/system2_pass@1"], "after": evals[-1]["eval/system2_pass@1"],
                                 "steps": evals[-1]["step"], "model": str(run / "rl" / "model")})


def stage_route(cfg: QuickstartConfig, run: Path) -> None:
    """Train the router beside the model (``model/router``: ``reasoning_effort=auto`` loads it), then
    score every fixed arm and the router on the held-out problems of all levels."""
    from .router.scoring import evaluate_routing
    from .router.train import RouterConfig, fit_router, load_engines, training_problems

    rc = RouterConfig(model=str(_require_model(run)), task=cfg.task, task_args=cfg.task_args, levels=cfg.levels,
                      per_level=cfg.route_per_level, majority_ns=cfg.route_majority_ns, max_tokens=cfg.max_new_tokens,
                      seed=cfg.seed, progress=cfg.progress)
    task = _task(cfg)
    engines, names = load_engines(rc.model, device=cfg.device)
    router, metrics = fit_router(rc, task, engines, names, training_problems(task, cfg.levels, rc.per_level, cfg.seed))
    router.save(run / "model" / "router")
    heldout = _heldout(task, cfg.eval_per_level, cfg.levels)
    res = evaluate_routing(router, engines, task, heldout, seed=cfg.seed + 100, progress=cfg.progress)
    write_json(run / "route.json", {"training": metrics, **res})


def stage_search(cfg: QuickstartConfig, run: Path) -> None:
    """Test-time compute on held-out problems of one level (the hardest by default): System-2 greedy, then one
    pool of max(search_ns) samples per problem, scored at every n on its first n samples: self-consistency
    majority@n, confidence-weighted majority@n (each sample votes with exp(mean token logprob), no trained
    verifier) and the pass@n ceiling, with exact mean policy tokens per question."""
    from .search import Policy
    from .search.scaling import CEILING, draw_pool, pool_curves

    t0 = time.time()
    engine, task = _load_engine(cfg, run)
    problems = _heldout(task, cfg.search_problems, (cfg.search_at,))
    policy = Policy(engine, task, Mode.SYSTEM2, temperature=cfg.search_temperature, max_tokens=cfg.max_new_tokens,
                    seed=cfg.seed)
    greedy = greedy_point(policy, problems)
    t_greedy = time.time() - t0
    pools = draw_pool(policy, problems, max(cfg.search_ns))
    curves = pool_curves(pools, cfg.search_ns, ("majority", "confidence_majority", CEILING))
    write_json(run / "search.json", {
        "level": cfg.search_at, "problems": len(problems), "temperature": cfg.search_temperature, "ns": cfg.search_ns,
        "max_new_tokens": cfg.max_new_tokens, "greedy": greedy, "curves": curves, **pool_summary(pools, curves, greedy),
        "seconds": round(time.time() - t0, 1), "greedy_seconds": round(t_greedy, 1)})


def greedy_point(policy, problems: list) -> dict:
    """System-2 greedy (the search "greedy" strategy's rule: one completion at T=0), all problems in one batch."""
    from dataclasses import replace

    from .search.scaling import draw_pool

    g = [pool[0] for pool in draw_pool(replace(policy, temperature=0.0), problems, 1, chunk=len(problems))]
    return {"accuracy": sum(s["correct"] for s in g) / len(g),
            "mean_policy_tokens": sum(s["tokens"] for s in g) / len(g)}


def pool_summary(pools: list, curves: dict, greedy: dict) -> dict:
    """The sample pool at a glance: each sample's accuracy and tokens, the best strategy and its gain over greedy,
    and the pass@n ceiling at the largest n."""
    from .search.scaling import CEILING, best_point

    samples = [s for pool in pools for s in pool]
    best = best_point(curves)
    return {"sampled_accuracy": sum(s["correct"] for s in samples) / len(samples),
            "mean_sample_tokens": sum(s["tokens"] for s in samples) / len(samples),
            "best": {k: best[k] for k in ("strategy", "n", "accuracy", "mean_policy_tokens")},
            "gain_points": round(100 * (best["accuracy"] - greedy["accuracy"]), 1),
            "ceiling": curves[CEILING][-1]["accuracy"]}


def stage_report(cfg: QuickstartConfig, run: Path) -> None:
    from .quickstart_report import write_report

    write_report(cfg, run)


STAGES = {"sft": stage_sft, "eval": stage_eval, "rl": stage_rl, "route": stage_route, "search": stage_search,
          "report": stage_report}


def run_quickstart(cfg: QuickstartConfig) -> dict:
    """Run ``cfg.stages`` in order; the contents of ``results.json`` (``{}`` until a report stage has run)."""
    from .train.loop import resolve_task

    cfg, _ = resolve_task(cfg)  # the task is checked and the levels filled in before the run folder is made
    run = Path(cfg.out)
    run.mkdir(parents=True, exist_ok=True)
    write_json(run / "quickstart_config.json", to_dict(cfg))
    timings_path, results_path = run / "timings.json", run / "results.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    machine_at_start = machine(cfg)
    for name in cfg.stages:
        t0 = time.time()
        STAGES[name](cfg, run)
        timings[name] = round(time.time() - t0, 1)
        write_json(timings_path, timings)
    if not results_path.exists():
        return {}
    results = json.loads(results_path.read_text())
    if "report" in cfg.stages:
        results.update(run_record(cfg, timings, machine_at_start))
        write_json(results_path, results)
    return results


# ----------------------------------------------------------------------------- how the results came about


def run_record(cfg: QuickstartConfig, timings: dict, machine_at_start: dict) -> dict:
    """What a results file needs besides the results: the machine, the wall-clock seconds of each stage and in
    all, the config, and the command that reproduces the run (every stage timed in the run folder)."""
    return {"machine": machine_at_start, "timings_s": timings, "total_s": round(sum(timings.values()), 1),
            "config": to_dict(cfg), "command": reproduce_command(cfg, [s for s in STAGE_NAMES if s in timings])}


def machine(cfg: QuickstartConfig) -> dict:
    """The machine the quickstart runs on (its GPU too when ``device`` is one), as benchmark results record it."""
    import torch

    from .train.runlog import machine_info

    gpu = {"gpu": torch.cuda.get_device_name(cfg.device)} if cfg.device.startswith("cuda") else {}
    return machine_info(cfg.threads or None, device=cfg.device, **gpu)


def reproduce_command(cfg: QuickstartConfig, stages: list[str]) -> str:
    """``slowthink quickstart`` with an option for every field of ``cfg`` (``stages`` in place of its own) that
    differs from the default."""
    import shlex

    values, defaults = {**to_dict(cfg), "stages": stages}, to_dict(QuickstartConfig())
    options = [f"--{name.replace('_', '-')} {shlex.quote(_option_text(value))}" for name, value in values.items()
               if value != defaults[name]]
    return " ".join(["slowthink quickstart", *options])


def _option_text(value) -> str:
    """A config value as the command line writes it (what ``slowthink.config`` parses back to the same value)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)
