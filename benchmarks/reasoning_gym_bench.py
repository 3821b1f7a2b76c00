"""reasoning-gym data sets, judged by their own scorers: System-1 SFT vs System-2 SFT vs System-2 after GRPO.

    nice -n 5 python benchmarks/reasoning_gym_bench.py     # the committed run (1 thread; wall time in the JSON)
    python benchmarks/reasoning_gym_bench.py --datasets chain_sum:2 --sft-steps 60 --rl-steps 4   # smaller

For each data set (``name:level``), from scratch, through the ``slowthink`` command line (the code users run):

1. ``s1``: ``slowthink train sft --task reasoning_gym --task-args name=NAME --levels LEVEL --system2-fraction 0``:
   direct answers only (the System-1 reference is the entry's answer);
2. ``s2``: the same with ``--system2-fraction 1``: worked solutions built from the entry's metadata
   (``slowthink/tasks/reasoning_gym.py``, ``WORKED``), the same steps, batch size and learning rate, i.e. the
   same number of training examples (its seconds are longer: worked solutions have more tokens);
3. ``rl``: ``slowthink train grpo --init s2/model`` for ``--rl-steps`` steps (a step count, not a time budget,
   so the arm is the same on a loaded machine; its seconds are recorded; rewards are the data set's own
   ``score_answer``, partial credit included);
4. ``slowthink eval`` of each model in its mode, greedy pass@1 on the first ``--per-level`` problems of the named
   held-out set of that level (disjoint from training by construction), with 95% Wilson intervals.

The trivial baseline beside them: always the most common answer of 5,000 training problems, scored (exact match)
on the same held-out problems (``majority_baseline``); an arm has learned something only where its interval clears
it.

Writes ``--json`` (a table, every stage's command, seconds and the load average around it, the machine) and a
bar plot ``--png``. A stage whose output already exists in ``--out`` is not run again (rerun after a kill).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARMS = ("s1", "s2", "rl")
ARM_LABELS = {"s1": "System-1 SFT", "s2": "System-2 SFT", "rl": "System-2 SFT + GRPO"}
ARM_MODES = {"s1": "system1", "s2": "system2", "rl": "system2"}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default="chain_sum:2,leg_counting:2,letter_counting:1",
                    help="comma-separated NAME:LEVEL (a reasoning-gym data set with a worked-solution formatter)")
    ap.add_argument("--model", default="small", help="model preset (char tokenizer, from scratch)")
    ap.add_argument("--sft-steps", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3, help="SFT peak learning rate (Muon, the SFT default)")
    ap.add_argument("--warmup-steps", type=int, default=30)
    ap.add_argument("--rl-steps", type=int, default=100, help="GRPO steps (0: no RL arm)")
    ap.add_argument("--rl-time-budget-s", type=float, default=0.0, help="also stop GRPO after this many seconds "
                    "(0: none; steps alone keep the arm reproducible on a shared machine)")
    ap.add_argument("--rl-lr", type=float, default=1e-5)
    ap.add_argument("--rl-prompts", type=int, default=16)
    ap.add_argument("--rl-group", type=int, default=8)
    ap.add_argument("--per-level", type=int, default=200, help="held-out problems per data set")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/reasoning_gym_bench")
    ap.add_argument("--json", default=str(ROOT / "benchmarks/results/reasoning_gym.json"))
    ap.add_argument("--png", default=str(ROOT / "benchmarks/results/reasoning_gym.png"))
    ap.add_argument("--plot-only", action="store_true", help="redraw --png from --json, run nothing")
    return ap.parse_args(argv)


def slowthink() -> list[str]:
    """The ``slowthink`` command of this Python's environment."""
    exe = Path(sys.executable).with_name("slowthink")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "slowthink.cli"]


