"""Memory: recalling a fact given long before the question, with more facts than the model's context window holds,
with the ``memory`` tool against without it.

    python benchmarks/memory_tool.py                       # train + evaluate, ~30 min on 2 busy cores
    python benchmarks/memory_tool.py --stages eval,report  # evaluate the trained model again

Task: ``recall`` (``slowthink/tasks/recall.py``): n facts ``ab=123``, then a query for a fact of the first half.
The model: the ``tiny`` preset built with a context window of ``--context`` positions (256: the model cannot
attend further, and the engine holds no more), trained from scratch on

- ``inline`` problems with n facts that fit in the window (worked solution: the fact found; no tool), and
- ``session`` episodes, each its own fresh context: a fact session (``ab=123``) in which the model writes the fact
  to the memory tool (``long_term`` scope, kept across episodes) and answers ``ok``; a query session (``?ab``) in
  which it reads the key back and answers the value. Tool responses are out of the loss.

Evaluation on held-out problems at each n of ``--facts`` (greedy):

- ``no memory, sliding window``: the whole problem in one context, the oldest facts dropped until prompt and
  answer fit in the window (what a chat with a context limit keeps); the queried fact is in the first half,
  so past ~30 facts it has fallen out;
- ``memory tool, sessions``: the n + 1 sessions as episodes run in order through ``slowthink.env.ToolEnv`` with a
  ``ToolSet(["memory"])`` per problem (its own long-term store); correct when the query session's answer is;
- ``no tool, sessions``: the same sessions with no tool available (a control: the query session cannot know the
  value).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from slowthink.chat import Mode, TOOL_CALL_CLOSE, TOOL_CALL_OPEN, THINK_CLOSE, format_tool_response  # noqa: E402
from slowthink.train.runlog import machine_info, write_json  # noqa: E402

STAGES = ("train", "eval", "report")
INLINE_MAX_FACTS = 24  # training problems in one context: every one fits in a 256-position window


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="runs/memory_tool")
    p.add_argument("--out", default="benchmarks/results/memory_tool.json")
    p.add_argument("--stages", default=",".join(STAGES))
    p.add_argument("--model", default="tiny", help="model preset")
    p.add_argument("--init", default="", help="continue training this model folder (a run's model) instead of "
                   "building a fresh one; the training data is then drawn with seed + 1")
    p.add_argument("--context", type=int, default=256, help="the model's context window (max positions)")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--facts", default="4,16,32,64", help="facts per problem (levels) evaluated")
    p.add_argument("--per-level", type=int, default=30, help="held-out problems per level")
    p.add_argument("--max-new-tokens", type=int, default=160)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.facts = [int(x) for x in args.facts.split(",")]
    bad = [s for s in args.stages.split(",") if s not in STAGES]
    if bad:
        p.error(f"--stages: unknown {bad}; choose from {list(STAGES)}")
    if not 64 <= args.context <= 4096:
        p.error(f"--context must be in 64..4096, got {args.context}")
    return args


def task():
    from slowthink.tasks import get_task

    return get_task("recall", max_facts=64)


# ----------------------------------------------------------------------------- training data
def memory_call(arguments: dict) -> str:
    return f"{TOOL_CALL_OPEN}{json.dumps({'name': 'memory', 'arguments': arguments})}{TOOL_CALL_CLOSE}"


def session_turns(session) -> tuple[str, str, str]:
    """A session episode's three parts as the environment builds them: the model's call, the memory tool's
    response (the text ``slowthink.tools.memory`` returns), the model's answer turn."""
    if "fact" in session.data:
        key, value = session.data["fact"]
        call = memory_call({"action": "write", "key": key, "text": value, "scope": "long_term"})
        response = f"saved note {key!r} (long_term)"
    else:
        call = memory_call({"action": "read", "key": session.data["query"], "scope": "long_term"})
        response = session.answer
    return call, "\n" + format_tool_response(response) + "\n", f"{THINK_CLOSE}\n\n{session.answer}"


