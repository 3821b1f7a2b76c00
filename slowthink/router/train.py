"""``slowthink train router``: label generated training problems with the model's own results under every
arm, fit the difficulty predictor on cheap signals, and save the router beside the model.

Labels are automatic: an arm's label on a problem is whether that arm, run once, answered it correctly
(the task's verifier). A quarter of the training problems is kept aside to report the predictor's
validation AUROC per arm; the saved predictor is then refitted on all of them.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import RunConfig, arg, require
from ..tasks.base import Problem
from .arms import CHECK, ArmTable, arm_table, default_arms
from .predictor import auroc, fit_predictor
from .router import ROUTER_DIR, Router
from .scoring import routed_outcome
from .signals import SIGNAL_SETS, SIGNALS, Signals, compute_signals


L2_GRID = (1.0, 10.0, 100.0, 1000.0)


@dataclass
class RouterConfig(RunConfig):
    out: str = arg("", "where to save the router (default: MODEL/router, loaded with the model)")
    levels: list[int] = arg([], "levels to draw training problems from, mixed as the questions you will route "
                                "(default: the levels the model was trained on)")
    model: str = arg("", "model folder (the hybrid model, or the System-2 model with fast_model) (required)")
    fast_model: str = arg("", "optional System-1 model folder: two-model mode (fast System-1, slow System-2)")
    per_level: int = arg(120, "training problems per level (train split: never held-out)")
    majority_ns: list[int] = arg([4, 8, 16], "self-consistency arms: samples per question")
    temperature: float = arg(0.7, "sampling temperature of the self-consistency arms")
    checker: str = arg("", "checker model of the step-recomputing arms, MODEL_DIR[@system1] "
                       "(slowthink.critics.recompute; '' = no such arms)")
    check_ns: list[int] = arg([4, 16], "checker-weighted vote arms: samples per question (with checker)")
    max_tokens: int = arg(256, "generation limit per sample of every arm")
    signals: list[str] = arg(list(SIGNALS), f"signals to compute, a subset of {list(SIGNALS)} (s2check only with "
                             "a checker)")
    choose_signals: bool = arg(True, "use the subset of the signals that routes best on the validation problems "
                               "(false: all of them)")
    signal_max_tokens: int = arg(64, "generation limit of the System-1 signal samples")
    l2: float = arg(0.0, f"L2 regularisation of the predictor (0: the one of {list(L2_GRID)} with the lowest "
                    "validation log-loss)")
    tradeoff: float = arg(0.05, "default routing tradeoff: cheapest arm within this of the best predicted success")

    def __post_init__(self):
        super().__post_init__()
        from ..models import is_model_dir

        require(bool(self.model) and is_model_dir(self.model), "model", f"{self.model!r} is not a model folder "
                "(no config.json); e.g. model=runs/quickstart/model")
        require(not self.fast_model or is_model_dir(self.fast_model), "fast_model",
                f"{self.fast_model!r} is not a model folder")
        require(self.per_level >= 4, "per_level", "must be >= 4")
        require(all(n >= 2 for n in self.majority_ns), "majority_ns", "each must be >= 2 (1 is the greedy arm)")
        require(all(n >= 2 for n in self.check_ns), "check_ns", "each must be >= 2")
        if self.checker:
            from ..critics.recompute import parse_spec

            path, _ = parse_spec(self.checker)
            require(is_model_dir(path), "checker", f"{path!r} is not a model folder")
        require(self.temperature > 0, "temperature", "must be > 0")
        require(self.max_tokens > 0 and self.signal_max_tokens > 0, "max_tokens", "must be > 0")
        require(self.l2 >= 0, "l2", "must be >= 0")
        require(self.tradeoff >= 0, "tradeoff", "must be >= 0")
        unknown = [s for s in self.signals if s not in SIGNALS]
        require(not unknown and len(self.signals) > 0, "signals", f"a non-empty subset of {list(SIGNALS)}")
        require(bool(self.checker) or set(self.signals) != {"s2check"}, "signals", "s2check needs a checker")


def training_problems(task, levels, per_level: int, seed: int) -> list[Problem]:
    """Distinct train-split problems, ``per_level`` per level (fewer when a level has fewer)."""
    rng = random.Random(f"router-{seed}")
    out, seen = [], set()
    for level in levels:
        got, tries = 0, 0
        while got < per_level and tries < per_level * 50:
            tries += 1
            p = task.sample_split(rng, level, "train")
            if p.key not in seen:
                seen.add(p.key)
                out.append(p)
                got += 1
    return out


def load_engines(model: str, fast_model: str = "", device: str = "cpu", checker: str = "",
                 task=None) -> tuple[dict, dict]:
    """Engines by name ("main", or "fast" + "slow"; plus "check", the step-recomputing verifier of ``task``
    with ``checker``) and the folders they came from, on ``device``."""
    from ..engine import Engine
    from ..models import load_model

    if not fast_model:
        m, tok = load_model(model, device=device)
        engines, names = {"main": Engine(m, tok)}, {"main": str(model)}
    else:
        slow, stok = load_model(model, device=device)
        fast, ftok = load_model(fast_model, device=device)
        engines = {"slow": Engine(slow, stok), "fast": Engine(fast, ftok)}
        names = {"slow": str(model), "fast": str(fast_model)}
    if checker:
        from ..critics.recompute import RecomputeVerifier

        if task is None:
            raise ValueError("a checker needs the task whose steps it checks")
        engines[CHECK], names[CHECK] = RecomputeVerifier.load(checker, task, device=device), checker
    return engines, names


def fit_router(cfg: RouterConfig, task, engines: dict, names: dict, problems: list[Problem]) -> tuple[Router, dict]:
    """Label ``problems`` under every arm, compute their signals, and fit the router."""
    fast, slow = ("fast", "slow") if "fast" in engines else ("main", "main")
    arms = default_arms(cfg.max_tokens, tuple(cfg.majority_ns), cfg.temperature, fast, slow,
                        tuple(cfg.check_ns) if CHECK in engines else ())
    table = arm_table(engines, task, problems, arms, seed=cfg.seed, progress=cfg.progress)
    signals = [s for s in cfg.signals if s != "s2check" or CHECK in engines]  # s2check needs the checker
    sig = compute_signals(engines, task, problems, signals, fast, slow, cfg.signal_max_tokens, cfg.seed + 1,
                          cfg.max_tokens)
    return fit_from_table(cfg, table, sig, names if "fast" in engines or CHECK in engines else {})


def fit_from_table(cfg: RouterConfig, table: ArmTable, sig: Signals, models: dict | None = None) -> tuple[Router, dict]:
    """Fit the router on labelled problems (an arm table and the same problems' signals).

    A quarter of the problems is held aside. On it the L2 strength is chosen (lowest log-loss) and, with
    ``choose_signals``, the signal set: of the subsets of the computed signals, the one whose routing (at
    ``tradeoff``) spends the fewest tokens within 1 point of the most accurate subset's routing. Signals
    cost tokens on every question, so on a model where they save little the cheapest set wins. The
    router is then refitted on all the problems."""
    order = np.random.default_rng(cfg.seed).permutation(len(table.correct))
    val, fit = order[: len(order) // 4], order[len(order) // 4:]
    sets = ([s for s in SIGNAL_SETS if set(s) <= set(sig.groups)] if cfg.choose_signals else [tuple(sig.groups)])
    trials = {"+".join(s): _validate(cfg, table, sig.subset(s), fit, val) for s in sets}
    top = max(t["validation_routed_accuracy"] for t in trials.values())
    name = min((k for k, t in trials.items() if t["validation_routed_accuracy"] >= top - 0.01),
               key=lambda k: trials[k]["validation_routed_tokens"])
    chosen, sub = trials[name], sig.subset(name.split("+"))
    metrics = {
        "signals": name, "l2": chosen["l2"], "train_problems": len(table.correct), "validation_problems": int(len(val)),
        "arm_accuracy": {a.name: float(x) for a, x in zip(table.arms, table.accuracy())},
        "arm_mean_tokens": {a.name: float(x) for a, x in zip(table.arms, table.mean_tokens())},
        "mean_signal_tokens": float(sub.tokens.mean()),
        "validation_auroc": chosen["validation_auroc"], "signal_sets": trials}
    router = _router(cfg, table, sub, fit_predictor(sub.features, table.correct, table.tokens, chosen["l2"]), models)
    router.metrics = metrics
    return router, metrics


def _router(cfg: RouterConfig, table: ArmTable, sig: Signals, predictor, models: dict | None = None) -> Router:
    return Router(arms=table.arms, signals=tuple(sig.groups), predictor=predictor, feature_names=sig.names,
                  tradeoff=cfg.tradeoff, signal_max_tokens=cfg.signal_max_tokens, models=models or {},
                  task={"task": cfg.task, "task_args": cfg.task_args})


def _validate(cfg: RouterConfig, table: ArmTable, sig: Signals, fit: np.ndarray, val: np.ndarray) -> dict:
    """Fit on ``fit`` with each L2 strength, keep the lowest validation log-loss, and route the validation
    problems with it."""
    y = table.correct[val]
    best = None
    for l2 in (cfg.l2,) if cfg.l2 > 0 else L2_GRID:
        pred = fit_predictor(sig.features[fit], table.correct[fit], table.tokens[fit], l2)
        p = np.clip(pred.success(sig.features[val]), 1e-4, 1 - 1e-4)
        loss = float(-np.mean(np.where(y, np.log(p), np.log(1 - p))))
        if best is None or loss < best[0]:
            best = (loss, l2, pred, p)
    loss, l2, pred, p = best
    router = _router(cfg, table, sig, pred)
    vsig = sig.rows(val)
    correct, tokens = routed_outcome(router, table.rows(val), vsig, router.choose(vsig.features))
    return {"l2": l2, "validation_log_loss": loss,
            "validation_auroc": {a.name: auroc(p[:, j], y[:, j]) for j, a in enumerate(table.arms)},
            "validation_routed_accuracy": float(correct.mean()), "validation_routed_tokens": float(tokens.mean())}


def train(cfg: RouterConfig) -> str:
    """Train and save a router; returns its folder."""
    from ..train.loop import open_run, resolve_task

    t0 = time.time()
    cfg, task = resolve_task(cfg)
    out = open_run(cfg, "router", cfg.out or Path(cfg.model) / ROUTER_DIR)
    engines, names = load_engines(cfg.model, cfg.fast_model, device=cfg.device, checker=cfg.checker, task=task)
    problems = training_problems(task, cfg.levels, cfg.per_level, cfg.seed)
    router, metrics = fit_router(cfg, task, engines, names, problems)
    metrics["train_seconds"] = round(time.time() - t0, 1)
    router.save(out)
    auc = ", ".join(f"{k} {v:.3f}" for k, v in metrics["validation_auroc"].items())
    print(f"router: {len(problems)} training problems, {metrics['train_seconds']} s; validation AUROC: {auc}")
    return str(out)
