"""The ``slowthink`` command.

    slowthink quickstart [--out DIR] [--config recipes/quickstart.yaml] [--stages sft,eval,report]
    slowthink train sft --task arithmetic --levels 1,2,3 --out runs/sft [--config FILE.yaml]
    slowthink train grpo --init runs/quickstart/model --levels 3 --out runs/grpo
    slowthink train rloo|ppo|star|dpo|revise --init MODEL_DIR ...    (one trainer module each, slowthink/rl/)
    slowthink train prm|orm --init MODEL_DIR --levels 2 --out runs/prm   (learned critics, slowthink/critics/)
    slowthink eval --model DIR --task arithmetic --levels 1,2,3 [--k 8] [--json-out FILE]
    slowthink eval --model DIR --levels 1,2 --strategy majority --n 8 [--budget TOKENS] [--verifier oracle]
    slowthink solve --model DIR --task arithmetic --question "47*86" --strategy majority --n 8 [--budget TOKENS]
    slowthink train router --model DIR                      (saves DIR/router: reasoning_effort auto)
    slowthink eval|solve --model DIR --reasoning-effort none|low|medium|high|auto
    slowthink serve --model runs/quickstart/model [--port 8000] [--api-key KEY] [--traces DB] [--jobs DB]
    slowthink serve --backend openai --base-url http://HOST:PORT/v1 --model NAME [--remote-api-key KEY]
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
from .chat import Mode


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
        if "route" in summary:
            within = summary["route"]["bar"]["cheapest_router_within"]
            best = summary["route"]["best_fixed"]
            print(f"router (reasoning_effort=auto, {cfg.out}/model/router): best fixed setting {best['name']} "
                  f"{best['accuracy']:.1%} at {best['mean_tokens']:.0f} tokens/question; "
                  + (f"router {within['accuracy']:.1%} at {within['mean_tokens']:.0f} ({within['label']})" if within
                     else "no router setting within 1 point") + f"; plot {cfg.out}/route.png")
        if "search" in summary:
            sr = summary["search"]
            g, best = sr["greedy"], sr["best"]
            print(f"test-time compute (level {sr['level']}, {sr['problems']} held-out problems): System-2 greedy "
                  f"{g['accuracy']:.1%} at {g['mean_policy_tokens']:.0f} tokens/question; best {best['strategy']}@"
                  f"{best['n']} {best['accuracy']:.1%} at {best['mean_policy_tokens']:.0f} ({sr['gain_points']:+.1f} "
                  f"points); pass@{sr['ns'][-1]} ceiling {sr['ceiling']:.1%}; plot {cfg.out}/search.png")
        print(f"report: {cfg.out}/report.md   model: {cfg.out}/model")
    return 0


def trainers() -> dict:
    """Algorithm name -> (config class, train function); one trainer module per algorithm."""
    from .critics import train as critic
    from .rl import dpo, grpo, ppo, revise, rloo, star
    from .train import sft
    from .router import train as router

    return {"sft": (sft.SFTConfig, sft.train), "grpo": (grpo.GRPOConfig, grpo.train),
            "rloo": (rloo.RLOOConfig, rloo.train), "ppo": (ppo.PPOConfig, ppo.train),
            "star": (star.STaRConfig, star.train), "dpo": (dpo.DPOConfig, dpo.train),
            "revise": (revise.ReviseConfig, revise.train),
            "prm": (critic.PRMConfig, critic.train), "orm": (critic.ORMConfig, critic.train),
            "router": (router.RouterConfig, router.train)}


def cmd_train(ns) -> int:
    from .train.loop import TrainingHalted

    cfg_cls, train = trainers()[ns.algo]
    try:
        run = train(_load(cfg_cls, ns))
    except TrainingHalted as e:
        print(f"slowthink train {ns.algo}: stopped: {e}", file=sys.stderr)
        return 3
    from pathlib import Path

    print(f"done: {Path(run) / 'model' if (Path(run) / 'model').is_dir() else run}")
    return 0


def cmd_eval(ns) -> int:
    from .engine import Engine
    from .evaluate import evaluate
    from .models import load_model
    from .report import TABLE_HEADER, results_table
    from .tasks import get_task

    task = get_task(ns.task, **parse_mapping(ns.task_args))
    levels = tuple(int(x) for x in ns.levels.split(",")) if ns.levels else tuple(task.levels)
    model, tok = load_model(ns.model, device=ns.device)
    problems = task.heldout_set(ns.per_level, levels, seed=ns.seed + 1000)
    if ns.reasoning_effort:
        return _eval_effort(ns, task, levels, problems)
    if ns.strategy:
        return _eval_strategy(ns, task, levels, model, tok, problems)
    modes = tuple(m.strip() for m in (ns.modes or "system1,system2").split(","))
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


def _strategy(ns, task, mode: str):
    """The solve function (options bound) and verifier for --strategy/--n/--strategy-args/--verifier."""
    from .search import NEEDS_VERIFIER, SYSTEM2_ONLY, get_strategy, make_verifier, strategy_options

    name = ns.strategy
    options = parse_mapping(ns.strategy_args)
    if ns.n is not None:
        if "n" not in strategy_options(name):
            raise ValueError(f"strategy {name!r} takes no --n (its options: {strategy_options(name) or 'none'})")
        options["n"] = ns.n
    solve = get_strategy(name, **options)
    verifier = make_verifier(ns.verifier, task, mode, device=ns.device)
    if name in NEEDS_VERIFIER and verifier is None:
        raise ValueError(f"strategy {name!r} needs a verifier: --verifier oracle (ground-truth step labels) or "
                         "outcome-oracle (ground-truth answer check), or RUN/critic (slowthink train prm|orm)")
    if name in SYSTEM2_ONLY and mode != Mode.SYSTEM2:
        raise ValueError(f"strategy {name!r} needs mode system2")
    return solve, verifier


def _eval_strategy(ns, task, levels, model, tok, problems) -> int:
    from .engine import Engine
    from .search import SYSTEM2_ONLY, Policy
    from .evaluate import evaluate_strategy

    modes = tuple(m.strip() for m in (ns.modes or (Mode.SYSTEM2 if ns.strategy in SYSTEM2_ONLY else
                                                     "system1,system2")).split(","))
    engine, res = Engine(model, tok), {}
    for mode in modes:
        solve, verifier = _strategy(ns, task, mode)
        policy = Policy(engine, task, mode, temperature=ns.temperature, max_tokens=ns.max_new_tokens, seed=ns.seed)
        res[mode] = evaluate_strategy(solve, policy, verifier, problems, ns.budget)
    out = {"model": ns.model, "task": ns.task, "levels": list(levels), "per_level": ns.per_level,
           "strategy": ns.strategy, "n": ns.n, "budget": ns.budget, "verifier": ns.verifier,
           "strategy_args": parse_mapping(ns.strategy_args), "results": res}
    if ns.json_out:
        with open(ns.json_out, "w") as f:
            json.dump(out, f, indent=2)
    rows = [[m, lv, str(b["n"]), f"{b['accuracy']:.1%}", f"{b['well_formed']:.1%}", f"{b['mean_policy_tokens']:.1f}"]
            for m, r in res.items() for lv, b in [*r["by_level"].items(), ("all", r["overall"])]]
    _print_table(f"{ns.task} held-out, {ns.per_level}/level, strategy {ns.strategy}"
                 + (f", budget {ns.budget}" if ns.budget else ""),
                 ["mode", "level", "n", "accuracy", "well-formed", "policy tokens/problem"], rows)
    if not ns.json_out:
        print(json.dumps(out, indent=2))
    return 0


def _effort_setup(ns, task):
    """Engines and router for --reasoning-effort: the router saved beside --model (or --router); a
    two-model router brings its own fast and slow models, a router with checker arms its checker."""
    from .router import Router, find_router
    from .router.train import load_engines

    router = Router.load(ns.router) if ns.router else find_router(ns.model)
    models = router.models if router is not None else {}
    checker = models.get("check", "")
    if "fast" in models:
        engines, _ = load_engines(models["slow"], models["fast"], device=ns.device, checker=checker, task=task)
    else:
        engines, _ = load_engines(ns.model, device=ns.device, checker=checker, task=task)
    if ns.reasoning_effort == "auto" and router is None:
        print(f"note: no router in {ns.model}/router: auto runs medium (train one: slowthink train router "
              f"--model {ns.model})", file=sys.stderr)
    return engines, router


def _eval_effort(ns, task, levels, problems) -> int:
    from collections import Counter

    from tqdm.auto import tqdm

    from .effort import solve_with_effort

    engines, router = _effort_setup(ns, task)
    rows = []
    for p in tqdm(problems, desc=f"effort {ns.reasoning_effort}", unit="problem"):
        sol = solve_with_effort(p, ns.reasoning_effort, engines, task, router, seed=ns.seed)
        mode = sol.extra.get("mode", Mode.SYSTEM1 if ns.reasoning_effort == "none" else Mode.SYSTEM2)
        rows.append((p.level, task.score(p, sol.completion, mode).correct, sol.policy_tokens,
                     sol.extra.get("route", {}).get("arm", ns.reasoning_effort)))
    by_level: dict = {}
    for lv in sorted({r[0] for r in rows}) + ["all"]:
        rs = [r for r in rows if lv == "all" or r[0] == lv]
        by_level[str(lv)] = {"n": len(rs), "accuracy": sum(r[1] for r in rs) / len(rs),
                             "mean_policy_tokens": sum(r[2] for r in rs) / len(rs),
                             "chosen": dict(Counter(r[3] for r in rs))}
    out = {"model": ns.model, "task": ns.task, "levels": list(levels), "per_level": ns.per_level,
           "reasoning_effort": ns.reasoning_effort, "router": bool(router), "results": by_level}
    if ns.json_out:
        with open(ns.json_out, "w") as f:
            json.dump(out, f, indent=2)
    _print_table(f"{ns.task} held-out, {ns.per_level}/level, reasoning_effort {ns.reasoning_effort}",
                 ["level", "n", "accuracy", "policy tokens/problem", "chosen"],
                 [[lv, str(b["n"]), f"{b['accuracy']:.1%}", f"{b['mean_policy_tokens']:.1f}",
                   ", ".join(f"{k} {v}" for k, v in sorted(b["chosen"].items()))] for lv, b in by_level.items()])
    return 0


def _solve_effort(ns, task, problem) -> int:
    from .effort import solve_with_effort

    engines, router = _effort_setup(ns, task)
    sol = solve_with_effort(problem, ns.reasoning_effort, engines, task, router, seed=ns.seed)
    mode = sol.extra.get("mode", Mode.SYSTEM1 if ns.reasoning_effort == "none" else Mode.SYSTEM2)
    correct = task.score(problem, sol.completion, mode).correct
    print(f"question: {problem.question}")
    route = sol.extra.get("route")
    print(f"reasoning_effort: {ns.reasoning_effort}" + (f" -> {route['arm']}" if route else ""))
    if route:
        print(f"why: {route['why']}")
    if sol.reasoning is not None:
        print("reasoning:")
        print(sol.reasoning)
    print(f"answer: {sol.answer if sol.answer is not None else '(none: malformed)'}  "
          f"({'correct' if correct else 'wrong'}, expected {problem.answer})")
    print(f"policy tokens: {sol.policy_tokens} in {sol.extra.get('samples', 0)} sample(s)"
          + (f" (router signals: {route['signal_tokens']})" if route and "signal_tokens" in route else ""))
    if ns.json_out:
        import dataclasses

        with open(ns.json_out, "w") as f:
            json.dump({"question": problem.question, "expected": problem.answer, "correct": correct,
                       **dataclasses.asdict(sol)}, f, indent=2, default=str)
    return 0


def cmd_solve(ns) -> int:
    import random

    from .engine import Engine
    from .models import load_model
    from .search import Policy
    from .evaluate import problem_from_question
    from .tasks import get_task

    task = get_task(ns.task, **parse_mapping(ns.task_args))
    if ns.question:
        problem = problem_from_question(task, ns.question)
    else:
        level = task.check_level(ns.level) if ns.level is not None else task.levels[0]
        problem = task.sample_split(random.Random(ns.seed), level, "heldout")
    if ns.reasoning_effort:
        return _solve_effort(ns, task, problem)
    solve, verifier = _strategy(ns, task, ns.mode)
    model, tok = load_model(ns.model, device=ns.device)
    policy = Policy(Engine(model, tok), task, ns.mode, temperature=ns.temperature, max_tokens=ns.max_new_tokens,
                    seed=ns.seed)
    sol = solve(problem, policy, verifier, ns.budget)
    correct = task.score(problem, sol.completion, ns.mode).correct
    print(f"question: {problem.question}")
    print(f"strategy: {ns.strategy}" + (f" (verifier: {ns.verifier})" if verifier is not None else ""))
    if ns.mode == Mode.SYSTEM2:
        print("reasoning:")
        print(sol.reasoning if sol.reasoning is not None else "(malformed completion)\n" + sol.completion)
    print(f"answer: {sol.answer if sol.answer is not None else '(none: malformed)'}  ({'correct' if correct else 'wrong'}, "
          f"expected {problem.answer})")
    print(f"policy tokens: {sol.policy_tokens}" + (f" of budget {ns.budget}" if ns.budget else "")
          + f" in {sol.extra.get('samples', 0)} sample(s); verifier tokens: {sol.verifier_tokens}")
    votes = sol.extra.get("weights") or sol.extra.get("votes")
    if votes:  # what the vote looked like: the leading answers and their total weight (or count)
        top = sorted(votes.items(), key=lambda kv: -kv[1])[:5]
        print("vote: " + ", ".join(f"{a} {w:g}" for a, w in top) + (f" (+{len(votes) - 5} more)" if len(votes) > 5 else ""))
    if ns.json_out:
        import dataclasses

        with open(ns.json_out, "w") as f:
            json.dump({"question": problem.question, "expected": problem.answer, "correct": correct,
                       **dataclasses.asdict(sol)}, f, indent=2, default=str)
    return 0


def _search_arguments(p, strategy_default: str | None) -> None:
    from .search import STRATEGIES

    p.add_argument("--strategy", default=strategy_default, choices=list(STRATEGIES),
                   help="test-time strategy" + (" (default: plain greedy/pass@k evaluation)" if strategy_default is None
                                                else ""))
    p.add_argument("--n", type=int, default=None, help="samples (candidates per step for beam); default: the "
                                                       "strategy's own (8)")
    p.add_argument("--budget", type=int, default=None, help="most policy tokens per problem (default: no limit)")
    p.add_argument("--verifier", default="none",
                   help="none; oracle: ground-truth step labels; outcome-oracle: ground-truth answer check (both not "
                        "learned); the folder of a learned critic (RUN/critic from slowthink train prm|orm); or "
                        "gen:MODEL_DIR: a generative verifier (each step scored by that model's likelihood of it)")
    p.add_argument("--strategy-args", default="", help="other strategy options, e.g. beam_width=2,agg=min or "
                                                       "max_thinking=64,min_thinking=0,max_waits=1")
    from .effort import EFFORTS

    p.add_argument("--reasoning-effort", default=None, choices=list(EFFORTS),
                   help="instead of --strategy: a named effort (slowthink/effort.py); auto: the router saved "
                        "beside the model picks per question and says why")
    p.add_argument("--router", default="", help="router folder for auto (default: MODEL/router)")
    p.add_argument("--device", default="cpu", help="torch device of the model and learned verifiers (cpu, cuda, "
                                                   "cuda:1, ...)")


def cmd_serve(ns) -> int:
    from .serve.app import serve_main

    def db(value: str | None):
        return "default" if value is None else (None if value.lower() == "off" else value)

    if ns.backend == "openai" and not ns.base_url:
        raise ValueError("--backend openai needs --base-url (e.g. http://127.0.0.1:8000/v1)")
    if ns.backend == "local" and ns.base_url:
        raise ValueError("--base-url is for --backend openai (the local backend serves --model from disk)")
    return serve_main(ns.model, ns.host, ns.port, ns.api_key, ns.max_batch, model_name=ns.served_model_name,
                      traces=db(ns.traces), jobs=db(ns.jobs), job_concurrency=ns.job_concurrency,
                      backend=ns.backend, base_url=ns.base_url, remote_api_key=ns.remote_api_key,
                      remote_timeout=ns.remote_timeout, remote_logprobs=ns.remote_logprobs, device=ns.device) or 0


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
             "dpo": "offline DPO on pairs of the policy's own verified-correct vs incorrect samples",
             "revise": "reflect-and-revise: fine-tune on the policy's own drafts + 'Wait' + the correct solution "
                       "(for --strategy reflect and budget forcing's Wait)",
             "prm": "process reward model: sample the policy (--init), label each step by Monte-Carlo rollouts "
                    "(Math-Shepherd), train a step scorer on the policy's backbone; use with --verifier RUN/critic",
             "orm": "outcome reward model: sample the policy (--init), label by the task's answer check, train a "
                    "completion scorer on the policy's backbone; use with --verifier RUN/critic",
             "router": "System-1/System-2 router for reasoning_effort=auto: label arms on generated problems, "
                       "fit the difficulty predictor, save it beside the model"}
    for name, (cfg_cls, _) in trainers().items():
        _config_parser(trs, name, cfg_cls, helps[name])

    ev = sub.add_parser("eval", help="held-out pass@1 / pass@k / maj@k by level, System-1 and System-2")
    ev.add_argument("--model", required=True, help="model folder (e.g. RUN/model)")
    ev.add_argument("--task", default="arithmetic", help="task name or path/to/file.py:ClassName")
    ev.add_argument("--task-args", default="", help="task constructor arguments, e.g. op=mul")
    ev.add_argument("--levels", default="", help="comma-separated levels (default: all of the task's)")
    ev.add_argument("--per-level", type=int, default=100, help="held-out problems per level")
    ev.add_argument("--modes", default=None, help="modes to evaluate (default: system1,system2; a System-2-only "
                                                  "strategy: system2)")
    ev.add_argument("--k", type=int, default=1, help="samples per problem for pass@k and maj@k")
    ev.add_argument("--temperature", type=float, default=1.0, help="sampling temperature for k > 1")
    ev.add_argument("--max-new-tokens", type=int, default=256, help="generation limit")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--json-out", default="", help="write results JSON here (default: print it)")
    _search_arguments(ev, None)

    so = sub.add_parser("solve", help="solve one problem with a test-time strategy; print reasoning, answer, tokens")
    so.add_argument("--model", required=True, help="model folder (e.g. RUN/model)")
    so.add_argument("--task", default="arithmetic", help="task name or path/to/file.py:ClassName")
    so.add_argument("--task-args", default="", help="task constructor arguments, e.g. op=mul")
    so.add_argument("--question", default="", help="the problem, e.g. 47*86 (arithmetic); else a held-out problem "
                                                    "of --level is generated from --seed")
    so.add_argument("--level", type=int, default=None)
    so.add_argument("--mode", default=Mode.SYSTEM2, choices=[Mode.SYSTEM1, Mode.SYSTEM2])
    so.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (greedy: always 0)")
    so.add_argument("--max-new-tokens", type=int, default=256, help="longest single completion")
    so.add_argument("--seed", type=int, default=0)
    so.add_argument("--json-out", default="", help="also write the Solution as JSON here")
    _search_arguments(so, "greedy")

    sv = sub.add_parser("serve", help="OpenAI-compatible HTTP server (/v1/models, /v1/chat/completions, /v1/jobs, "
                                      "/v1/feedback), storing every completion in a trace database")
    sv.add_argument("--model", required=True,
                    help="model folder (e.g. RUN/model); with --backend openai, the remote model's name")
    sv.add_argument("--backend", choices=["local", "openai"], default="local",
                    help="'local': generate with --model in this process (default); 'openai': forward generation "
                         "to the OpenAI-compatible server at --base-url (vLLM, Ollama, a hosted API, slowthink)")
    sv.add_argument("--base-url", default=None, metavar="URL",
                    help="the remote server's API root, e.g. http://127.0.0.1:8000/v1 (--backend openai)")
    sv.add_argument("--remote-api-key", default=os.environ.get("SLOWTHINK_REMOTE_API_KEY"), metavar="KEY",
                    help="bearer key for the remote server (default: $SLOWTHINK_REMOTE_API_KEY; none if unset)")
    sv.add_argument("--remote-timeout", type=float, default=600.0, metavar="S",
                    help="seconds to wait for the remote (connect: at most 10); too slow -> 504 (default: 600)")
    sv.add_argument("--remote-logprobs", action="store_true",
                    help="the remote returns token log-probs (vLLM, OpenAI): forward 'logprobs' requests; "
                         "without it they are refused with a 400")
    sv.add_argument("--served-model-name", default=None, metavar="NAME",
                    help="the model name clients ask for (default: the model folder's name, or --model with "
                         "--backend openai)")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--api-key", default=os.environ.get("SLOWTHINK_API_KEY"),
                    help="require 'Authorization: Bearer KEY' (default: $SLOWTHINK_API_KEY; none if unset)")
    sv.add_argument("--max-batch", type=int, default=64, help="sequences decoded together")
    sv.add_argument("--device", default="cpu", help="torch device of the local model (cpu, cuda, cuda:1, ...)")
    sv.add_argument("--traces", default=None, metavar="PATH",
                    help="SQLite trace database: every returned completion is stored there (default: traces.db "
                         "in the folder above --model, e.g. runs/x/traces.db for runs/x/model; ./traces.db with "
                         "--backend openai; 'off': none)")
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
    sa.add_argument("--mode", default=Mode.SYSTEM2, choices=[Mode.SYSTEM1, Mode.SYSTEM2])
    sa.add_argument("--seed", type=int, default=0)
    return parser


COMMANDS = {"quickstart": cmd_quickstart, "train": cmd_train, "eval": cmd_eval, "solve": cmd_solve, "serve": cmd_serve,
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