def render_session(tok, tk, session):
    from slowthink.tokenizer import Rendered, end_of_turn_id, render_prompt

    prompt = render_prompt(tok, tk.prompt(session, Mode.SYSTEM2), Mode.SYSTEM2)
    ids, mask = list(prompt), [0] * len(prompt)
    for text, in_loss in zip(session_turns(session), (1, 0, 1)):
        piece = tok(text, add_special_tokens=False)["input_ids"]
        ids += piece
        mask += [in_loss] * len(piece)
    return Rendered(ids=ids + [end_of_turn_id(tok)], mask=mask + [1], prompt_len=len(prompt))


def training_examples(tok, tk, count: int, seed: int) -> list:
    """Half inline problems (2..INLINE_MAX_FACTS facts, worked solution), half session episodes (a quarter
    fact sessions, a quarter query sessions), all from the train split."""
    from slowthink.tokenizer import render_example

    rng, out = random.Random(f"memory-train-{seed}"), []
    while len(out) < count:
        p = tk.sample_split(rng, rng.randint(2, INLINE_MAX_FACTS), "train")
        kind = rng.random()
        if kind < 0.5:
            out.append(render_example(tok, tk.prompt(p, Mode.SYSTEM2), Mode.SYSTEM2,
                                      tk.reference(p, Mode.SYSTEM2).completion()))
        else:
            sessions = tk.sessions(p)
            out.append(render_session(tok, tk, sessions[-1] if kind < 0.75 else rng.choice(sessions[:-1])))
    return out


def stage_train(args, run: Path) -> None:
    import torch

    from slowthink.models import build_model
    from slowthink.tasks.record import TaskRecord, write_record
    from slowthink.tokenizer import build_char_tokenizer
    from slowthink.train.finetune import StandaloneFineTuneConfig, fine_tune_rendered

    out = run / "model"
    if (out / "config.json").exists():
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.init:
        from slowthink.models import load_model

        model, tok = load_model(args.init)
        if model.config.max_position_embeddings != args.context:
            raise ValueError(f"--init {args.init}: its context is {model.config.max_position_embeddings}, "
                             f"not --context {args.context}")
    else:
        tok = build_char_tokenizer()
        model = build_model(args.model, tok, seed=args.seed, max_positions=args.context)
    tk = task()
    data = training_examples(tok, tk, args.steps * args.batch_size, args.seed + (1 if args.init else 0))
    longest = max(len(r.ids) for r in data)
    if longest > args.context:
        raise ValueError(f"a training example has {longest} tokens, more than --context {args.context}")
    cfg = StandaloneFineTuneConfig(steps_per_iteration=args.steps, batch_size=args.batch_size, lr=args.lr,
                                   warmup_steps=20, micro_batches=2, seed=args.seed)
    t0 = time.time()
    stats = fine_tune_rendered(model, tok, data, cfg, 0, tag="memory")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    write_record(out, TaskRecord("recall", {"max_facts": 64}, tuple(range(2, INLINE_MAX_FACTS + 1)), ("system2",)))
    write_json(run / "train.json", {"init": args.init or None, "examples": len(data), "longest": longest,
                                    "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "model": args.model,
                                    "context": args.context, "seconds": round(time.time() - t0, 1), **stats})


# ----------------------------------------------------------------------------- evaluation
class ChainEnv:
    """A ``ToolEnv`` bound, at ``reset``, to the tool set of the problem's chain: each problem's sessions share
    one long-term memory store, and problems never see each other's notes."""

    stop = (TOOL_CALL_CLOSE,)
    runs_tools = True
    mode = Mode.SYSTEM2

    def __init__(self, tk, toolsets: dict, limits):
        self.tk, self.toolsets, self.limits, self.env = tk, toolsets, limits, None

    def reset(self, problem):
        from slowthink.env import ToolEnv

        self.env = ToolEnv(self.tk, self.toolsets[problem.data["chain"]], self.limits, Mode.SYSTEM2,
                           tools_prompt="none")
        return self.env.reset(problem)

    def step(self, turn: str, num_tokens: int = 0):
        return self.env.step(turn, num_tokens)

    def end(self, reason: str):
        return self.env.end(reason)


