"""Small model that thinks vs bigger model that doesn't: accuracy against inference FLOPs per question.

    python benchmarks/small_vs_big.py          # trains both models (runs/small_vs_big/{tiny,medium}), then measures
    python benchmarks/small_vs_big.py --small-model runs/svb_tiny/model --big-model runs/svb_medium/model
                                                # measures two already-trained models (the committed run, ~4 min)

The committed models were trained (1 thread each, at the same time, on a 2-core CPU shared with other jobs) by
``slowthink train sft --config Q --model tiny|medium --out runs/svb_tiny|medium --steps 400 --threads 1
--eval-every 0``, Q being recipes/quickstart_l12.yaml without its quickstart-only ``k``/``out`` fields: the run
``train()`` below makes.

Recipe: the levels-1-2 quickstart SFT recipe (``recipes/quickstart_l12.yaml``: arithmetic op=mul cot=cells, levels 1-2 weighted
1:3, batch 64, lr 6e-4, 30 warm-up steps, cosine to 0.1, 75% System-2 examples) for both presets, with the same
number of optimizer steps (``--steps``), i.e. the same training examples, so the bigger model gets ~8x the
training FLOPs ("budget scaled to its size"). Given ``--small-model`` / ``--big-model`` folders (``RUN/model``),
nothing is trained and steps and wall times are read from ``RUN/config.json`` and ``RUN/metrics.jsonl``.

Measured on the same held-out level-2 problems (``task.heldout_set(P, (2,))``, the named held-out set), System-2 mode:
greedy (T=0), and majority@n / confidence-weighted majority@n (``slowthink.search.scaling``: one pool of
``n_max`` samples per problem, every n scored on the pool's first n samples) at each ``--temperatures``, for
n = 1, 2, 4, ... ``--small-n-max`` (small) and ``--big-n-max`` (big). No learned verifier is used (none is
trained for these two models); pass@n is recorded as the ceiling a perfect verifier would reach. A larger paired
check (``--check-problems``: all 790 held-out level-2 problems) compares, at the big model's greedy FLOPs, big
greedy with small greedy and small (confidence-)majority@k, k = the parameter ratio (exact sign test).

Inference FLOPs per question = 2 x N_nonemb x (prompt tokens + generated tokens), summed over every sample the
strategy draws (the prompt counted once per sample, as if nothing were shared), averaged over problems; N_nonemb
is the parameter count without the (tied) token-embedding matrix. Attention-score FLOPs (4 x layers x hidden x
context per token, summed over positions) are left out of it and reported beside it as an estimate.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from slowthink.search import Policy  # noqa: E402
from slowthink.search.scaling import CEILING, doubling, draw_pool, pool_curves  # noqa: E402

RULES = ("majority", "confidence_majority", CEILING)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[1:]))
    p.add_argument("--small-model", default=None,
                   help="trained small model folder (RUN/model); default: train --small-preset first")
    p.add_argument("--big-model", default=None,
                   help="trained big model folder (RUN/model); default: train --big-preset first")
    p.add_argument("--small-preset", default="tiny")
    p.add_argument("--big-preset", default="medium")
    p.add_argument("--recipe", default=str(ROOT / "recipes/quickstart_l12.yaml"), help="SFT recipe of both models")
    p.add_argument("--steps", type=int, default=400, help="optimizer steps of both models")
    p.add_argument("--runs", default=str(ROOT / "runs/small_vs_big"), help="where training writes RUNS/PRESET")
    p.add_argument("--level", type=int, default=2)
    p.add_argument("--problems", type=int, default=100, help="held-out problems")
    p.add_argument("--small-n-max", type=int, default=64)
    p.add_argument("--big-n-max", type=int, default=8)
    p.add_argument("--temperatures", default="0.4,0.7,1.0")
    p.add_argument("--max-tokens", type=int, default=160, help="longest completion")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/small_vs_big"))
    p.add_argument("--check-problems", type=int, default=1000,
                   help="a larger paired check at the big model's greedy FLOPs on up to this many held-out problems "
                        "(level 2 has 790): big greedy vs small greedy and small (confidence-)majority@k at "
                        "--check-temperature, k = the non-embedding parameter ratio, rounded (0: skip)")
    p.add_argument("--check-temperature", type=float, default=0.4)
    p.add_argument("--resume", action="store_true",
                   help="reuse a model's measurements from OUT.json when its folder and measurement args match "
                        "(the JSON is written after each model, so one model can be measured while the other trains)")
    return p.parse_args(argv)


def train(preset: str, args) -> Path:
    """The recipe's SFT run for ``preset`` with ``--steps`` steps; returns the model folder."""
    import yaml

    from slowthink.config import load_config
    from slowthink.train.sft import SFTConfig, train as sft_train

    known = set(SFTConfig.__dataclass_fields__)
    values = {k: v for k, v in yaml.safe_load(Path(args.recipe).read_text()).items() if k in known}
    values.update(model=preset, steps=args.steps, out=str(Path(args.runs) / preset), threads=args.threads,
                  eval_every=0, progress=False)
    cfg = load_config(SFTConfig, None, values)
    t = time.time()
    run = sft_train(cfg)
    print(f"trained {preset} in {time.time() - t:.0f} s -> {run}", flush=True)
    return Path(run) / "model"


