"""Routing: accuracy against mean tokens per question on a held-out set mixing difficulty levels, for every
fixed setting (arm) and for the router at several trade-offs and token budgets: a Pareto plot.

    python benchmarks/router_pareto.py --model runs/sft_l123/model          # ~10 min on 2 cores
    python benchmarks/router_pareto.py --model runs/quickstart/model --levels 1,2

The model: a hybrid (thinking switch) model trained on levels 1-3 of multiplication, made with
``slowthink train sft --out runs/sft_l123 --levels 1,2,3 --level-weights 1,3,1 --steps 900 --micro-batches 2
--optimizer adamw --system2-fraction 0.5``
(the quickstart recipe plus 3x3 digits; 30-60 min on 2 cores).

What runs: arms = System-1 greedy, System-2 greedy, System-2 majority of 4/8/16 samples (T=0.7), each with
256 tokens per sample. Every arm is run once on every training problem (train split) and every held-out
problem (the task's held-out split); the router is fitted on the training problems and scored on the
held-out ones, where each router setting's accuracy is that of the arm it picks per question and its tokens
are the arm's plus its signals' (slowthink/router/scoring.py). The signal sets are compared too: which
cheap signals pay off. Reported: the bar (router within 1 point of the best fixed arm's accuracy with at
most 35% of its mean tokens), the predictor's AUROC per arm, and RouteLLM's figure (share of questions sent
to the slow path to recover 80% of the always-fast/always-slow gap; 0.8 for random routing).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def machine() -> dict:
    import torch

    from slowthink.train.runlog import cpu_model

    cpu = cpu_model()
    return dict(cpu=cpu, cores=len(os.sched_getaffinity(0)), torch=torch.__version__, torch_threads=torch.get_num_threads(),
                python=platform.python_version())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="runs/sft_l123/model", help="hybrid model folder (System-2 model with --fast-model)")
    ap.add_argument("--fast-model", default="", help="System-1 model folder: two-model mode")
    ap.add_argument("--levels", default="1,2,3")
    ap.add_argument("--train-per-level", type=int, default=150)
    ap.add_argument("--eval-per-level", type=int, default=150)
    ap.add_argument("--majority-ns", default="4,8,16")
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--checker", default="", help="checker model for step-recomputing vote arms, MODEL_DIR[@system1] "
                    "(slowthink.critics.recompute); '' = none")
    ap.add_argument("--check-ns", default="4,16", help="samples of the checker-weighted vote arms")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/router.json"))
    args = ap.parse_args()

    import torch

    from slowthink.report import plot_pareto
    from slowthink.router.arms import arm_table, default_arms
    from slowthink.router.scoring import score_routing
    from slowthink.router.signals import SIGNAL_SETS, compute_signals
    from slowthink.router.train import RouterConfig, fit_from_table, load_engines, training_problems
    from slowthink.train.loop import resolve_task

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.time()
    levels = [int(x) for x in args.levels.split(",")]
    cfg = RouterConfig(model=args.model, fast_model=args.fast_model, levels=levels, per_level=args.train_per_level,
                       majority_ns=[int(x) for x in args.majority_ns.split(",")], temperature=args.temperature,
                       checker=args.checker, check_ns=[int(x) for x in args.check_ns.split(",") if x],
                       seed=args.seed, progress=True)
    cfg, task = resolve_task(cfg)  # the task and arguments the model was trained on
    engines, names = load_engines(cfg.model, cfg.fast_model, checker=cfg.checker, task=task)
    fast, slow = ("fast", "slow") if "fast" in engines else ("main", "main")
    arms = default_arms(cfg.max_tokens, tuple(cfg.majority_ns), cfg.temperature, fast, slow,
                        tuple(cfg.check_ns) if cfg.checker else ())
    train = training_problems(task, levels, cfg.per_level, cfg.seed)
    heldout = task.heldout_set(args.eval_per_level, tuple(levels))

    def label(problems, seed):
        table = arm_table(engines, task, problems, arms, seed=seed, progress=True)
        sig = compute_signals(engines, task, problems, None, fast, slow, cfg.signal_max_tokens, seed + 1, cfg.max_tokens)
        return table, sig

    train_table, train_sig = label(train, cfg.seed)
    t_label = time.time() - t0
    eval_table, eval_sig = label(heldout, cfg.seed + 100)
    results = {}
    models = names if fast == "fast" or cfg.checker else {}
    computed = [s for s in SIGNAL_SETS if set(s) <= set(train_sig.groups)]  # s2check only with a checker
    for signals in [*computed, None]:  # None: the shipped default, which picks its signals on validation
        if signals is None:
            router, metrics = fit_from_table(cfg, train_table, train_sig, models)
        else:
            fixed = dataclasses.replace(cfg, choose_signals=False)
            router, metrics = fit_from_table(fixed, train_table, train_sig.subset(signals), models)
        r = score_routing(router, eval_table, eval_sig.subset(router.signals), heldout)
        r.update(signals=metrics["signals"], l2=metrics["l2"], validation_auroc=metrics["validation_auroc"])
        results["auto" if signals is None else "+".join(signals)] = r
    head = results["auto"]
    report = dict(
        benchmark="router_pareto", date=time.strftime("%Y-%m-%d"), machine=machine(),
        command="python benchmarks/router_pareto.py " + " ".join(sys.argv[1:]),
        setup=dict(model=args.model, fast_model=args.fast_model or None, checker=args.checker or None, levels=levels, task=cfg.task,
                   task_args=cfg.task_args, arms=[a.to_dict() for a in arms], train_problems=len(train),
                   problems=len(heldout), per_level=head["per_level"], signal_max_tokens=cfg.signal_max_tokens,
                   l2={k: r["l2"] for k, r in results.items()}),
        headline=dict(router="auto: signals chosen on the training problems' validation quarter",
                      signals=head["signals"], best_fixed=head["best_fixed"], bar=head["bar"],
                      predictor_auroc=head["predictor_auroc"], slow_share_for_80pct_gap=head["slow_share_for_80pct_gap"],
                      slow_share_for_80pct_gap_oracle=head["slow_share_for_80pct_gap_oracle"]),
        signal_sets=results, seconds=dict(label_train=round(t_label, 1), total=round(time.time() - t0, 1)))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    plot_pareto(head, out.with_suffix(".png"), f"Routing on {len(heldout)} held-out problems, levels {levels}",
                others={k: v for k, v in results.items() if k != "auto"})

    print(f"{len(heldout)} held-out problems {head['per_level']} (level: n); {len(train)} training problems")
    print(f"{'setting':<34}{'accuracy':>9}{'tokens':>9}")
    for f in head["fixed"]:
        print(f"{'fixed ' + f['name']:<34}{f['accuracy']:>9.1%}{f['mean_tokens']:>9.1f}")
    for name, r in results.items():
        for x in r["routed"]:
            if name == "auto" or x.get("tradeoff") == 0.05:
                print(f"{x['label'] + ('' if name == 'auto' else ' [' + name + ']'):<34}"
                      f"{x['accuracy']:>9.1%}{x['mean_tokens']:>9.1f}")
    print(f"{'oracle router':<34}{head['oracle']['accuracy']:>9.1%}{head['oracle']['mean_tokens']:>9.1f}")
    for name, r in results.items():
        b = r["bar"]["cheapest_router_within"]
        auc = ", ".join(f"{k} {v:.3f}" for k, v in r["predictor_auroc"].items())
        trivial = r["bar"]["fixed_arm_also_meets"]
        verdict = ("MET" if r["bar"]["met"] else "not met") + (
            f" only trivially: fixed {trivial} meets it too" if trivial and r["bar"]["met"] else "")
        print(f"{name + ('(' + r['signals'] + ')' if name == 'auto' else ''):<24} AUROC {auc}; bar {verdict}"
              + (f" ({b['label']}: {b['accuracy']:.1%} at {b['token_fraction_of_best']:.1%} of "
                 f"{r['best_fixed']['name']}'s tokens)" if b else " (no router setting within 1 point)")
              + f"; slow share for 80% of the gap: {r['slow_share_for_80pct_gap']} (oracle ranking "
                f"{r['slow_share_for_80pct_gap_oracle']}, random 0.8)")
    print(f"-> {out} and {out.with_suffix('.png')}; {report['seconds']['total']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
