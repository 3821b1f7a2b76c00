"""PRM quality: does a process reward model trained on automatic (Monte-Carlo) step labels find the wrong
steps of held-out solutions, and does it pick better answers than an outcome reward model at equal N?

    python benchmarks/prm_quality.py                       # ~10 min on 2 cores (1 torch thread), models cached
    python benchmarks/prm_quality.py --completer policy --backbone policy    # pure self-rollouts (see README)
    python benchmarks/prm_quality.py --train-problems 64 --heldout 40 --epochs 2    # a quick look

Models (cached under runs/, built when missing):
* policy ``runs/rl_start/model``: the ``small`` preset after 350 SFT steps on 1x1/2x2-digit multiplication
  (``make_start`` in benchmarks/rl_gain.py); about a third of its greedy 2x2 System-2 answers are right,
  so its samples have many wrong steps.
* completer ``runs/prm_completer/model`` (``make_completer``): the policy after 300 more steps of the same
  SFT recipe (System-2 only). Math-Shepherd's rollouts come from a "completer"; with the policy as its
  own completer, 29% of the truly right step prefixes never reach the answer in 8 rollouts, so the
  labels mostly say "the policy cannot finish this", not "this step is wrong" (dev/LOG.md). No step label
  and no ground truth beyond the task's answer check goes into either model.

Phases, all on level 2:
1. sample the policy on training problems (train split), label every step prefix by rollouts of the
   completer, train a PRM on those labels and an ORM on the samples' answer checks (both start from
   ``--backbone``). No ground-truth step label is used up to here.
2. on held-out problems, sample ``--n-max`` fresh solutions each and report: PRM step-level AUROC
   against the task's ground-truth ``step_labels`` (with the AUROC of the step's position alone, for
   reference); ProcessBench-style F1 for the first wrong step (threshold chosen on the *training*
   samples' MC labels); ORM AUROC on outcome, pooled and within a problem; best-of-N accuracy for
   N = 1, 2, 4, ..., n-max, where every method picks from the same first N samples of a problem: ORM,
   PRM (min / prod / last aggregation), majority vote, critic-weighted votes, and the two ground-truth
   oracles (upper bounds, not learned).
3. a check that the library path agrees: ``slowthink.search.best_of_n`` with the PRM as its verifier
   on the first held-out problems (fresh samples, so its accuracy is close to, not equal to, the table).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from slowthink.critics import (  # noqa: E402
    auroc,
    best_threshold,
    first_false,
    new_critic,
    pick_best,
    predicted_first_error,
    processbench_f1,
    sample_solutions,
)
from slowthink.critics.train import (  # noqa: E402
    CriticConfig,
    collect,
    fit,
    make_policy,
    orm_examples,
    prm_examples,
    split_by_group,
    training_problems,
)
from slowthink.evaluate import majority  # noqa: E402
from slowthink.train.runlog import machine_info, write_json
from slowthink.search import Meter, Policy, aggregate  # noqa: E402
from slowthink.search.weighted_majority import weighted_vote  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policy", default=str(ROOT / "runs/rl_start/model"))
    p.add_argument("--completer", default=str(ROOT / "runs/prm_completer/model"),
                   help="model that rolls out the step prefixes for the MC labels: a folder (made by make_completer "
                        "and cached when it is the default and missing) or 'policy' (the policy completes itself)")
    p.add_argument("--backbone", default="completer",
                   help="what the PRM and ORM start from: policy, completer or a folder")
    p.add_argument("--completer-steps", type=int, default=300, help="SFT steps of make_completer beyond the policy")
    p.add_argument("--task", default="arithmetic", help="task name or path/to/file.py:ClassName")
    p.add_argument("--task-args", default="op=mul,cot=cells", help="task constructor arguments")
    p.add_argument("--level", type=int, default=2)
    p.add_argument("--train-problems", type=int, default=512)
    p.add_argument("--samples", type=int, default=4, help="policy samples per training problem")
    p.add_argument("--rollouts", type=int, default=4, help="MC rollouts per distinct step prefix")
    p.add_argument("--rollout-temperature", type=float, default=1.0, help="temperature of the MC completer")
    p.add_argument("--label", default="soft", choices=["soft", "hard"])
    p.add_argument("--train-temperature", type=float, default=1.0,
                   help="policy temperature of the training samples (held-out samples: always 1.0)")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--heldout", type=int, default=200, help="held-out problems")
    p.add_argument("--n-max", type=int, default=16, help="samples per held-out problem (largest N)")
    p.add_argument("--library-check", type=int, default=40, help="held-out problems for the best_of_n check")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core box)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/prm_quality"))
    p.add_argument("--run-dir", default=str(ROOT / "runs/prm_quality"), help="critics and metrics.jsonl go here")
    return p.parse_args(argv)


def make_completer(policy: str, out: Path, steps: int, threads: int) -> float:
    """The completer: the policy trained further with the same SFT recipe and data (System-2 only), so that it
    finishes a right prefix more often than the policy does. No step label is involved. Returns seconds spent
    (0 when cached)."""
    from slowthink.train.sft import SFTConfig, train

    if (out / "model" / "config.json").exists():
        return 0.0
    t = time.time()
    train(SFTConfig(out=str(out), model=policy, task="arithmetic", task_args={"op": "mul", "cot": "cells"},
                    levels=[1, 2], level_weights=[1, 3], steps=steps, batch_size=64, lr=6e-4, optimizer="adamw",
                    warmup_steps=10, system2_fraction=1.0, eval_every=100, eval_per_level=50, threads=threads,
                    checkpoint_every=1000, progress=False))
    return time.time() - t


def best_of_n_table(problems, groups, prm_scores, orm_scores, step_truth, n_values) -> dict:
    """Accuracy of each selection rule over the first N samples of every problem."""
    rules = {
        "orm": lambda g: pick_best([orm_scores[i] if s.well_formed else None for i, s in g]),
        "prm_min": lambda g: pick_best([aggregate(prm_scores[i], "min") if s.well_formed and s.steps else None
                                        for i, s in g]),
        "prm_prod": lambda g: pick_best([aggregate(prm_scores[i], "prod") if s.well_formed and s.steps else None
                                         for i, s in g]),
        "prm_last": lambda g: pick_best([aggregate(prm_scores[i], "last") if s.well_formed and s.steps else None
                                         for i, s in g]),
        "oracle_outcome": lambda g: pick_best([float(s.correct) if s.well_formed else None for _, s in g]),
        "oracle_steps": lambda g: pick_best([min(float(x) for x in step_truth[i]) if s.well_formed and s.steps
                                             else None for i, s in g]),
    }
    votes = {
        "majority": lambda g: majority([parsed_answer(s) for _, s in g]),
        "prm_weighted_vote": lambda g: weighted_vote([parsed_answer(s) for _, s in g],
                                                     [aggregate(prm_scores[i], "min") if s.steps else 0.0
                                                      for i, s in g]),
        "orm_weighted_vote": lambda g: weighted_vote([parsed_answer(s) for _, s in g], [orm_scores[i] for i, _ in g]),
    }
    table = {}
    for name in [*rules, *votes]:
        table[name] = {}
        for n in n_values:
            right = 0
            for p, g in zip(problems, groups):
                sub = g[:n]
                if name in rules:
                    right += sub[rules[name](sub)][1].correct
                else:  # the winning answer's first sample, scored by the task: a countdown answer has many right forms
                    won = votes[name](sub)
                    right += next((s.correct for _, s in sub if won is not None and parsed_answer(s) == won), False)
            table[name][str(n)] = right / len(problems)
    return table


def within_problem_auroc(groups, scores) -> dict:
    """Outcome AUROC among one problem's samples, averaged over problems that have both right and wrong
    samples: what best-of-N needs (pooled AUROC also rewards telling easy problems from hard ones)."""
    per = [auroc([scores[i] for i, _ in g], [s.correct for _, s in g]) for g in groups]
    per = [a for a in per if a == a]  # NaN: the problem's samples are all right or all wrong
    return {"mean": sum(per) / len(per) if per else float("nan"), "problems": len(per)}


def parsed_answer(sample) -> str | None:
    if not sample.well_formed:
        return None
    return sample.completion.split("</think>")[-1].strip()


def roc_points(scores, labels):
    pairs = sorted(zip(scores, labels), key=lambda t: -t[0])
    P = sum(labels) or 1
    N = (len(labels) - sum(labels)) or 1
    tp = fp = 0
    xs, ys = [0.0], [0.0]
    for _, y in pairs:
        tp, fp = tp + y, fp + (not y)
        xs.append(fp / N)
        ys.append(tp / P)
    return xs, ys


def plot(path: Path, res: dict, roc: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    ns = [int(n) for n in res["best_of_n"]["orm"]]
    styles = {"orm": "-o", "prm_min": "-s", "majority": "-^", "prm_weighted_vote": "-v",
              "oracle_outcome": ":", "oracle_steps": "--"}
    for name, style in styles.items():
        a.plot(ns, [res["best_of_n"][name][str(n)] for n in ns], style, label=name)
    a.set_xscale("log", base=2)
    a.set_xticks(ns, [str(n) for n in ns])
    a.set_xlabel("N (samples per problem)")
    a.set_ylabel("held-out accuracy")
    a.set_title(f"best-of-N, {res['heldout_problems']} held-out level-{res['level']} {res['task']} problems")
    a.legend(fontsize=8)
    for name, (xs, ys) in roc.items():
        b.plot(xs, ys, label=f"{name} (AUROC {res['auroc'][name]:.3f})")
    b.plot([0, 1], [0, 1], color="grey", lw=0.5)
    b.set_xlabel("false positive rate")
    b.set_ylabel("true positive rate")
    b.set_title("ROC on held-out samples")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    from slowthink.engine import Engine
    from slowthink.models import load_model
    from slowthink.train.runlog import RunLog
    from slowthink.search import best_of_n, get_strategy
    from slowthink.evaluate import evaluate_strategy
    from slowthink.config import parse_mapping
    from slowthink.tasks import get_task

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t_start = time.time()
    timings = {}
    task_args = parse_mapping(args.task_args)
    task = get_task(args.task, **task_args)
    run = Path(args.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    if args.policy == str(ROOT / "runs/rl_start/model") and not Path(args.policy, "config.json").exists():
        from rl_gain import make_start  # benchmarks/ is on sys.path when this file runs as a script

        t = time.time()
        make_start(Path(args.policy).parent, args.threads)
        timings["policy_build_s"] = round(time.time() - t, 1)
    completer_path = None if args.completer == "policy" else args.completer
    if completer_path == str(ROOT / "runs/prm_completer/model"):
        timings["completer_build_s"] = round(make_completer(args.policy, Path(completer_path).parent,
                                                            args.completer_steps, args.threads), 1)
    backbone = {"policy": args.policy, "completer": completer_path or args.policy}.get(args.backbone, args.backbone)
    cfg = CriticConfig(out=str(run), init=args.policy, task=args.task, task_args=task_args,
                       levels=[args.level], problems=args.train_problems,
                       samples_per_problem=args.samples, rollouts=args.rollouts, label=args.label,
                       rollout_temperature=args.rollout_temperature, epochs=args.epochs,
                       lr=args.lr, batch_size=args.batch_size, seed=args.seed, threads=args.threads)
    model, tok = load_model(args.policy)
    policy = Policy(Engine(model, tok), task, "system2", temperature=cfg.temperature, max_tokens=cfg.max_new_tokens,
                    seed=args.seed)
    completer = make_policy(completer_path, task, cfg) if completer_path else None
    heldout_completer = None
    if completer is not None:  # how often each model solves held-out problems alone (greedy), for context
        heldout_completer = {name: evaluate_strategy(get_strategy("greedy"), pol, None,
                                                     task.heldout_set(args.heldout, (args.level,)))["overall"]["accuracy"]
                             for name, pol in (("policy", policy), ("completer", completer))}

    # 1. automatic labels and training --------------------------------------------------------------
    t = time.time()
    train_policy = dataclasses.replace(policy, temperature=args.train_temperature)
    samples, labels = collect(cfg, train_policy, training_problems(task, cfg.levels, cfg.problems, cfg.seed), "prm",
                              completer)
    timings["sample_and_mc_label_s"] = round(time.time() - t, 1)
    truth_train = [task.step_labels(s.problem, "\n".join(s.steps)) for s in samples]
    mc_vs_truth = {
        "soft_auroc": auroc([x for lab in labels for x in lab.soft], [y for tr in truth_train for y in tr]),
        "hard_accuracy": sum(h == y for lab, tr in zip(labels, truth_train) for h, y in zip(lab.hard, tr))
        / max(1, sum(len(tr) for tr in truth_train)),
    }
    print(f"{len(samples)} training samples (pass rate {sum(s.correct for s in samples) / len(samples):.3f}); "
          f"MC labels vs ground truth (diagnostic only): {mc_vs_truth}")

    critics, histories = {}, {}
    for kind in ("prm", "orm"):
        t = time.time()
        critic = new_critic(kind, backbone, task)
        ex = prm_examples(critic, samples, labels, cfg.label) if kind == "prm" else orm_examples(critic, samples)
        tr, val = split_by_group(ex, cfg.val_fraction, cfg.seed)
        log = RunLog(run / kind, tensorboard=False)
        histories[kind] = fit(critic, tr, val, cfg, log)
        log.close()
        critic.save(run / kind / "critic")
        critics[kind] = critic
        timings[f"train_{kind}_s"] = round(time.time() - t, 1)
    prm, orm = critics["prm"], critics["orm"]

    # threshold for the first-error prediction, from training samples and their MC labels only
    train_scores = prm.score_steps_batch([(s.problem, s.steps) for s in samples])
    mc_first = [first_false(lab.hard) for lab in labels]
    threshold = best_threshold([sc for sc, s in zip(train_scores, samples) if s.steps],
                               [f for f, s in zip(mc_first, samples) if s.steps])

    # 2. held-out evaluation ----------------------------------------------------------------------------
    t = time.time()
    problems = task.heldout_set(args.heldout, (args.level,))
    held = sample_solutions(policy, problems, args.n_max, Meter(tag="heldout"))
    groups = [list(enumerate(held))[i * args.n_max:(i + 1) * args.n_max] for i in range(len(problems))]
    timings["heldout_sample_s"] = round(time.time() - t, 1)
    t = time.time()
    prm_scores = prm.score_steps_batch([(s.problem, s.steps) for s in held])
    orm_scores = orm.score_batch([(s.problem, s.completion) for s in held])
    timings["heldout_score_s"] = round(time.time() - t, 1)
    truth = [task.step_labels(s.problem, "\n".join(s.steps)) for s in held]

    step_scores = [x for sc in prm_scores for x in sc]
    step_truth = [y for tr in truth for y in tr]
    with_steps = [i for i, s in enumerate(held) if s.steps]
    pred = [predicted_first_error(prm_scores[i], threshold) for i in with_steps]
    true_first = [first_false(truth[i]) for i in with_steps]
    outcome = [s.correct for s in held]
    prm_min_all = [aggregate(sc, "min") if sc else 0.0 for sc in prm_scores]
    res = {
        "task": args.task, "task_args": task_args,
        "policy": args.policy, "completer": completer_path or "policy", "backbone": backbone, "level": args.level,
        "heldout_greedy_accuracy": heldout_completer, "args": vars(args), "machine": machine_info(args.threads),
        "train": {"problems": args.train_problems, "samples": len(samples),
                  "pass_rate": sum(s.correct for s in samples) / len(samples),
                  "steps": sum(len(s.steps) for s in samples),
                  "mean_rollouts_per_step": sum(sum(lab.rollouts) for lab in labels) / max(1, sum(len(lab.rollouts)
                                                                                               for lab in labels)),
                  "mc_labels_vs_ground_truth": mc_vs_truth, "history": histories},
        "heldout_problems": len(problems), "heldout_samples": len(held),
        "heldout_pass_rate": sum(outcome) / len(outcome),
        "heldout_steps": len(step_truth), "heldout_wrong_step_share": 1 - sum(step_truth) / max(1, len(step_truth)),
        "auroc": {"prm_steps": auroc(step_scores, step_truth), "orm_outcome": auroc(orm_scores, outcome),
                  "prm_min_outcome": auroc(prm_min_all, outcome),
                  # what the step's position alone gets (headers are mostly right, last rows mostly wrong)
                  "position_only_baseline": auroc([-i for tr in truth for i in range(len(tr))], step_truth)},
        "within_problem_outcome_auroc": {"orm": within_problem_auroc(groups, orm_scores),
                                         "prm_min": within_problem_auroc(groups, prm_min_all)},
        "auroc_by_step_index": {str(k): {"n": len(ys), "right": sum(ys), "auroc": auroc(xs, ys)}
                                for k in range(3)
                                for xs, ys in [([sc[k] for sc, tr in zip(prm_scores, truth) if len(tr) > k],
                                                [tr[k] for tr in truth if len(tr) > k])]},
        "processbench": {"threshold": threshold, **processbench_f1(pred, true_first)},
        "best_of_n": best_of_n_table(problems, groups, prm_scores, orm_scores, truth,
                                     [n for n in (1, 2, 4, 8, 16, 32, 64) if n <= args.n_max]),
    }
    print(json.dumps({k: res[k] for k in ("auroc", "processbench", "best_of_n")}, indent=1))

    # 3. the library path: best_of_n.solve with the PRM as verifier --------------------------------------
    if args.library_check:
        t = time.time()
        check = problems[:args.library_check]
        n = min(8, args.n_max)
        tokens0 = prm.tokens
        lib = evaluate_strategy(lambda p, pol, v, b: best_of_n.solve(p, pol, v, b, n=n, agg="min"), policy, prm, check)
        res["library_best_of_n_prm"] = {"problems": len(check), "n": n, "accuracy": lib["overall"]["accuracy"],
                                        "table_accuracy_same_problems": sum(
                                            g[pick_best([aggregate(prm_scores[i], "min") if s.well_formed and s.steps
                                                         else None for i, s in g[:n]])][1].correct
                                            for g in groups[:len(check)]) / len(check),
                                        "mean_verifier_tokens": lib["overall"]["mean_verifier_tokens"],
                                        "prm_tokens": prm.tokens - tokens0}
        timings["library_check_s"] = round(time.time() - t, 1)
    timings["total_s"] = round(time.time() - t_start, 1)
    res["timings"] = timings
    res["target_prm_step_auroc_0.90_met"] = res["auroc"]["prm_steps"] >= 0.90

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out.with_suffix(".json"), res)
    roc = {"prm_steps": roc_points(step_scores, step_truth), "orm_outcome": roc_points(orm_scores, outcome),
           "prm_min_outcome": roc_points(prm_min_all, outcome)}
    plot(out.with_suffix(".png"), res, roc)
    print(f"PRM step AUROC {res['auroc']['prm_steps']:.3f} (target 0.90: "
          f"{'met' if res['target_prm_step_auroc_0.90_met'] else 'not met'}); ProcessBench F1 "
          f"{res['processbench']['f1']:.3f}; ORM outcome AUROC {res['auroc']['orm_outcome']:.3f}; "
          f"total {timings['total_s']} s -> {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