def training_info(model_dir: Path) -> dict:
    run = Path(model_dir).parent
    cfg = json.loads((run / "config.json").read_text()) if (run / "config.json").is_file() else {}
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()] if (
        run / "metrics.jsonl").is_file() else []
    t0 = next((r["time"] for r in rows if "params" in r), None)
    t_train = max((r["time"] for r in rows if "loss" in r), default=None)
    final = {k: v for r in rows if r.get("step") == cfg.get("steps") and "loss" not in r for k, v in r.items()}
    return {"run": str(run), "preset": cfg.get("model"), "steps": cfg.get("steps"),
            "recipe": {k: cfg.get(k) for k in ("task", "task_args", "levels", "level_weights", "batch_size", "lr",
                                               "warmup_steps", "min_lr_ratio", "system2_fraction", "seed")},
            "threads": cfg.get("threads"),
            "train_wall_s": round(t_train - t0, 1) if t0 and t_train else None,
            "wall_with_final_eval_s": round(rows[-1]["time"] - t0, 1) if t0 and rows else None,
            "final_eval": {k: v for k, v in final.items() if k not in ("step", "time")}}


def measure(model_dir: Path, problems, n_max: int, args) -> dict:
    from slowthink.engine import Engine
    from slowthink.models import load_model
    from slowthink.tasks import get_task

    task = get_task("arithmetic", op="mul", cot="cells")
    model, tok = load_model(model_dir)
    model.eval()
    c = model.config
    total = sum(p.numel() for p in model.parameters())
    nonemb = total - model.get_input_embeddings().weight.numel()
    engine = Engine(model, tok)

    def pol(temp):
        return Policy(engine, task, "system2", temperature=temp, max_tokens=args.max_tokens, seed=args.seed)

    prompt_len = [len(pol(0.0).prompt_ids(p)) for p in problems]
    mean_prompt = sum(prompt_len) / len(problems)

    def attn_flops(pools, n):  # 4 * layers * hidden * context, summed over every position of every sample
        tot = sum(4 * c.num_hidden_layers * c.hidden_size * (L := pl + s["tokens"]) * (L + 1) / 2
                  for pl, pool in zip(prompt_len, pools) for s in pool[:n])
        return tot / len(pools)

    def with_flops(pt, pools):
        n = pt["n"]
        tokens = n * mean_prompt + pt["mean_policy_tokens"]
        return {**pt, "mean_prompt_tokens": n * mean_prompt, "mean_total_tokens": tokens,
                "flops": 2 * nonemb * tokens, "attention_flops_estimate": attn_flops(pools, n)}

    out = {"model": str(model_dir), "params_total": total, "params_nonembedding": nonemb,
           "layers": c.num_hidden_layers, "hidden": c.hidden_size, "mean_prompt_tokens": mean_prompt}
    t = time.time()
    pools = draw_pool(pol(0.0), problems, 1)
    out["greedy"] = with_flops(pool_curves(pools, [1], ("majority",))["majority"][0], pools)
    out["greedy"]["well_formed"] = sum(pl[0]["well_formed"] for pl in pools) / len(pools)
    out["greedy_correct"] = [int(pl[0]["correct"]) for pl in pools]  # per problem, for the paired test
    out["greedy_s"] = round(time.time() - t, 1)
    print(model_dir, "greedy", json.dumps(out["greedy"]), flush=True)
    out["pool"], out["sample_pass_rate"], out["pool_s"] = {}, {}, {}
    for temp in [float(x) for x in args.temperatures.split(",") if x]:
        t = time.time()
        pools = draw_pool(pol(temp), problems, n_max)
        curves = pool_curves(pools, doubling(n_max), RULES)
        out["pool"][str(temp)] = {k: [with_flops(p, pools) for p in v] for k, v in curves.items()}
        out["sample_pass_rate"][str(temp)] = sum(s["correct"] for pl in pools for s in pl) / sum(map(len, pools))
        out["pool_s"][str(temp)] = round(time.time() - t, 1)
        print(model_dir, f"T={temp}", json.dumps({k: [round(p["accuracy"], 3) for p in v] for k, v in curves.items()}),
              flush=True)
    return out


