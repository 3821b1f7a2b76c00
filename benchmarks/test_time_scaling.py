"""Test-time scaling: held-out accuracy against policy (thinking) tokens spent, for every search strategy.

    python benchmarks/test_time_scaling.py                      # the committed run (~20 min on 2 cores, 1 torch thread)
    python benchmarks/test_time_scaling.py --problems 10 --search-problems 5 --out /tmp/tts   # a quick look

Models (made first; all under runs/, git-ignored):
* policy and verifier models: one SFT run of the 3-digit recipe that keeps a snapshot every 100 steps,
  ``slowthink train sft --task-args op=mul,cot=cells --levels 1,2,3 --level-weights 1,1,1 --model small
  --steps 1500 --batch-size 64 --lr 1e-3 --optimizer adamw --warmup-steps 30 --system2-fraction 0.5 --eval-every 100
  --eval-per-level 50 --snapshot-every 100 --out runs/l123`` (~45 min on the 2-core box). The **policy** is
  ``runs/l123/snapshots/step_600`` (level 2: 45% greedy on these problems, in the 20-60% band).
* learned critics: ``python benchmarks/prm_quality.py --policy runs/l123/snapshots/step_600 --completer
  runs/l123/snapshots/step_1200 --backbone completer --out benchmarks/results/prm_quality_l123 --run-dir
  runs/prm_l123`` (Math-Shepherd MC labels rolled out by the step-1200 snapshot of the same run, PRM and ORM
  on its backbone). No ground-truth oracle guides any strategy; pass@N is reported only as a ceiling.
* generative verifier (``--gen-verifier``): the same step-1200 snapshot read as a language model
  (``slowthink.critics.generative``): each step scores its least likely token. It is a stronger model than
  the policy, so its own greedy accuracy on the same problems is recorded beside every number it drives,
  and bar 1 is reported both with and without it.
* step-recomputing checker (``--check``): ``slowthink train sft --out runs/checker --task arithmetic --task-args
  op=mixed,operands=steps --levels 1,2,3,4,5,6 --system2-fraction 0.5 --optimizer adamw --model small --steps 2000 --lr 1e-3
  --warmup-steps 30 --micro-batches 2 --eval-every 500 --eval-per-level 32`` (~17 min on 2 cores): a model that
  only ever saw the sub-problems of a worked multiplication (``n``-digit times one digit, ``n``-digit plus
  ``n``-digit); it answers every claim a sample's steps make (``slowthink.critics.recompute``), and its own
  greedy accuracy on the benchmark's problems is recorded.

Task ``arithmetic`` (op=mul, cot=cells), System-2, held-out level-2 problems (``task.heldout_set(P, (2,))``, the
named held-out set).

What runs how:
* greedy, beam (PRM), mcts (PRM), budget_forcing: through their real ``solve`` functions via
  ``slowthink.evaluate.evaluate_strategy``, one setting at a time (beam ``n``/``beam_width`` pairs,
  MCTS simulation counts, budget-forcing ``min_thinking``), on the first ``--search-problems`` problems.
* majority, best_of_n, weighted_majority (N = 1, 2, 4, ..., 64): to save time, one pool of ``--n-max``
  samples per problem is drawn once (same Policy, temperature and max_tokens as the strategies use; the code is
  ``slowthink.search.scaling``, shared with the quickstart's search stage) and every N is evaluated on the
  first N samples with the *same* rules as the strategy modules: majority uses ``slowthink.evaluate.majority`` and
  takes the first sample with the winning answer; best-of-N takes the well-formed sample with the highest
  verifier score (ties: earlier); weighted majority uses ``slowthink.search.weighted_majority.weighted_vote``
  and takes the highest-scoring sample with the winning answer. Verifier scores are those ``score_completion``
  gives: ORM ``score`` or PRM step scores of the reasoning aggregated by ``min`` (the strategies' default),
  0.0 with no step; malformed samples are not scored. Policy tokens of N = the sum of the first N samples'
  generated tokens; verifier tokens = the tokens the critic reads for the scored ones among them. A library
  check runs the real ``solve`` functions at a few N on the same problems (fresh samples, so accuracy is close
  to, not equal to, the pool numbers).

Bars: (1) the best strategy using at most 64x greedy's mean policy tokens is >= 25 points above
greedy; (2) a PRM-guided strategy (weighted majority with the PRM, or beam) beats plain majority at equal
tokens at most budgets (weighted majority: same N, same samples, N >= 2; beam: majority's accuracy
interpolated at beam's mean tokens on the same problems, linear in log tokens).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from slowthink.search import Policy, get_strategy, make_verifier  # noqa: E402
from slowthink.evaluate import evaluate_strategy
from slowthink.search.scaling import draw_pool, interp_log, pool_curves, score_pool  # noqa: E402

# The pool strategies of this benchmark (slowthink.search.scaling rules), in the order they are plotted.
POOL_RULES = ("majority", "confidence_majority", "best_of_n_prm", "best_of_n_orm", "weighted_majority_prm",
              "weighted_majority_orm", "pass_at_n_ceiling")
GEN_RULES = ("best_of_n_gen", "weighted_majority_gen")  # with --gen-verifier
CHECK_RULES = ("best_of_n_check", "weighted_majority_check")  # with --check


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policy", default=str(ROOT / "runs/l123/snapshots/step_600"))
    p.add_argument("--prm", default=str(ROOT / "runs/prm_l123/prm/critic"))
    p.add_argument("--orm", default=str(ROOT / "runs/prm_l123/orm/critic"))
    p.add_argument("--gen-verifier", default=str(ROOT / "runs/l123/snapshots/step_1200"), help="also rank with a generative verifier reading with this model "
                   "(slowthink.critics.generative; the PRM's completer); its own greedy accuracy is recorded; '' = none")
    p.add_argument("--check", default=str(ROOT / "runs/checker/model"), help="also rank with a step-recomputing verifier whose checker model answers "
                   "every claim the steps make (slowthink.critics.recompute): MODEL_DIR[@system1]; its own greedy "
                   "accuracy on the problems is recorded; '' = none")
    p.add_argument("--check-beam", default="4:2,16:4,64:8", help="beam settings n:beam_width guided by the checker")
    p.add_argument("--gen-beam", default="4:2,16:4,64:8", help="beam settings n:beam_width guided by the generative verifier")
    p.add_argument("--task", default="arithmetic", help="task name or path/to/file.py:ClassName")
    p.add_argument("--task-args", default="op=mul,cot=cells", help="task constructor arguments")
    p.add_argument("--level", type=int, default=2)
    p.add_argument("--problems", type=int, default=100, help="held-out problems (greedy and the sample pools)")
    p.add_argument("--n-max", type=int, default=64, help="largest N of the sampling strategies")
    p.add_argument("--temperatures", default="0.7,1.0", help="sampling temperatures of the pool strategies")
    p.add_argument("--search-temperature", type=float, default=1.0, help="sampling temperature of beam and mcts")
    p.add_argument("--search-problems", type=int, default=100, help="first problems for beam, mcts, budget forcing")
    p.add_argument("--beam", default="4:2,16:4,64:8", help="beam settings n:beam_width (PRM)")
    p.add_argument("--mcts", default="4,16", help="MCTS simulation counts (expand 4)")
    p.add_argument("--mcts-expand", type=int, default=4)
    p.add_argument("--forcing", default="80", help="budget_forcing min_thinking values (T=0, max_waits 2)")
    p.add_argument("--check-n", default="4,16", help="N of the library check (real solve functions)")
    p.add_argument("--max-tokens", type=int, default=160, help="longest completion (as the critics' samples)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/test_time_scaling"))
    p.add_argument("--bars-from", default="", help="recompute the bars and the plot of a results JSON written by this "
                   "script (no model runs), in place")
    return p.parse_args(argv)


def row(res: dict, **setting) -> dict:
    o = res["overall"]
    return {**setting, "n_problems": o["n"], "accuracy": o["accuracy"], "well_formed": o["well_formed"],
            "mean_policy_tokens": o["mean_policy_tokens"], "mean_verifier_tokens": o["mean_verifier_tokens"]}


def plot(path: Path, res: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6))
    g = res["greedy"]
    ax.axhline(g["accuracy"], color="black", lw=0.8, ls=":")
    ax.plot([g["mean_policy_tokens"]], [g["accuracy"]], "k*", ms=12, label=f"greedy ({g['accuracy']:.2f})")
    ax.axhline(g["accuracy"] + 0.25, color="red", lw=0.6, ls="--", label="greedy + 25 points (bar 1)")
    ax.axvline(64 * g["mean_policy_tokens"], color="grey", lw=0.6, ls="--", label="64x greedy tokens")
    markers = "osv^<>Dph"
    for t_i, (temp, curves) in enumerate(res["pool"].items()):
        ls = "-" if t_i == 0 else "--"
        for j, (name, pts) in enumerate(curves.items()):
            style = ":" if name == "pass_at_n_ceiling" else ls
            ax.plot([p["mean_policy_tokens"] for p in pts], [p["accuracy"] for p in pts], style,
                    marker=markers[j % len(markers)], ms=4, lw=2.4 if name.endswith("_check") else 1.2,
                    label=f"{name} T={temp}")
    groups = [("beam (PRM)", [r for r in res["beam"] if r["verifier"] == "prm"]),
              ("beam (gen)", [r for r in res["beam"] if r["verifier"] == "gen"]),
              ("beam (check)", [r for r in res["beam"] if r["verifier"] == "check"]),
              ("mcts (PRM)", res["mcts"]), ("budget_forcing T=0", res["budget_forcing"])]
    for label, rows in groups:
        pts = sorted(rows, key=lambda r: r["mean_policy_tokens"])
        if pts:
            ax.plot([p["mean_policy_tokens"] for p in pts], [p["accuracy"] for p in pts], "-", marker="P", lw=2,
                    label=label)
    ax.set_xscale("log")
    ax.set_xlabel("mean policy tokens per problem (log)")
    ax.set_ylabel("held-out accuracy")
    ax.set_title(f"Test-time scaling, {res['problems']} held-out level-{res['level']} {res['task']} problems")
    ax.legend(fontsize=6.5, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def bars(res: dict, st: float) -> None:
    """The bars from the measured rows (``res["bar1"]``, ``res["bar2"]``); ``st``: the search temperature."""
    g = res["greedy"]
    cap = 64 * g["mean_policy_tokens"]
    cands = []
    for temp, curves in res["pool"].items():
        for name, pts in curves.items():
            if name != "pass_at_n_ceiling":
                cands += [{**p, "strategy": name, "temperature": float(temp)} for p in pts]
    cands += res["beam"] + res["mcts"] + res["budget_forcing"]
    within = [c for c in cands if c["mean_policy_tokens"] <= cap]
    best = max(within, key=lambda c: c["accuracy"])
    uses_gen = lambda c: c.get("verifier") == "gen" or c.get("strategy", "").endswith("_gen")  # noqa: E731
    uses_check = lambda c: c.get("verifier") == "check" or c.get("strategy", "").endswith("_check")  # noqa: E731
    own = max((c for c in within if not uses_gen(c) and not uses_check(c)), key=lambda c: c["accuracy"])
    checked = [c for c in within if uses_check(c)]
    by_checker = max(checked, key=lambda c: (c["accuracy"], -c["mean_policy_tokens"])) if checked else None
    res["bar1"] = {"greedy_accuracy": g["accuracy"], "greedy_mean_policy_tokens": g["mean_policy_tokens"],
                   "token_cap_64x": cap, "best_within_cap": best, "gain_points": 100 * (best["accuracy"] - g["accuracy"]),
                   "best_uses_generative_verifier": uses_gen(best), "best_uses_checker": uses_check(best),
                   "best_without_generative_verifier_or_checker": own,
                   "gain_points_without_generative_verifier_or_checker": 100 * (own["accuracy"] - g["accuracy"]),
                   # the checker cannot solve these problems itself (check_verifier.its_own_greedy), unlike gen's model
                   "best_with_checker": by_checker,
                   "gain_points_with_checker": 100 * (by_checker["accuracy"] - g["accuracy"]) if by_checker else None,
                   "note": "beam/mcts/budget_forcing rows are on the first search_problems problems; compare their "
                           "greedy via greedy_search_subset",
                   "met": best["accuracy"] - g["accuracy"] >= 0.25}

    def vs_majority(key: str) -> dict:
        out = {}
        for temp, curves in res["pool"].items():
            pairs = [(m, w) for m, w in zip(curves["majority"], curves[key]) if m["n"] >= 2]
            out[temp] = {"budgets": len(pairs), "wins": sum(w["accuracy"] > m["accuracy"] for m, w in pairs),
                         "ties": sum(w["accuracy"] == m["accuracy"] for m, w in pairs),
                         "per_n": [{"n": m["n"], "majority": m["accuracy"], key: w["accuracy"]} for m, w in pairs]}
            out[temp]["met"] = out[temp]["wins"] > out[temp]["budgets"] / 2
        return out

    wm = vs_majority("weighted_majority_prm")
    beam_cmp = []
    maj_sub = res["pool_subset"][str(st)]["majority"] if str(st) in res["pool_subset"] else None
    for b in [b for b in res["beam"] if b["verifier"] == "prm"]:
        m = interp_log(maj_sub, b["mean_policy_tokens"]) if maj_sub else None
        beam_cmp.append({"n": b["n"], "beam_width": b["beam_width"], "tokens": b["mean_policy_tokens"],
                         "beam": b["accuracy"], "majority_interp": m})
    beam_cmp_valid = [c for c in beam_cmp if c["majority_interp"] is not None]
    beam_met = bool(beam_cmp_valid) and sum(c["beam"] > c["majority_interp"] for c in beam_cmp_valid) > len(
        beam_cmp_valid) / 2
    res["bar2"] = {"weighted_majority_prm_vs_majority": wm, "beam_vs_majority": beam_cmp, "beam_met": beam_met,
                   "met": beam_met or any(v["met"] for v in wm.values())}
    some_pool = next(iter(res["pool"].values()))
    # process verifiers beside the PRM, reported beside its verdict ("met" is the Math-Shepherd PRM's alone)
    for key in ("weighted_majority_gen", "weighted_majority_check"):
        if key in some_pool:
            res["bar2"][f"{key}_vs_majority"] = vs_majority(key)


def main(argv=None) -> int:
    from slowthink.engine import Engine
    from slowthink.models import load_model
    from slowthink.train.runlog import machine_info, write_json
    from slowthink.config import parse_mapping
    from slowthink.tasks import get_task

    args = parse_args(argv)
    if args.bars_from:
        path = Path(args.bars_from)
        res = json.loads(path.read_text())
        bars(res, res["args"]["search_temperature"])
        write_json(path, res)
        plot(path.with_suffix(".png"), res)
        print(json.dumps({"bar1": res["bar1"], "bar2_met": res["bar2"]["met"]}, indent=1))
        return 0
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.time()
    timings = {}
    task_args = parse_mapping(args.task_args)
    task = get_task(args.task, **task_args)
    model, tok = load_model(args.policy)
    engine = Engine(model, tok)
    prm = make_verifier(args.prm, task, "system2")
    orm = make_verifier(args.orm, task, "system2")
    gen = make_verifier(f"gen:{args.gen_verifier}", task, "system2") if args.gen_verifier else None
    check = make_verifier(f"check:{args.check}", task, "system2") if args.check else None
    rules = POOL_RULES + (GEN_RULES if gen is not None else ()) + (CHECK_RULES if check is not None else ())
    problems = task.heldout_set(args.problems, (args.level,))
    search_problems = problems[:args.search_problems]
    n_values = [n for n in (1, 2, 4, 8, 16, 32, 64, 128) if n <= args.n_max]

    def policy(temp: float) -> Policy:
        return Policy(engine, task, "system2", temperature=temp, max_tokens=args.max_tokens, seed=args.seed)

    res = {"command": "python " + " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
           "args": vars(args), "machine": machine_info(args.threads), "policy": args.policy, "prm": args.prm,
           "orm": args.orm, "task": args.task, "task_args": task_args, "level": args.level, "problems": len(problems),
           "search_problems": len(search_problems)}

    t = time.time()
    res["greedy"] = row(evaluate_strategy(get_strategy("greedy"), policy(1.0), None, problems), strategy="greedy")
    res["greedy_search_subset"] = row(evaluate_strategy(get_strategy("greedy"), policy(1.0), None, search_problems),
                                      strategy="greedy")
    timings["greedy_s"] = round(time.time() - t, 1)
    print("greedy", res["greedy"], flush=True)
    if gen is not None:  # how strong the verifier's model is on its own: the caveat every gen number carries
        alone = Policy(Engine(gen.model, gen.tokenizer), task, "system2", temperature=0.0, max_tokens=args.max_tokens)
        res["gen_verifier"] = {"model": args.gen_verifier, "its_own_greedy": row(
            evaluate_strategy(get_strategy("greedy"), alone, None, problems), strategy="greedy")}
        print("gen verifier alone", res["gen_verifier"], flush=True)
    if check is not None:  # the checker never learned these problems; this says whether it could solve them
        alone = Policy(check.engine, task, check.checker_mode, temperature=0.0, max_tokens=args.max_tokens)
        res["check_verifier"] = {"model": args.check, "mode": check.checker_mode, "its_own_greedy": row(
            evaluate_strategy(get_strategy("greedy"), alone, None, problems), strategy="greedy")}
        print("checker alone", res["check_verifier"], flush=True)

    res["pool"], res["pool_subset"], res["library_check"] = {}, {}, []
    for temp in [float(x) for x in args.temperatures.split(",") if x]:
        t = time.time()
        pol = policy(temp)
        pools = draw_pool(pol, problems, args.n_max)
        more = ({"gen": gen} if gen is not None else {}) | ({"check": check} if check is not None else {})
        score_pool(pol, problems, pools, prm=prm, orm=orm, **more)
        res["pool"][str(temp)] = pool_curves(pools, n_values, rules)
        res["pool_subset"][str(temp)] = pool_curves(pools[:len(search_problems)], n_values, rules)
        res[f"sample_pass_rate_T{temp}"] = sum(s["correct"] for pl in pools for s in pl) / sum(map(len, pools))
        timings[f"pool_T{temp}_s"] = round(time.time() - t, 1)
        print(f"T={temp}", json.dumps({k: [round(p["accuracy"], 3) for p in v] for k, v in res["pool"][str(temp)].items()}),
              flush=True)
        t = time.time()
        for n in [int(x) for x in args.check_n.split(",") if x]:
            for name, ver, pool_name in (("majority", None, "majority"), ("best_of_n", prm, "best_of_n_prm"),
                                         ("weighted_majority", prm, "weighted_majority_prm")):
                r = row(evaluate_strategy(get_strategy(name, n=n), pol, ver, problems), strategy=name, n=n,
                        temperature=temp, verifier="prm" if ver is not None else None)
                r["pool_accuracy_same_n"] = next(p["accuracy"] for p in res["pool"][str(temp)][pool_name] if p["n"] == n)
                res["library_check"].append(r)
        timings[f"library_check_T{temp}_s"] = round(time.time() - t, 1)

    st = args.search_temperature
    res["beam"], res["mcts"], res["budget_forcing"] = [], [], []
    t = time.time()
    for name, ver, agg, specs in (("prm", prm, "last", args.beam), ("gen", gen, "min", args.gen_beam),
                                  ("check", check, "min", args.check_beam)):
        for spec in [s for s in specs.split(",") if s and ver is not None]:
            n, bw = (int(x) for x in spec.split(":"))
            r = row(evaluate_strategy(get_strategy("beam", n=n, beam_width=bw, agg=agg), policy(st), ver,
                                      search_problems),
                    strategy="beam", n=n, beam_width=bw, temperature=st, verifier=name, agg=agg)
            res["beam"].append(r)
            print(f"beam ({name})", r, flush=True)
    timings["beam_s"] = round(time.time() - t, 1)
    t = time.time()
    for sims in [int(x) for x in args.mcts.split(",") if x]:
        r = row(evaluate_strategy(get_strategy("mcts", simulations=sims, expand=args.mcts_expand), policy(st), prm,
                                  search_problems),
                strategy="mcts", simulations=sims, expand=args.mcts_expand, temperature=st, verifier="prm", agg="last")
        res["mcts"].append(r)
        print("mcts", r, flush=True)
    timings["mcts_s"] = round(time.time() - t, 1)
    t = time.time()
    for mt in [int(x) for x in args.forcing.split(",") if x]:
        r = row(evaluate_strategy(get_strategy("budget_forcing", min_thinking=mt, max_waits=2), policy(0.0), None,
                                  search_problems),
                strategy="budget_forcing", min_thinking=mt, max_waits=2, temperature=0.0)
        res["budget_forcing"].append(r)
        print("budget_forcing", r, flush=True)
    timings["budget_forcing_s"] = round(time.time() - t, 1)

    bars(res, args.search_temperature)
    timings["total_s"] = round(time.time() - t0, 1)
    res["timings"] = timings

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out.with_suffix(".json"), res)
    plot(out.with_suffix(".png"), res)
    g, best = res["greedy"], res["bar1"]["best_within_cap"]
    print(f"greedy {g['accuracy']:.3f} at {g['mean_policy_tokens']:.1f} tokens; best within 64x: {best['strategy']} "
          f"{best['accuracy']:.3f} -> bar 1 {'met' if res['bar1']['met'] else 'not met'}; bar 2 "
          f"{'met' if res['bar2']['met'] else 'not met'}; total {timings['total_s']} s -> {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
