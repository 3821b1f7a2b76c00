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
    slowthink eval|solve --model DIR --reasoning-effort none|minimal|low|medium|high|xhigh|auto
    slowthink serve --model runs/quickstart/model [--port 8000] [--api-key-file KEYS] [--traces DB] [--jobs DB]
    slowthink serve --backend openai --base-url http://HOST:PORT/v1 --model NAME [--remote-api-key KEY]
    slowthink traces export --db runs/quickstart/traces.db --out traces.jsonl [--verified-only]
    slowthink tasks
    slowthink sample --task countdown --level 4 [--mode system2]
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from .config import ConfigError, load_config, overrides_from_args, parse_mapping
from .chat import MODES, Mode
from .cli_parser import build_parser, trainers


def _load(cls, ns) -> object:
    cfg = load_config(cls, ns.config, overrides_from_args(ns, cls))
    if not getattr(cfg, "progress", True):  # Hugging Face's loading and saving bars too
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    return cfg


def cmd_quickstart(ns) -> int:
    from .quickstart import QuickstartConfig, run_quickstart
    from .quickstart_report import summary_lines
    from .report import TABLE_HEADER, results_table

    cfg = _load(QuickstartConfig, ns)
    summary = run_quickstart(cfg)
    if summary:
        _print_table(f"quickstart: {cfg.out}", TABLE_HEADER, results_table(summary["eval"]))
        print("\n".join(summary_lines(summary, cfg.out)))
    return 0


def cmd_train(ns) -> int:
    from .train.loop import TrainingHalted

    cfg_cls, train = trainers()[ns.algo]
    try:
        run = Path(train(_load(cfg_cls, ns)))
    except TrainingHalted as e:
        print(f"slowthink train {ns.algo}: stopped: {e}", file=sys.stderr)
        return 3
    print(f"done: {run / 'model' if (run / 'model').is_dir() else run}")
    return 0


def cmd_eval(ns) -> int:
    from .engine import Engine
    from .evaluate import evaluate
    from .models import load_model
    from .report import TABLE_HEADER, mode_gap_warning, passk_header, passk_rows, results_table

    record = _follow_model(ns)
    task = _task(ns)
    levels = _eval_levels(ns, task, record)
    problems = task.heldout_set(ns.per_level, levels)
    if not problems:
        raise ValueError(f"task {task.name!r} has no held-out problems at levels {list(levels)}: a data set needs "
                         "held-out rows (its split field, or rows the stable hash holds out)")
    if ns.reasoning_effort:
        return _eval_effort(ns, task, levels, problems)
    model, tok = load_model(ns.model, device=ns.device)
    if ns.strategy:
        return _eval_strategy(ns, task, levels, model, tok, problems)
    modes = _csv(ns.modes) if ns.modes else (record.modes if record else MODES)
    engine, episodes = Engine(model, tok), _tool_episodes(ns, model, tok, task)
    res = evaluate(engine, task, tok, problems, modes=modes, k=ns.k, temperature=ns.temperature,
                   max_tokens=ns.max_new_tokens, seed=ns.seed, episodes=episodes)
    _print_table(_heldout_title(ns, problems), TABLE_HEADER, results_table(res))
    if ns.k > 1:
        _print_table(f"all levels, {ns.k} samples per problem", passk_header(ns.k), passk_rows(res, ns.k))
    _print_notes(task, mode_gap_warning(res))
    _json_result(ns, {**_eval_setting(ns, task, levels, problems), "k": ns.k, "results": res}, echo=True)
    return 0


def _tool_episodes(ns, model, tok, task):
    """With --tools / --tools-file: a rollout worker's ``episodes`` (each problem a multi-turn episode); else None."""
    from types import SimpleNamespace

    from .env import tool_options

    opts = tool_options(SimpleNamespace(tools=ns.tools, tools_file=ns.tools_file, tool_args={},
                                           tools_prompt=ns.tools_prompt, max_tool_calls=ns.max_tool_calls,
                                           max_turns=ns.max_turns, max_episode_tokens=0))
    if not opts:
        return None
    from .rl.rewards import RewardFn
    from .rl.rollout import LocalRolloutWorker

    worker = LocalRolloutWorker(model, tok, task, RewardFn(), **opts)
    worker.load_weights(None, version=0)
    return worker.episodes