def sign_test(a: list[int], b: list[int]) -> dict:
    """Paired comparison of two 0/1 lists: exact two-sided sign test on the problems only one gets right."""
    only_a, only_b = sum(x > y for x, y in zip(a, b)), sum(y > x for x, y in zip(a, b))
    k, m = min(only_a, only_b), only_a + only_b
    return {"n": len(a), "a_accuracy": sum(a) / len(a), "b_accuracy": sum(b) / len(b), "only_a_right": only_a,
            "only_b_right": only_b, "sign_test_p": min(1.0, 2 * sum(math.comb(m, i) for i in range(k + 1)) / 2 ** m)
            if m else 1.0}


def check(small_dir: Path, big_dir: Path, k: int, args) -> dict:
    """Big greedy vs small greedy / small majority@k and confidence-majority@k on many problems, paired."""
    from slowthink.engine import Engine
    from slowthink.models import load_model
    from slowthink.search.scaling import pick_majority, pick_weighted
    from slowthink.tasks import get_task

    task = get_task("arithmetic", op="mul", cot="cells")
    problems = task.heldout_set(args.check_problems, (args.level,))
    got, tokens = {}, {}
    for key, d, temp, n in (("big_greedy", big_dir, 0.0, 1), ("small_greedy", small_dir, 0.0, 1),
                            ("small_pool", small_dir, args.check_temperature, k)):
        model, tok = load_model(d)
        pol = Policy(Engine(model.eval(), tok), task, "system2", temperature=temp, max_tokens=args.max_tokens,
                     seed=args.seed)
        pools = draw_pool(pol, problems, n)
        tokens[key] = sum(len(pol.prompt_ids(p)) * n + sum(s["tokens"] for s in pl) for p, pl in zip(problems, pools))
        if key == "small_pool":
            got[f"small_majority@{k}"] = [int(pl[pick_majority(pl)]["correct"]) for pl in pools]
            got[f"small_confidence_majority@{k}"] = [int(pl[pick_weighted(pl, "confidence")]["correct"]) for pl in pools]
        else:
            got[key] = [int(pl[0]["correct"]) for pl in pools]
    out = {"problems": len(problems), "k": k, "temperature": args.check_temperature,
           "mean_total_tokens": {key: v / len(problems) for key, v in tokens.items()},
           "accuracy": {key: sum(v) / len(v) for key, v in got.items()},
           "paired_vs_big_greedy": {key: sign_test(v, got["big_greedy"]) for key, v in got.items() if key != "big_greedy"}}
    return out