def wilson(correct: int, n: int) -> list[float]:
    from slowthink.evaluate import wilson_interval

    return [round(x, 4) for x in wilson_interval(correct, n)]


class Fact:
    """The value a fact session should store."""

    def __init__(self, value: str):
        self.answer_fact = value


def eval_sessions(engine, tok, tk, problems, tools: list[str], max_tokens: int) -> dict:
    """Every problem's sessions in order (session i of all problems in one batch), one tool set per problem."""
    from slowthink.engine import SamplingParams
    from slowthink.env import Limits, run_episodes
    from slowthink.tools import ToolSet

    toolsets = {p.key: ToolSet(tools) for p in problems}
    chains = [tk.sessions(p) for p in problems]
    limits = Limits(max_tool_calls=2, max_turns=3)
    greedy = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    episodes = [[] for _ in problems]
    for i in range(max(len(c) for c in chains)):
        batch = [(j, c[i]) for j, c in enumerate(chains) if i < len(c)]
        eps = run_episodes(engine, tok, lambda: ChainEnv(tk, toolsets, limits), [s for _, s in batch],
                           Mode.SYSTEM2, 1, greedy)
        for (j, _), e in zip(batch, eps):
            episodes[j].append(e[0])
    final = [c[-1] for c in episodes]
    correct = sum(bool(e.score and e.score.correct) for e in final)
    stored = [e for c in episodes for e in c[:-1]]
    stored_pairs = [(Fact(s.data["fact"][1]), e) for c, eps in zip(chains, episodes) for s, e in zip(c[:-1], eps[:-1])]
    query_pairs = [(c[-1], eps[-1]) for c, eps in zip(chains, episodes)]
    all_eps = [e for c in episodes for e in c]
    return {"n": len(problems), "accuracy": correct / len(problems), "ci95": wilson(correct, len(problems)),
            "fact_sessions_ok": round(sum(bool(e.score and e.score.correct) for e in stored) / max(1, len(stored)), 4),
            "fact_sessions_written": round(sum(any(c.name == "memory" and not c.error for c in e.tool_calls)
                                               for e in stored) / max(1, len(stored)), 4),
            "fact_sessions_value_right": round(sum(any(c.name == "memory" and not c.error
                                                       and c.arguments.get("text") == s.answer_fact for c in e.tool_calls)
                                                   for s, e in stored_pairs) / max(1, len(stored_pairs)), 4),
            "query_read_right_key": round(sum(any(c.name == "memory" and c.arguments.get("key") == s.data["query"]
                                                  for c in e.tool_calls) for s, e in query_pairs) / len(query_pairs), 4),
            "query_answer_is_response": round(sum(bool(e.tool_calls) and e.score is not None
                                                  and e.score.answer == e.tool_calls[-1].response
                                                  for e in final) / len(final), 4),
            "tool_calls_per_episode": round(sum(len(e.tool_calls) for e in all_eps) / len(all_eps), 3),
            "tool_errors_per_episode": round(sum(e.tool_errors for e in all_eps) / len(all_eps), 3),
            "mean_model_tokens_per_episode": round(sum(e.model_tokens for e in all_eps) / len(all_eps), 1),
            "longest_episode_tokens": max(len(e.prompt_ids) + len(e.token_ids) for e in all_eps),
            "query_example": final[0].text}