def _follow_model(ns):
    """--task and --task-args, where left out, are those --model was trained on (its task.json,
    ``slowthink.tasks.record``; task args given are laid over the recorded ones). Returns the record when it is
    about the task used (its levels and modes are then the defaults), else None."""
    from .tasks.record import follow_record, read_record

    record = read_record(ns.model) if Path(ns.model).is_dir() else None
    spec, args, record = follow_record(ns.task, parse_mapping(ns.task_args), record)
    if not ns.task and record is None:
        print(f"note: {ns.model} records no task (no task.json beside its weights): using {spec!r}; give --task",
              file=sys.stderr)
    ns.task, ns.task_args = spec, json.dumps(args)
    return record


def _eval_levels(ns, task, record) -> tuple[int, ...]:
    """--levels, checked against the task's; left out: the levels the model was trained on, else all the task's."""
    if not ns.levels:
        return tuple(record.levels if record and record.levels else task.levels)
    levels = tuple(int(x) for x in _csv(ns.levels))
    bad = [level for level in levels if level not in task.levels]
    if bad:
        raise ValueError(f"--levels: task {task.name!r} has levels {list(task.levels)}, not {bad}")
    return levels


def _level(ns, task) -> int:
    """--level, checked against the task's levels; left out: its first."""
    if ns.level is None:
        return task.levels[0]
    if ns.level not in task.levels:
        raise ValueError(f"--level {ns.level}: task {task.name!r} has levels {list(task.levels)}")
    return ns.level


def _heldout_title(ns, problems, extra: str = "") -> str:
    from .tasks.base import HELDOUT_SET

    return f"{ns.task} held-out set {HELDOUT_SET}: {len(problems)} problems (up to {ns.per_level}/level){extra}"


def _print_notes(task, *warnings) -> None:
    """Under an evaluation's table, on stderr: a comparison inside the noise, and verifier crashes."""
    for line in [w for w in warnings if w] + _crash_lines(task):
        print(line, file=sys.stderr)


def _crash_lines(task) -> list[str]:
    crashes = getattr(task, "crashes", {})
    return [f"verifier: {count} completion(s) counted malformed after {key} crashed" for key, count in crashes.items()]


def _eval_setting(ns, task, levels, problems) -> dict:
    """What every evaluation's JSON result opens with: the model, task and held-out problems (the named set, its
    size), and the verifier crashes, if any, each counted malformed."""
    from .tasks.base import HELDOUT_SET

    return {"model": ns.model, "task": ns.task, "levels": list(levels), "per_level": ns.per_level,
            "heldout_set": HELDOUT_SET, "problems": len(problems),
            "verifier_crashes": dict(getattr(task, "crashes", {}))}


def _solver(ns, task, mode: str):
    """The solve function and verifier of --strategy/--n/--strategy-args/--verifier in ``mode``."""
    from .search.solver import make_solver

    return make_solver(ns.strategy, task, mode, n=ns.n, options=parse_mapping(ns.strategy_args),
                       verifier=ns.verifier, device=ns.device)


def _eval_strategy(ns, task, levels, model, tok, problems) -> int:
    from .engine import Engine
    from .evaluate import evaluate_strategy_by_mode
    from .report import STRATEGY_HEADER, strategy_rows
    from .search.solver import strategy_modes

    modes = _csv(ns.modes) if ns.modes else strategy_modes(ns.strategy)
    solvers = {mode: _solver(ns, task, mode) for mode in modes}
    res = evaluate_strategy_by_mode(Engine(model, tok), task, problems, solvers, ns.budget,
                                    temperature=ns.temperature, max_tokens=ns.max_new_tokens, seed=ns.seed)
    budget = f", budget {ns.budget}" if ns.budget else ""
    _print_table(_heldout_title(ns, problems, f", strategy {ns.strategy}{budget}"), STRATEGY_HEADER,
                 strategy_rows(res))
    _print_notes(task)
    _json_result(ns, {**_eval_setting(ns, task, levels, problems), "strategy": ns.strategy, "n": ns.n,
                      "budget": ns.budget, "verifier": ns.verifier, "strategy_args": parse_mapping(ns.strategy_args),
                      "results": res}, echo=True)
    return 0


def _effort_setup(ns, task):
    from .effort.local import load_effort_engines

    engines, router = load_effort_engines(ns.model, ns.router, ns.device, task)
    if ns.reasoning_effort == "auto" and router is None:
        print(f"note: no router in {ns.model}/router: auto runs medium (train one: slowthink train router "
              f"--model {ns.model})", file=sys.stderr)
    return engines, router


