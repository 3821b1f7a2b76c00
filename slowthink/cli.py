"""The ``slowthink`` command.

    slowthink quickstart [--out DIR] [--config recipes/quickstart.yaml] [--stages sft,eval,report]
    slowthink train sft --task arithmetic --levels 1,2,3 --out runs/sft [--config FILE.yaml]
    slowthink train grpo --init runs/quickstart/model --levels 3 --out runs/grpo
    slowthink train rloo|ppo|star|dpo --init MODEL_DIR ...    (one trainer module each, slowthink/rl/)
    slowthink eval --model DIR --task arithmetic --levels 1,2,3 [--k 8] [--json-out FILE]
    slowthink serve --model runs/quickstart/model [--port 8000] [--api-key KEY] [--traces DB] [--jobs DB]
    slowthink traces export --db runs/quickstart/traces.db --out traces.jsonl [--verified-only]
    slowthink tasks
    slowthink sample --task countdown --level 4 [--mode system2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .config import ConfigError, add_arguments, load_config, overrides_from_args, parse_mapping


def _config_parser(sub, name: str, cls, help: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help)
    p.add_argument("--config", help="YAML file of config fields (command-line options override it)")
    add_arguments(p, cls)
    return p


def _load(cls, ns) -> object:
    return load_config(cls, ns.config, overrides_from_args(ns, cls))


def cmd_quickstart(ns) -> int:
    from .quickstart import QuickstartConfig, run_quickstart
    from .report import TABLE_HEADER, results_table

    cfg = _load(QuickstartConfig, ns)
    summary = run_quickstart(cfg)
    if summary:
        _print_table(f"quickstart: {cfg.out}", TABLE_HEADER, results_table(summary["eval"]))
        print(f"System-2 {summary['system2_pass@1']:.1%} vs System-1 {summary['system1_pass@1']:.1%} "
              f"({summary['gap_points']:+.1f} points); stage times (s): {summary['timings_s']}")
        if "rl" in summary:
            rl = summary["rl"]
            print(f"RL (GRPO) on level {rl['level']}: held-out System-2 {rl['before']:.1%} -> {rl['after']:.1%} "
                  f"({100 * (rl['after'] - rl['before']):+.1f} points) in {rl['steps']} steps")
        print(f"report: {cfg.out}/report.md   model: {cfg.out}/model")
    return 0


def trainers() -> dict:
    """Algorithm name -> (config class, train function); one trainer module per algorithm."""
    from .rl import dpo, grpo, ppo, rloo, sft, star

    return {"sft": (sft.SFTConfig, sft.train), "grpo": (grpo.GRPOConfig, grpo.train),
            "rloo": (rloo.RLOOConfig, rloo.train), "ppo": (ppo.PPOConfig, ppo.train),
            "star": (star.STaRConfig, star.train), "dpo": (dpo.DPOConfig, dpo.train)}


def cmd_train(ns) -> int:
    from .rl.common import TrainingHalted

    cfg_cls, train = trainers()[ns.algo]
    try:
        run = train(_load(cfg_cls, ns))
    except TrainingHalted as e:
        print(f"slowthink train {ns.algo}: stopped: {e}", file=sys.stderr)
        return 3
    print(f"done: {run}/model")
    return 0


def cmd_eval(ns) -> int:
    from .engine import Engine
    from .evaluate import evaluate
    from .models import load_model
    from .report import TABLE_HEADER, results_table
    from .tasks import get_task

    task = get_task(ns.task, **parse_mapping(ns.task_args))
    levels = tuple(int(x) for x in ns.levels.split(",")) if ns.levels else tuple(task.levels)
    modes = tuple(m.strip() for m in ns.modes.split(","))
    model, tok = load_model(ns.model)
    problems = task.heldout_set(ns.per_level, levels, seed=ns.seed + 1000)
    res = evaluate(Engine(model, tok), task, tok, problems, modes=modes, k=ns.k, temperature=ns.temperature,
                   max_tokens=ns.max_new_tokens, seed=ns.seed)
    out = {"model": ns.model, "task": ns.task, "levels": list(levels), "per_level": ns.per_level, "k": ns.k,
           "results": res}
    if ns.json_out:
        with open(ns.json_out, "w") as f:
            json.dump(out, f, indent=2)
    _print_table(f"{ns.task} held-out, {ns.per_level}/level", TABLE_HEADER, results_table(res))
    if ns.k > 1:
        for m, r in res.items():
            o = r["overall"]
            print(f"{m}: pass@{ns.k} {o[f'pass@{ns.k}']:.1%}  maj@{ns.k} {o[f'maj@{ns.k}']:.1%}  "
                  f"sampled pass@1 {o['sampled_pass@1']:.1%}")
    if not ns.json_out:
        print(json.dumps(out, indent=2))
    return 0


def cmd_serve(ns) -> int:
    from .serve.app import serve_main

    def db(value: str | None):
        return "default" if value is None else (None if value.lower() == "off" else value)

    return serve_main(ns.model, ns.host, ns.port, ns.api_key, ns.max_batch, traces=db(ns.traces), jobs=db(ns.jobs),
                      job_concurrency=ns.job_concurrency) or 0


def cmd_traces(ns) -> int:
    from .serve.traces import export_jsonl

    n = export_jsonl(ns.db, ns.out, verified_only=ns.verified_only)
    print(f"wrote {n} trace(s) to {ns.out}")
    return 0


def cmd_tasks(ns) -> int:
    from .tasks import get_task, list_tasks

    import inspect

    for name in list_tasks():
        t = get_task(name)
        doc = inspect.cleandoc(type(t).__dict__.get("__doc__") or inspect.getmodule(type(t)).__doc__ or "")
        print(f"{name:12s} levels {min(t.levels)}..{max(t.levels)}  {doc.splitlines()[0] if doc else ''}")
    return 0


def cmd_sample(ns) -> int:
    import random

    from .tasks import get_task

    task = get_task(ns.task, **parse_mapping(ns.task_args))
    level = ns.level if ns.level is not None else task.levels[0]
    p = task.sample(random.Random(ns.seed), level)
    print(f"user: {p.question}")
    ref = task.reference(p, ns.mode)
    print(f"assistant ({ns.mode}):\n{ref.completion() if ref else '(no reference)'}")
    return 0


def _print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for h in header:
        t.add_column(h, justify="right")
    for r in rows:
        t.add_row(*r)
    Console().print(t)


def build_parser() -> argparse.ArgumentParser:
    from .quickstart import QuickstartConfig

    parser = argparse.ArgumentParser(prog="slowthink", description="Train and serve slow-thinking models.")
    sub = parser.add_subparsers(dest="command", required=True)
    _config_parser(sub, "quickstart", QuickstartConfig,
                   "train a small reasoning model from scratch and compare System-1 with System-2")
    tr = sub.add_parser("train", help="train a model (" + ", ".join(trainers()) + ")")
    trs = tr.add_subparsers(dest="algo", required=True)
    helps = {"sft": "supervised fine-tuning on task-generated solutions",
             "grpo": "GRPO (and Dr. GRPO / DAPO options) on verifiable rewards, from a model folder (--init)",
             "rloo": "RLOO: REINFORCE with a leave-one-out baseline, from a model folder (--init)",
             "ppo": "PPO with a learned value model (critic) and GAE, from a model folder (--init)",
             "star": "STaR / expert iteration: fine-tune on the policy's own verified solutions (rationalisation optional)",
             "dpo": "offline DPO on pairs of the policy's own verified-correct vs incorrect samples"}
    for name, (cfg_cls, _) in trainers().items():
        _config_parser(trs, name, cfg_cls, helps[name])

    ev = sub.add_parser("eval", help="held-out pass@1 / pass@k / maj@k by level, System-1 and System-2")
    ev.add_argument("--model", required=True, help="model folder (e.g. RUN/model)")
    ev.add_argument("--task", default="arithmetic", help="task name or path/to/file.py:ClassName")
    ev.add_argument("--task-args", default="", help="task constructor arguments, e.g. op=mul")
    ev.add_argument("--levels", default="", help="comma-separated levels (default: all of the task's)")
    ev.add_argument("--per-level", type=int, default=100, help="held-out problems per level")
    ev.add_argument("--modes", default="system1,system2", help="modes to evaluate")
    ev.add_argument("--k", type=int, default=1, help="samples per problem for pass@k and maj@k")
    ev.add_argument("--temperature", type=float, default=1.0, help="sampling temperature for k > 1")
    ev.add_argument("--max-new-tokens", type=int, default=256, help="generation limit")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--json-out", default="", help="write results JSON here (default: print it)")

    sv = sub.add_parser("serve", help="OpenAI-compatible HTTP server (/v1/models, /v1/chat/completions, /v1/jobs, "
                                      "/v1/feedback), storing every completion in a trace database")
    sv.add_argument("--model", required=True, help="model folder (e.g. RUN/model)")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--api-key", default=os.environ.get("SLOWTHINK_API_KEY"),
                    help="require 'Authorization: Bearer KEY' (default: $SLOWTHINK_API_KEY; none if unset)")
    sv.add_argument("--max-batch", type=int, default=64, help="sequences decoded together")
    sv.add_argument("--traces", default=None, metavar="PATH",
                    help="SQLite trace database: every returned completion is stored there (default: traces.db "
                         "in the folder above --model, e.g. runs/x/traces.db for runs/x/model; 'off': none)")
    sv.add_argument("--jobs", default=None, metavar="PATH",
                    help="SQLite database of /v1/jobs (default: jobs.db beside the trace database; 'off': no "
                         "jobs API)")
    sv.add_argument("--job-concurrency", type=int, default=8, help="jobs run at the same time (default: 8)")

    tc = sub.add_parser("traces", help="work with the trace database of 'slowthink serve'")
    tcs = tc.add_subparsers(dest="traces_command", required=True)
    te = tcs.add_parser("export", help="write the stored traces as JSONL, one record per returned choice")
    te.add_argument("--db", required=True, help="trace database written by slowthink serve (e.g. runs/x/traces.db)")
    te.add_argument("--out", required=True, help="JSONL file to write")
    te.add_argument("--verified-only", action="store_true",
                    help="only traces verified correct (by feedback, else by the task named in the request's metadata)")

    sub.add_parser("tasks", help="list built-in tasks")
    sa = sub.add_parser("sample", help="print a generated problem and its reference solution")
    sa.add_argument("--task", default="arithmetic")
    sa.add_argument("--task-args", default="")
    sa.add_argument("--level", type=int, default=None)
    sa.add_argument("--mode", default="system2", choices=["system1", "system2"])
    sa.add_argument("--seed", type=int, default=0)
    return parser


COMMANDS = {"quickstart": cmd_quickstart, "train": cmd_train, "eval": cmd_eval, "serve": cmd_serve,
            "traces": cmd_traces, "tasks": cmd_tasks, "sample": cmd_sample}


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    try:
        return COMMANDS[ns.command](ns)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"slowthink {ns.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