def run(cmd: list[str], log: Path) -> dict:
    """Run one stage; its command, wall seconds, CPU seconds (on a shared machine far fewer than the wall's) and
    the load average before and after."""
    load0, t0, cpu0 = os.getloadavg(), time.time(), children_cpu_s()
    with log.open("w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    seconds = round(time.time() - t0, 1)
    if proc.returncode:
        raise RuntimeError(f"stage failed ({proc.returncode}): {' '.join(cmd)}\n{log.read_text()[-3000:]}")
    return {"command": " ".join(cmd), "seconds": seconds, "cpu_s": round(children_cpu_s() - cpu0, 1),
            "loadavg_before": load0, "loadavg_after": os.getloadavg()}


def children_cpu_s() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def max_tokens_for(name: str, level: int) -> int:
    """Generation limit: the longest System-2 reference completion of 200 training problems, in char tokens,
    plus room to spare (an untrained model rambles to the limit, so it is kept tight)."""
    import random

    from slowthink.chat import Mode
    from slowthink.tasks import get_task
    from slowthink.tokenizer import build_char_tokenizer

    task, tok, rng = get_task("reasoning_gym", name=name), build_char_tokenizer(), random.Random(0)
    refs = [task.reference(task.sample_split(rng, level, "train"), Mode.SYSTEM2).completion() for _ in range(200)]
    return max(len(tok(r)["input_ids"]) for r in refs) + 24


def majority_baseline(name: str, level: int, per_level: int, draws: int = 5000) -> dict:
    """The trivial baseline: always answer the most common answer of ``draws`` training problems; its accuracy
    (exact match) and 95% Wilson interval on the held-out problems every arm is evaluated on."""
    import random
    from collections import Counter

    from slowthink.evaluate import wilson_interval
    from slowthink.tasks import get_task

    task, rng = get_task("reasoning_gym", name=name), random.Random(0)
    answer, _ = Counter(task.sample_split(rng, level, "train").answer for _ in range(draws)).most_common(1)[0]
    held = task.heldout_set(per_level, (level,))
    hits = sum(p.answer == answer for p in held)
    return {"answer": answer, "n": len(held), "pass@1": hits / len(held), "ci95": list(wilson_interval(hits, len(held)))}


def stages(name: str, level: int, run_dir: Path, args, max_tokens: int) -> dict[str, list[str]]:
    exe, pre = slowthink(), []
    common = ["--task", "reasoning_gym", "--task-args", f"name={name}", "--levels", str(level),
              "--threads", str(args.threads), "--seed", str(args.seed), "--progress", "false"]
    sft = ["train", "sft", *common, "--model", args.model, "--steps", str(args.sft_steps), "--batch-size",
           str(args.batch_size), "--lr", str(args.lr), "--warmup-steps", str(args.warmup_steps), "--eval-every", "0",
           "--eval-per-level", "0", "--checkpoint-every", "1000", "--max-new-tokens", str(max_tokens)]
    grpo = ["train", "grpo", "--init", str(run_dir / "s2" / "model"), *common, "--steps", str(args.rl_steps),
            "--time-budget-s", str(args.rl_time_budget_s), "--lr", str(args.rl_lr), "--prompts-per-step",
            str(args.rl_prompts), "--group-size", str(args.rl_group), "--max-new-tokens", str(max_tokens),
            "--eval-per-level", "0", "--checkpoint-every", "1000"]
    out = {"s1": [*exe, *pre, *sft, "--system2-fraction", "0", "--out", str(run_dir / "s1")],
           "s2": [*exe, *pre, *sft, "--system2-fraction", "1", "--out", str(run_dir / "s2")],
           "rl": [*exe, *pre, *grpo, "--out", str(run_dir / "rl")]}
    for arm in ARMS:
        out[f"eval_{arm}"] = [*exe, *pre, "eval", "--model", str(run_dir / arm / "model"), "--levels", str(level),
                              "--per-level", str(args.per_level), "--modes", ARM_MODES[arm], "--max-new-tokens",
                              str(max_tokens), "--json-out", str(run_dir / f"eval_{arm}.json")]
    return out


def done(stage: str, run_dir: Path) -> bool:
    return (run_dir / (f"{stage}.json" if stage.startswith("eval_") else f"{stage}/model/config.json")).exists()


def rl_summary(run_dir: Path) -> dict:
    rows = [json.loads(x) for x in (run_dir / "rl" / "metrics.jsonl").read_text().splitlines() if x.strip()]
    rows = [r for r in rows if "reward_mean" in r]
    if not rows:
        return {"steps": 0}
    head, tail = rows[: max(1, len(rows) // 4)], rows[-max(1, len(rows) // 4):]
    mean = lambda rs, k: round(sum(r[k] for r in rs) / len(rs), 4)  # noqa: E731
    return {"steps": rows[-1]["step"], "samples": rows[-1].get("samples"),
            "reward_first_quarter": mean(head, "reward_mean"), "reward_last_quarter": mean(tail, "reward_mean"),
            "pass_rate_first_quarter": mean(head, "pass_rate"), "pass_rate_last_quarter": mean(tail, "pass_rate")}


def bench_dataset(spec: str, args, record: dict) -> dict:
    name, _, level_text = spec.partition(":")
    level = int(level_text or 1)
    run_dir = Path(args.out) / f"{name}_L{level}"
    run_dir.mkdir(parents=True, exist_ok=True)
    max_tokens = max_tokens_for(name, level)
    res = {"dataset": name, "level": level, "max_new_tokens": max_tokens,
           "majority_baseline": majority_baseline(name, level, args.per_level), "stages": {}}
    timings_path = run_dir / "stages.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    for stage, cmd in stages(name, level, run_dir, args, max_tokens).items():
        if stage in ("rl", "eval_rl") and not args.rl_steps:
            continue
        if not done(stage, run_dir):
            if stage in ARMS:
                shutil.rmtree(run_dir / stage, ignore_errors=True)  # a killed trainer: start the stage over
            print(f"[{time.strftime('%H:%M:%S')}] {name} L{level}: {stage}", flush=True)
            timings[stage] = run(cmd, run_dir / f"{stage}.log")
            timings_path.write_text(json.dumps(timings, indent=1))
        res["stages"][stage] = timings.get(stage)
    for arm in ARMS:
        path = run_dir / f"eval_{arm}.json"
        if path.exists():
            block = json.loads(path.read_text())["results"][ARM_MODES[arm]]["overall"]
            res[arm] = {"mode": ARM_MODES[arm], "n": block["n"], "pass@1": block["pass@1"],
                        "ci95": block["pass@1_ci95"], "mean_tokens": block["mean_tokens"]}
            print(f"  {name} L{level} {ARM_LABELS[arm]}: {block['pass@1']:.1%} "
                  f"[{block['pass@1_ci95'][0]:.1%}, {block['pass@1_ci95'][1]:.1%}] n={block['n']}", flush=True)
    if (run_dir / "rl" / "metrics.jsonl").exists():
        res["rl_training"] = rl_summary(run_dir)
    record["datasets"].append(res)
    return res


def table(record: dict) -> list[dict]:
    rows = []
    for d in record["datasets"]:
        row = {"dataset": d["dataset"], "level": d["level"]}
        if "majority_baseline" in d:
            m = d["majority_baseline"]
            row["majority"] = f"{m['pass@1']:.1%} [{m['ci95'][0]:.1%}, {m['ci95'][1]:.1%}] (always {m['answer']!r})"
        for arm in ARMS:
            if arm in d:
                row[arm] = f"{d[arm]['pass@1']:.1%} [{d[arm]['ci95'][0]:.1%}, {d[arm]['ci95'][1]:.1%}]"
                row[f"{arm}_n"] = d[arm]["n"]
        rows.append(row)
    return rows


def plot(record: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ds = record["datasets"]
    fig, ax = plt.subplots(figsize=(2.6 * len(ds) + 2, 4))
    width = 0.26
    for i, arm in enumerate(ARMS):
        xs, ys, lo, hi = [], [], [], []
        for j, d in enumerate(ds):
            if arm in d:
                p, (a, b) = d[arm]["pass@1"], d[arm]["ci95"]
                xs.append(j + (i - 1) * width)
                ys.append(100 * p)
                lo.append(100 * (p - a))
                hi.append(100 * (b - p))
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=ARM_LABELS[arm])
    for j, d in enumerate(ds):  # the trivial baseline: always the most common training answer
        if "majority_baseline" in d:
            ax.hlines(100 * d["majority_baseline"]["pass@1"], j - 1.6 * width, j + 1.6 * width, colors="k",
                      linestyles="--", label="most common answer" if j == 0 else None)
    ax.set_xticks(range(len(ds)), [f"{d['dataset']}\nlevel {d['level']} (n={d.get('s1', {}).get('n', '?')})"
                                   for d in ds])
    ax.set_ylabel("held-out pass@1 (%), 95% Wilson")
    s = record["settings"]
    rl = (f"GRPO {s['rl_steps']} steps x {s['rl_prompts']}x{s['rl_group']}" if "rl_steps" in s
          else f"GRPO <= {s['rl_time_budget_s']:.0f} s")
    ax.set_title(f"reasoning-gym, {s['model']} model from scratch: SFT {s['sft_steps']} steps x {s['batch_size']}, "
                 + rl, fontsize=9)
    ax.legend(fontsize=8)
    top = max((d[a]["ci95"][1] for d in ds for a in ARMS if a in d), default=1.0)
    ax.set_ylim(0, min(100, max(10, 130 * top)))  # low accuracies stay readable
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    from slowthink.train.runlog import machine_info

    args = parse_args(argv)
    if args.plot_only:
        plot(json.loads(Path(args.json).read_text()), Path(args.png))
        return 0
    record = {"benchmark": "reasoning_gym", "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
              "settings": vars(args), "machine": machine_info(args.threads), "loadavg_start": os.getloadavg(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "datasets": []}
    from importlib.metadata import version

    record["reasoning_gym_version"] = version("reasoning-gym")
    t0 = time.time()
    for spec in args.datasets.split(","):
        bench_dataset(spec.strip(), args, record)
        record["table"] = table(record)
        record["total_s"] = round(time.time() - t0, 1)  # this invocation (stages found done in --out are not rerun)
        record["stages_total_s"] = round(sum(st["seconds"] for d in record["datasets"]
                                             for st in d["stages"].values() if st), 1)  # every stage, whenever run
        record["total_cpu_s"] = round(children_cpu_s(), 1)  # every stage's process, user + system
        record["loadavg_end"] = os.getloadavg()
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
        plot(record, Path(args.png))
    print(json.dumps(record["table"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