def _eval_effort(ns, task, levels, problems) -> int:
    from .effort.local import evaluate_effort
    from .report import accuracy_cell

    engines, router = _effort_setup(ns, task)
    by_level = evaluate_effort(problems, ns.reasoning_effort, engines, task, router, seed=ns.seed)
    _json_result(ns, {**_eval_setting(ns, task, levels, problems), "reasoning_effort": ns.reasoning_effort,
                      "router": bool(router), "results": by_level})
    _print_table(_heldout_title(ns, problems, f", reasoning_effort {ns.reasoning_effort}"),
                 ["level", "n", "accuracy [95% CI]", "policy tokens/problem", "chosen"],
                 [[lv, str(b["n"]), accuracy_cell(b["accuracy"], b["n"]), f"{b['mean_policy_tokens']:.1f}",
                   ", ".join(f"{k} {v}" for k, v in sorted(b["chosen"].items()))] for lv, b in by_level.items()])
    _print_notes(task)
    return 0


def _solve_effort(ns, task, problem) -> int:
    from .effort import solve_with_effort

    engines, router = _effort_setup(ns, task)
    sol = solve_with_effort(problem, ns.reasoning_effort, engines, task, router, seed=ns.seed)
    correct = _verdict(task, problem, sol.completion, sol.extra["mode"])  # auto may have answered in System-1
    print(f"question: {problem.question}")
    route = sol.extra.get("route")
    ran = route["arm"] if route else ns.reasoning_effort
    print(f"reasoning_effort: {ns.reasoning_effort}" + (f" -> {ran}" if ran != ns.reasoning_effort else ""))
    if route:
        print(f"why: {route['why']}")
    if sol.reasoning is not None:
        print("reasoning:")
        print(sol.reasoning)
    print(_answer_line(problem, sol, correct))
    print(f"policy tokens: {sol.policy_tokens} in {sol.extra.get('samples', 0)} sample(s)"
          + (f" (router signals: {route['signal_tokens']})" if route and "signal_tokens" in route else ""))
    _json_result(ns, _solution_result(problem, sol, correct))
    return 0


def cmd_solve(ns) -> int:
    from .engine import Engine
    from .models import load_model
    from .search import Policy

    record = _follow_model(ns)
    ns.mode = ns.mode or (record.mode if record else Mode.SYSTEM2)
    task = _task(ns)
    problem = _problem(ns, task)
    if ns.reasoning_effort:
        return _solve_effort(ns, task, problem)
    solve, verifier = _solver(ns, task, ns.mode)
    model, tok = load_model(ns.model, device=ns.device)
    policy = Policy(Engine(model, tok), task, ns.mode, temperature=ns.temperature, max_tokens=ns.max_new_tokens,
                    seed=ns.seed)
    sol = solve(problem, policy, verifier, ns.budget)
    correct = _verdict(task, problem, sol.completion, ns.mode)
    _print_solution(ns, problem, sol, correct, verifier)
    _json_result(ns, _solution_result(problem, sol, correct))
    return 0


def _problem(ns, task):
    """The --question typed by the user, else a held-out problem of --level drawn from --seed."""
    import random

    from .tasks.base import problem_from_question

    if ns.question:
        return problem_from_question(task, ns.question)
    return task.sample_split(random.Random(ns.seed), _level(ns, task), "heldout")


def _verdict(task, problem, completion: str, mode: str) -> bool | None:
    """Whether the completion is correct; None for a typed question the task gives no answer for (not scored)."""
    return None if problem.answer is None else task.score(problem, completion, mode).correct


def _answer_line(problem, sol, correct: bool | None) -> str:
    verdict = ("not scored: the task gives no answer for this question" if correct is None
               else f"{'correct' if correct else 'wrong'}, expected {problem.answer}")
    return f"answer: {sol.answer if sol.answer is not None else '(none: malformed)'}  ({verdict})"


def _print_solution(ns, problem, sol, correct: bool | None, verifier) -> None:
    from .report import vote_summary

    print(f"question: {problem.question}")
    print(f"strategy: {ns.strategy}" + (f" (verifier: {ns.verifier})" if verifier is not None else ""))
    if ns.mode == Mode.SYSTEM2:
        print("reasoning:")
        print(sol.reasoning if sol.reasoning is not None else "(malformed completion)\n" + sol.completion)
    print(_answer_line(problem, sol, correct))
    print(f"policy tokens: {sol.policy_tokens}" + (f" of budget {ns.budget}" if ns.budget else "")
          + f" in {sol.extra.get('samples', 0)} sample(s); verifier tokens: {sol.verifier_tokens}")
    votes = sol.extra.get("weights") or sol.extra.get("votes")
    if votes:
        print(f"vote: {vote_summary(votes)}")


def _solution_result(problem, sol, correct: bool | None) -> dict:
    """A solve command's JSON result: the problem, whether the answer is right (None: not scored), and the whole
    Solution."""
    import dataclasses

    return {"question": problem.question, "expected": problem.answer, "correct": correct, **dataclasses.asdict(sol)}