def points(m: dict) -> list[dict]:
    """Every strategy point of a model (greedy and each pool rule except the ceiling)."""
    pts = [{**m["greedy"], "strategy": "greedy", "temperature": 0.0}]
    for temp, curves in m["pool"].items():
        pts += [{**p, "strategy": name, "temperature": float(temp)} for name, ps in curves.items() if name != CEILING
                for p in ps]
    return pts


def verdict(small: dict, big: dict) -> list[dict]:
    """At each big-model point (greedy, majority@n at each temperature), the small model's most accurate point
    that spends at most as many FLOPs per question."""
    rows = []
    targets = [("greedy", 0.0, big["greedy"])] + [(f"majority@{p['n']}", float(t), p) for t, c in big["pool"].items()
                                                  for p in c["majority"]]
    sp = points(small)
    for name, temp, b in targets:
        within = [p for p in sp if p["flops"] <= b["flops"]]
        best = max(within, key=lambda p: (p["accuracy"], -p["flops"])) if within else None
        rows.append({"big": name, "big_temperature": temp, "big_accuracy": b["accuracy"], "big_flops": b["flops"],
                     "small_best": None if best is None else {k: best[k] for k in (
                         "strategy", "temperature", "n", "accuracy", "flops")},
                     "small_minus_big_points": None if best is None else round(100 * (best["accuracy"] - b["accuracy"]), 1),
                     "small_above": None if best is None else best["accuracy"] > b["accuracy"]})
    return rows