def eval_window(engine, tok, tk, problems, context: int, max_tokens: int) -> dict:
    """The whole problem in one context, the oldest facts dropped until the prompt plus ``max_tokens`` fit."""
    from slowthink.evaluate import evaluate
    from slowthink.tokenizer import render_prompt

    def fits(p) -> bool:
        return len(render_prompt(tok, tk.prompt(p, Mode.SYSTEM2), Mode.SYSTEM2)) + max_tokens <= context

    windowed = []
    for p in problems:
        keep = len(p.data["facts"])
        while keep > 0 and not fits(tk.window(p, keep)):
            keep -= 1
        windowed.append(tk.window(p, keep))
    r = evaluate(engine, tk, tok, windowed, modes=("system2",), max_tokens=max_tokens)["system2"]["overall"]
    in_window = sum(p.data["query"] >= len(p.data["facts"]) - p.data["window"] for p in windowed)
    return {"n": r["n"], "accuracy": r["pass@1"], "ci95": [round(x, 4) for x in r["pass@1_ci95"]],
            "mean_facts_in_window": round(sum(p.data["window"] for p in windowed) / len(windowed), 1),
            "queried_fact_in_window": round(in_window / len(windowed), 4), "tool_calls_per_episode": 0.0,
            "mean_model_tokens": round(r["mean_tokens"], 1)}


def stage_eval(args, run: Path) -> None:
    import torch

    from slowthink.engine import Engine
    from slowthink.models import load_model

    torch.set_num_threads(args.threads)
    model, tok = load_model(run / "model")
    engine, tk = Engine(model, tok), task()
    window_tokens = 24  # the inline answer: the fact found and the value
    res, t0 = {}, time.time()
    for n in args.facts:
        problems = tk.heldout_set(args.per_level, (n,))
        res[str(n)] = {"no_memory_sliding_window": eval_window(engine, tok, tk, problems, args.context, window_tokens),
                       "memory_tool_sessions": eval_sessions(engine, tok, tk, problems, ["memory"],
                                                             args.max_new_tokens),
                       "no_tool_sessions": eval_sessions(engine, tok, tk, problems, [], args.max_new_tokens)}
        print(f"[memory_tool] {n} facts: " + ", ".join(f"{k} {v['accuracy']:.2f}" for k, v in res[str(n)].items()),
              flush=True)
        write_json(run / "eval.json", {"by_facts": res, "seconds": round(time.time() - t0, 1)})  # each n as it ends


def stage_report(args, run: Path, meta: dict) -> dict:
    ev, tr = json.loads((run / "eval.json").read_text()), json.loads((run / "train.json").read_text())
    chain, parent = [tr], tr.get("init")
    while parent:  # a model trained in parts (--init): every part's record, first part first
        part = json.loads((Path(parent).parent / "train.json").read_text())
        chain.insert(0, part)
        parent = part.get("init")
    tr = {**tr, "parts": chain, "total_steps": sum(p["steps"] for p in chain)}
    out = {"benchmark": "recall of a fact given long before the question: memory tool vs context window",
           "task": "recall", "task_args": {"max_facts": 64}, "context_window": args.context,
           "training": {**tr, "data": f"from scratch: half inline problems with 2..{INLINE_MAX_FACTS} facts (worked "
                        "solution, no tool), a quarter query sessions and a quarter fact sessions with the memory "
                        "tool (long_term scope); tool responses out of the loss"},
           "heldout": {"set": "heldout-v1", "per_level": args.per_level, "facts": args.facts},
           "results": ev["by_facts"], "eval_seconds": ev["seconds"], **meta}
    write_json(Path(args.out), out)
    return out


def main(argv=None) -> None:
    args = parse_args(argv)
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    meta = {"command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
            "machine": machine_info(args.threads), "nice": os.nice(0), "stage_seconds": {}}
    meta_file = run / "meta.json"
    if meta_file.exists():
        meta["stage_seconds"] = json.loads(meta_file.read_text()).get("stage_seconds", {})
    for stage in args.stages.split(","):
        t0, load = time.time(), [round(x, 2) for x in os.getloadavg()]
        if stage == "report":
            meta["machine"]["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
            out = stage_report(args, run, meta)
            for n, r in out["results"].items():
                print(n, {k: round(v["accuracy"], 3) for k, v in r.items()})
            continue
        {"train": stage_train, "eval": stage_eval}[stage](args, run)
        meta["stage_seconds"][stage] = {"seconds": round(time.time() - t0, 1), "load_avg_at_start": load,
                                        "load_avg_at_end": [round(x, 2) for x in os.getloadavg()]}
        write_json(meta_file, meta)
        print(f"[memory_tool] {stage}: {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