def _json_result(ns, result: dict, echo: bool = False) -> None:
    """--json-out: the command's result as JSON in that file; without one, printed when ``echo``."""
    text = json.dumps(result, indent=2, default=str)
    if ns.json_out:
        with open(ns.json_out, "w") as f:
            f.write(text)
    elif echo:
        print(text)


def cmd_serve(ns) -> int:
    from .config import parse_mapping
    from .serve.app import serve_main
    from .serve.keys import keys_from
    from .tools.base import toolset_from_spec
    from .serve.limits import Limits

    def db(value: str | None):
        return "default" if value is None else (None if value.lower() == "off" else value)

    if ns.backend == "openai" and not ns.base_url:
        raise ValueError("--backend openai needs --base-url (e.g. http://127.0.0.1:8000/v1)")
    if ns.backend == "local" and ns.base_url:
        raise ValueError("--base-url is for --backend openai (the local backend serves --model from disk)")
    keys, warnings = keys_from(ns.api_key, ns.api_key_file)
    if ns.remote_api_key is not None:
        warnings.append("WARNING: --remote-api-key on the command line can be read by other users (ps); use "
                        "SLOWTHINK_REMOTE_API_KEY")
    for warning in warnings:
        print(warning, file=sys.stderr)
    hosts = [h.strip() for h in ns.allowed_hosts.split(",") if h.strip()] if ns.allowed_hosts else None
    return serve_main(ns.model, ns.host, ns.port, keys, ns.max_batch, ns.max_queue, model_name=ns.served_model_name,
                      traces=db(ns.traces), jobs=db(ns.jobs), job_concurrency=ns.job_concurrency,
                      backend=ns.backend, base_url=ns.base_url,
                      remote_api_key=os.environ.get("SLOWTHINK_REMOTE_API_KEY", ns.remote_api_key),
                      remote_timeout=ns.remote_timeout, remote_logprobs=ns.remote_logprobs, device=ns.device,
                      limits=load_config(Limits, None, overrides_from_args(ns, Limits)), allowed_hosts=hosts,
                      allow_unauthenticated=ns.allow_unauthenticated,
                      builtin_tools=toolset_from_spec(ns.builtin_tools, ns.tools_file,
                                                      **parse_mapping(ns.tool_args))) or 0


def cmd_traces(ns) -> int:
    from .serve.traces import export_jsonl

    n = export_jsonl(ns.db, ns.out, verified_only=ns.verified_only)
    print(f"wrote {n} trace(s) to {ns.out}")
    return 0


def cmd_tasks(ns) -> int:
    from .tasks import get_task, list_tasks

    import inspect

    from .tasks.registry import BUILTIN_TASKS, TaskError

    for name in list_tasks():
        try:
            t = get_task(name)
            levels = f"levels {min(t.levels)}..{max(t.levels)}"
        except TaskError:  # a task that needs --task-args (a data file, a data set name): its class alone
            t, levels = BUILTIN_TASKS[name], "needs --task-args"
        cls = t if isinstance(t, type) else type(t)
        doc = inspect.cleandoc(cls.__dict__.get("__doc__") or inspect.getmodule(cls).__doc__ or "")
        print(f"{name:12s} {levels}  {doc.splitlines()[0] if doc else ''}")
    return 0


def cmd_sample(ns) -> int:
    import random

    task = _task(ns)
    p = task.sample(random.Random(ns.seed), _level(ns, task))
    print(f"user: {p.question}")
    ref = task.reference(p, ns.mode)
    none = "(no reference: the task writes none; for a data set, map its worked-solution field with --task-args solution=FIELD)"
    print(f"assistant ({ns.mode}):\n{ref.completion() if ref else none}")
    return 0


def cmd_merge(ns) -> int:
    from .train.lora import merge_folder

    print(f"merged: {merge_folder(ns.adapter, ns.out, base=ns.base or None, device=ns.device)}")
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


def _task(ns):
    """The --task, behind the verifier guard (``tasks.guard``; --strict-verifier: a crash stops the command)."""
    from .tasks import get_task
    from .tasks.guard import guard

    return guard(get_task(ns.task, **parse_mapping(ns.task_args)), strict=getattr(ns, "strict_verifier", False))


def _csv(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(","))


COMMANDS = {"quickstart": cmd_quickstart, "train": cmd_train, "eval": cmd_eval, "solve": cmd_solve, "serve": cmd_serve,
            "traces": cmd_traces, "tasks": cmd_tasks, "sample": cmd_sample, "merge": cmd_merge}


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