def plot(path: Path, res: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6))
    for key, color in (("small", "tab:blue"), ("big", "tab:red")):
        m = res[key]
        label = f"{m['preset']} ({m['params_nonembedding'] / 1e6:.2f}M non-emb)"
        ceiling_t = "0.7" if "0.7" in m["pool"] else next(iter(m["pool"]))
        for t_i, (temp, curves) in enumerate(m["pool"].items()):
            ls = ("-", "--", "-.")[t_i % 3]
            for name, mk in (("majority", "o"), ("confidence_majority", "s")):
                ps = curves[name]
                ax.plot([p["flops"] for p in ps], [p["accuracy"] for p in ps], ls, marker=mk, ms=4, color=color,
                        alpha=1.0 if name == "majority" else 0.5, label=f"{label} {name}@n T={temp}")
            if temp == ceiling_t:
                ps = curves[CEILING]
                ax.plot([p["flops"] for p in ps], [p["accuracy"] for p in ps], ":", color=color, lw=0.8,
                        label=f"{label} pass@n T={temp} (ceiling)")
        g = m["greedy"]
        ax.plot([g["flops"]], [g["accuracy"]], "*", ms=16, color=color, mec="black",
                label=f"{label} greedy ({g['accuracy']:.2f})")
    ax.axvline(res["big"]["greedy"]["flops"], color="grey", lw=0.6, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("inference FLOPs per question = 2 x N_nonemb x (prompt + generated tokens), all samples (log)")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(f"{res['small']['preset']} + search vs {res['big']['preset']}, {res['problems']} held-out "
                 f"level-{res['level']} problems (System-2)")
    ax.legend(fontsize=6.5, ncol=2, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    from slowthink.train.runlog import machine_info, write_json
    from slowthink.tasks import get_task

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.time()
    res = {"command": "python " + " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
           "args": vars(args), "machine": machine_info(args.threads),
           "machine_note": "2-core CPU shared with other training jobs during training and measurement; 1 torch "
                           "thread per process; wall times are upper bounds and not comparable run to run",
           "flops_formula": "flops per question = 2 * params_nonembedding * (n * prompt_tokens + generated tokens of "
                            "the n samples), averaged over problems (prompt counted once per sample, no prefix "
                            "sharing); params_nonembedding = all parameters minus the tied token-embedding matrix "
                            "(the output head's 2*hidden*vocab per token, ~1.5% (tiny) / 0.8% (medium), is left out "
                            "with it); attention_flops_estimate = sum over positions of 4 * layers * hidden * "
                            "context, reported separately, not added"}
    small_dir = Path(args.small_model) if args.small_model else train(args.small_preset, args)
    big_dir = Path(args.big_model) if args.big_model else train(args.big_preset, args)
    task = get_task("arithmetic", op="mul", cot="cells")
    problems = task.heldout_set(args.problems, (args.level,))
    res.update(level=args.level, problems=len(problems))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(out.with_suffix(".json").read_text()) if args.resume and out.with_suffix(".json").is_file() else {}
    same = ("level", "problems", "temperatures", "max_tokens", "seed")
    for key, d, n_max in (("small", small_dir, args.small_n_max), ("big", big_dir, args.big_n_max)):
        prev = old.get(key, {})
        if prev.get("model") == str(d) and prev.get("n_max") == n_max and all(
                old["args"].get(k) == vars(args)[k] for k in same):
            res[key] = {**prev, "reused_from_earlier_run": True}
            print(f"{key}: reusing the measurements of {d} in {out.with_suffix('.json')}", flush=True)
        else:
            res[key] = {**training_info(d), **measure(d, problems, n_max, args), "n_max": n_max}
        write_json(out.with_suffix(".json"), res)
    res["nonembedding_param_ratio"] = res["big"]["params_nonembedding"] / res["small"]["params_nonembedding"]
    res["verdict"] = verdict(res["small"], res["big"])
    v0, vs = res["verdict"][0], [v for v in res["verdict"] if v["small_best"]]
    res["verdict_summary"] = (
        f"at the big model's greedy FLOPs per question ({v0['big_flops']:.3g}) the small model's best point within "
        f"them ({v0['small_best']['strategy']}, T={v0['small_best']['temperature']}, n={v0['small_best']['n']}: "
        f"{v0['small_best']['accuracy']:.2f}) is {'above' if v0['small_above'] else 'not above'} the big model's "
        f"greedy ({v0['big_accuracy']:.2f}): {v0['small_minus_big_points']:+} points; the small model is above the "
        f"big one at {sum(v['small_above'] for v in vs)} of {len(vs)} big-model points (greedy and majority@n at "
        f"each temperature), by {min(v['small_minus_big_points'] for v in vs):+} to "
        f"{max(v['small_minus_big_points'] for v in vs):+} points")
    res["greedy_paired"] = sign_test(res["small"]["greedy_correct"], res["big"]["greedy_correct"])  # a=small, b=big
    if args.check_problems:
        t = time.time()
        k = round(res["nonembedding_param_ratio"])
        res["check"] = check(small_dir, big_dir, k, args)
        ne = {"big_greedy": res["big"]["params_nonembedding"], "small_greedy": res["small"]["params_nonembedding"],
              "small_pool": res["small"]["params_nonembedding"]}
        res["check"]["flops"] = {key: 2 * ne[key] * v for key, v in res["check"]["mean_total_tokens"].items()}
        res["check"]["seconds"] = round(time.time() - t, 1)
        print("check", json.dumps({k2: res["check"][k2] for k2 in ("accuracy", "flops", "paired_vs_big_greedy")}),
              flush=True)
    res["attention_share"] = {k: res[k]["greedy"]["attention_flops_estimate"] / res[k]["greedy"]["flops"]
                              for k in ("small", "big")}
    res["total_s"] = round(time.time() - t0, 1)
    write_json(out.with_suffix(".json"), res)
    plot(out.with_suffix(".png"), res)
    for v in res["verdict"]:
        s = v["small_best"]
        print(f"big {v['big']} T={v['big_temperature']}: {v['big_accuracy']:.3f} at {v['big_flops']:.3g} FLOPs; small "
              f"best within: {s and (s['strategy'], s['temperature'], s['n'], round(s['accuracy'], 3))} -> "
              f"{v['small_minus_big_points']:+} points" if s else "-> no small point within")
    print(f"total {res['total_s']} s -> {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
