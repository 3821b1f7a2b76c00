"""A tool learned by RL: 6x6-digit multiplication, which a small char-level model cannot do in its head, solved by
calling the ``calculator`` tool, a habit taught by GRPO from a model that saw at most 20 tool-use examples.

    python benchmarks/tool_rl.py --seed 1 --out benchmarks/results/tool_rl_bare_seed1.json --run runs/tool_rl_bare_s1
                                  # every stage from scratch with the defaults (the recipe that learns), ~60 min
                                  # on one core
    python benchmarks/tool_rl.py --base-from runs/tool_rl_plain/base --run runs/tool_rl_bare \
        --out benchmarks/results/tool_rl_bare.json    # the same from an earlier run's base (same base settings)

The defaults are the recipe that learns. Earlier recipes, which did not (``benchmarks/README.md``), take these
flags (``LEGACY`` are the older defaults of the flags they did not set):

    LEGACY="--no-markup-tokens --no-call-after-restate --tool-repeats 1 --rl-levels 3,4,5,6 --rl-eval-every 5 \
            --rl-eval-per-level 50"
    python benchmarks/tool_rl.py $LEGACY --base-cot cells --no-restate --call-format json --base-levels 1,2 \
        --base-steps 200 --plain-examples 20 --sft-batch 16 --sft-steps 60 --tool-tokens 160 --rl-lr 2e-5 \
        --rl-format-reward 0.1 --heldout 200 --rl-budget-s 420                       # -> tool_rl.json
    python benchmarks/tool_rl.py $LEGACY --run runs/tool_rl_copy --out benchmarks/results/tool_rl_copy.json \
        --no-restate --call-format json --plain-examples 20 --sft-batch 16 --sft-steps 60 --tool-tokens 160 \
        --rl-lr 2e-5 --rl-format-reward 0.1 --heldout 100 --rl-budget-s 300 --threads 2
    python benchmarks/tool_rl.py $LEGACY --run runs/tool_rl_plain --out benchmarks/results/tool_rl_plain.json \
        --call-format plain --plain-examples 200 --rl-lr 3e-5 --heldout 100 --threads 2

Stages (each reads what the earlier ones wrote in ``--run``, so a killed run picks up where it stopped):

    base      SFT from scratch (``small`` preset, Muon) on the arithmetic task's ordinary data at ``--base-levels``:
              worked solutions (``--base-cot``; chain with ``--restate`` opens by writing the question again) and
              direct answers, no tool anywhere
    tool_sft  a short fine-tune of that model on ``--tool-examples`` (<= 20) tool-use episodes spread over
              ``--tool-levels`` (call the calculator on the question, read its response, answer), repeated
              ``--tool-repeats`` times among ``--plain-examples`` fresh ordinary examples so the base's habits are
              kept; tool-response tokens out of the loss, as in RL
    eval_sft  held-out 6x6 problems: System-2 without tools (base model and tool_sft model; the budget a
              worked solution needs) and with the calculator (tool_sft model): greedy accuracy with its
              Wilson interval, tool calls, tool errors and model tokens per episode
    rl        ``slowthink train grpo --tools calculator --tools-prompt none`` from the tool_sft model on
              ``--rl-levels``, within ``--rl-budget-s``; no format bonus, so only a right answer earns reward
    eval_rl   the same evaluation of the RL model
    report    ``--out`` (JSON) and a PNG beside it

The tool is not described in the prompt (``tools_prompt=none``): the model knows the calculator only from the
examples, and whatever it writes inside ``<tool_call>`` is parsed and run by the environment
(``slowthink.env.ToolEnv``) with the ``slowthink.tools`` calculator; a malformed call comes back as an error text.
With one tool, the call may be the expression alone (``<tool_call>670235*215837</tool_call>``, ``--call-format
bare``); the tags are single tokens (``--markup-tokens``), as in Qwen3's vocabulary.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from slowthink.chat import Mode, TOOL_CALL_CLOSE, TOOL_CALL_OPEN, THINK_CLOSE, format_tool_response  # noqa: E402
from slowthink.train.runlog import machine_info, read_metrics, write_json  # noqa: E402

TASK = "arithmetic"
TASK_ARGS = {"op": "mul", "cot": "chain", "max_level": 6}
BASE = dict(levels=[1, 2], level_weights=[1, 3], model="small", steps=400, batch_size=32, lr=3e-3,
            optimizer="muon", warmup_steps=20, system2_fraction=0.75)
STAGES = ("base", "tool_sft", "eval_sft", "rl", "eval_rl", "report")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="runs/tool_rl", help="run folder (each stage's output)")
    p.add_argument("--out", default="benchmarks/results/tool_rl.json")
    p.add_argument("--stages", default=",".join(STAGES))
    p.add_argument("--base-cot", default="chain", choices=("cells", "compact", "chain"),
                   help="worked-solution format of the base SFT data (and of every no-tool evaluation); chain "
                        "restates the first operand in plain decimal on every line, so the base learns to copy it")
    p.add_argument("--restate", action=argparse.BooleanOptionalAction, default=True, help="worked solutions open "
                   "with the question written again (the task's restate=true), so the base copies the whole question "
                   "before any tool is seen")
    p.add_argument("--call-format", default="bare", choices=("json", "plain", "bare"), help="the tool-use "
                   'examples\' call: json ({"name": "calculator", "arguments": {"expression": ...}}), plain (the name, '
                   "then the expression on the next line) or bare (the expression alone: one tool, no name)")
    p.add_argument("--call-after-restate", action=argparse.BooleanOptionalAction, default=True, help="the tool-use "
                   "examples write the question first, then the call (which then copies the line above it)")
    p.add_argument("--number-group", type=int, default=1, help="the model's vocabulary reads digits in groups of up "
                   "to this many, one token each (3: a 12-digit number is 4 tokens; 1: one token per character)")
    p.add_argument("--markup-tokens", action=argparse.BooleanOptionalAction, default=True, help="the tool-call and "
                   "tool-response tags are single tokens (as in Qwen3's vocabulary) instead of 11-16 characters each: "
                   "in the base's vocabulary, or added (new embedding rows) at tool_sft when the base lacks them")
    p.add_argument("--base-levels", default="1,2,3,4,5,6", help="levels of the base SFT data (1,2: weights 1,3; any "
                   "other list: uniform)")
    p.add_argument("--base-from", default="", help="a base run folder made earlier by this script's base stage with "
                   "the same base settings: copied as this run's base instead of training it again (recorded)")
    p.add_argument("--base-steps", type=int, default=BASE["steps"], help="base SFT optimizer steps")
    p.add_argument("--level", type=int, default=6, help="digits per operand of the target problems")
    p.add_argument("--tool-examples", type=int, default=20, help="tool-use episodes the model sees (at most 20)")
    p.add_argument("--tool-levels", default="1,2,3,4,5,6", help="levels of the tool-use examples, taken in turn")
    p.add_argument("--rl-levels", default="2,3,4,5,6", help="GRPO levels (from 3 on, none done in the head)")
    p.add_argument("--plain-examples", type=int, default=2400, help="ordinary examples (the base's data and levels, "
                   "fresh) mixed into tool_sft so the base's habits, copying among them, are kept")
    p.add_argument("--tool-repeats", type=int, default=40, help="each tool-use example appears this many times in "
                   "the tool_sft pool (still at most 20 distinct examples; with many fresh ordinary examples, this "
                   "sets the tool examples' share of each batch)")
    p.add_argument("--sft-steps", type=int, default=100, help="tool_sft optimizer steps")
    p.add_argument("--sft-lr", type=float, default=1e-3, help="tool_sft learning rate")
    p.add_argument("--sft-optimizer", default="muon", help="tool_sft optimizer: muon (Muon on the hidden matrices, "
                   "AdamW on the embeddings: the tool markup's new characters need large embedding steps) "
                   "or adamw")
    p.add_argument("--sft-batch", type=int, default=32)
    p.add_argument("--rl-budget-s", type=float, default=900.0, help="GRPO wall-time budget")
    p.add_argument("--rl-lr", type=float, default=5e-5)
    p.add_argument("--rl-format-reward", type=float, default=0.0, help="GRPO's bonus for a well-formed answer, "
                   "right or wrong (0: a worked answer without the tool earns nothing over a failed call)")
    p.add_argument("--rl-prompts", type=int, default=8, help="GRPO problems per step")
    p.add_argument("--rl-group", type=int, default=8, help="GRPO episodes per problem")
    p.add_argument("--rl-eval-every", type=int, default=25)
    p.add_argument("--rl-eval-per-level", type=int, default=20)
    p.add_argument("--heldout", type=int, default=200, help="held-out 6x6 problems in eval_sft / eval_rl")
    p.add_argument("--tool-tokens", type=int, default=100, help="model tokens per tool episode (all turns)")
    p.add_argument("--plain-tokens", type=int, default=400, help="tokens of a System-2 answer without tools "
                   "(a 6x6 cells worked solution is about 330)")
    p.add_argument("--max-tool-calls", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if not 1 <= args.tool_examples <= 20:
        p.error(f"--tool-examples must be in 1..20 (the benchmark's rule), got {args.tool_examples}")
    bad = [s for s in args.stages.split(",") if s not in STAGES]
    if bad:
        p.error(f"--stages: unknown {bad}; choose from {list(STAGES)}")
    return args


def base_config(args) -> dict:
    """The base SFT settings: ``BASE`` unless ``--base-levels``/``--base-steps`` change them."""
    lvls = levels(args.base_levels)
    weights = BASE["level_weights"] if lvls == BASE["levels"] else []
    return {**BASE, "levels": lvls, "level_weights": weights, "steps": args.base_steps}


def task():
    from slowthink.tasks import get_task

    return get_task(TASK, **TASK_ARGS)


# ----------------------------------------------------------------------------- stages: models
def stage_base(args, run: Path) -> None:
    from slowthink.models import build_model
    from slowthink.tokenizer import build_char_tokenizer
    from slowthink.train.sft import SFTConfig, train

    if (run / "base" / "model" / "config.json").exists():
        return False
    if args.base_from:
        shutil.copytree(args.base_from, run / "base", dirs_exist_ok=True)
        return
    cfg = base_config(args)
    tok = build_char_tokenizer(number_group=args.number_group, tool_tokens=args.markup_tokens)
    train(SFTConfig(out=str(run / "base"), task=TASK, task_args=TASK_ARGS, **cfg, eval_every=0,
                    eval_per_level=50, threads=args.threads, seed=args.seed, progress=False),
          model=build_model(cfg["model"], tok, seed=args.seed), tok=tok)


def tool_episode_text(question: str, answer: str, call_format: str = "json",
                      restated: bool = False) -> tuple[str, str, str]:
    """The three parts of a tool-use System-2 completion, as the environment builds it: the model's call (its
    first turn, ending at the stop string), the tool's response (appended by the environment) and the model's
    answer turn. ``restated``: the question is written first (as the base's worked solutions open), so the call
    copies the line just above it."""
    call = {"json": json.dumps({"name": "calculator", "arguments": {"expression": question}}),
            "plain": f"calculator\n{question}\n", "bare": question}[call_format]
    lead = f"{question}\n" if restated else ""
    observation = "\n" + format_tool_response(answer) + "\n"
    return f"{lead}{TOOL_CALL_OPEN}{call}{TOOL_CALL_CLOSE}", observation, f"{THINK_CLOSE}\n\n{answer}"


def render_tool_example(tok, tk, problem, call_format: str = "json", restated: bool = False):
    """A tool-use episode as training ids: the model's turns in the loss, the tool response out of it."""
    from slowthink.tokenizer import Rendered, end_of_turn_id, render_prompt

    prompt = render_prompt(tok, tk.prompt(problem, Mode.SYSTEM2), Mode.SYSTEM2)
    call, observation, final = tool_episode_text(problem.question, problem.answer, call_format, restated)
    ids, mask = list(prompt), [0] * len(prompt)
    for text, in_loss in ((call, 1), (observation, 0), (final, 1)):
        piece = tok(text, add_special_tokens=False)["input_ids"]
        ids += piece
        mask += [in_loss] * len(piece)
    ids.append(end_of_turn_id(tok))
    mask.append(1)
    return Rendered(ids=ids, mask=mask, prompt_len=len(prompt))


def levels(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def tool_problems(tk, lvls: list[int], count: int, seed: int) -> list:
    """``count`` distinct training-split problems (never held out), the levels taken in turn."""
    rng, out = random.Random(f"tool-examples-{seed}"), {}
    while len(out) < count:
        p = tk.sample_split(rng, lvls[len(out) % len(lvls)], "train")
        out[p.key] = p
    return list(out.values())


def stage_tool_sft(args, run: Path) -> None:
    import torch

    from slowthink.models import load_model
    from slowthink.tokenizer import add_tool_tokens
    from slowthink.train.data import sample_examples
    from slowthink.train.finetune import StandaloneFineTuneConfig, fine_tune_rendered

    out = run / "tool_sft" / "model"
    if (out / "config.json").exists():
        return False
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    tk = task()
    model, tok = load_model(run / "base" / "model")
    added = add_tool_tokens(model, tok) if args.markup_tokens else 0
    problems = tool_problems(tk, levels(args.tool_levels), args.tool_examples, args.seed)
    tool = [render_tool_example(tok, tk, p, args.call_format, args.call_after_restate) for p in problems]
    base = base_config(args)
    plain = [e.rendered for e in sample_examples(tk, tok, args.seed + 1, 0, args.plain_examples, base["levels"],
                                                 base["system2_fraction"], base["level_weights"] or None)]
    cfg = StandaloneFineTuneConfig(steps_per_iteration=args.sft_steps, batch_size=args.sft_batch, lr=args.sft_lr,
                                   warmup_steps=min(5, args.sft_steps), seed=args.seed, optimizer=args.sft_optimizer)
    t0 = time.time()
    stats = fine_tune_rendered(model, tok, tool * args.tool_repeats + plain, cfg, 0, tag="tool_sft")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    shutil.copy(run / "base" / "model" / "task.json", out / "task.json")
    write_json(run / "tool_sft" / "tool_sft.json", {
        "tool_examples": len(tool), "plain_examples": len(plain), "markup_tokens_added": added,
        "tool_repeats": args.tool_repeats, "tool_levels": levels(args.tool_levels),
        "examples": [{"question": p.question,
                      "completion": "".join(tool_episode_text(p.question, p.answer, args.call_format,
                                                             args.call_after_restate))}
                     for p in problems],
        "steps": args.sft_steps, "batch_size": args.sft_batch, "lr": args.sft_lr, "optimizer": args.sft_optimizer,
        "seconds": round(time.time() - t0, 1),
        **stats})


def stage_rl(args, run: Path) -> None:
    from slowthink.rl.grpo import GRPOConfig, train

    if (run / "rl" / "model" / "config.json").exists():
        return False
    train(GRPOConfig(out=str(run / "rl"), init=str(run / "tool_sft" / "model"), task=TASK, task_args=TASK_ARGS,
                     levels=levels(args.rl_levels), mode="system2", tools="calculator", tools_prompt="none",
                     max_tool_calls=args.max_tool_calls, max_turns=args.max_tool_calls + 1,
                     max_new_tokens=args.tool_tokens, steps=100_000, time_budget_s=args.rl_budget_s, lr=args.rl_lr,
                     format_reward=args.rl_format_reward,
                     prompts_per_step=args.rl_prompts, group_size=args.rl_group, eval_every=args.rl_eval_every,
                     eval_per_level=args.rl_eval_per_level, checkpoint_every=10, threads=args.threads,
                     seed=args.seed, progress=False))


# ----------------------------------------------------------------------------- stages: evaluation
def wilson(correct: int, n: int) -> list[float]:
    from slowthink.evaluate import wilson_interval

    return [round(x, 4) for x in wilson_interval(correct, n)]


def eval_without_tools(model_dir: Path, problems, max_tokens: int, threads: int) -> dict:
    """System-2 greedy, no tools, one turn: the task's own worked-solution format, with how well the model copies
    in its own solutions (:func:`copy_stats`)."""
    from slowthink.engine import Engine, SamplingParams
    from slowthink.models import load_model
    from slowthink.tokenizer import render_prompt

    model, tok = load_model(model_dir)
    tk = task()
    prompts = [render_prompt(tok, tk.prompt(p, Mode.SYSTEM2), Mode.SYSTEM2) for p in problems]
    outs = [c[0] for c in Engine(model, tok).generate(prompts, 1, SamplingParams(max_tokens=max_tokens,
                                                                                   temperature=0.0))]
    correct = sum(tk.score(p, c.text, Mode.SYSTEM2).correct for p, c in zip(problems, outs))
    n = len(problems)
    return {"n": n, "accuracy": correct / n, "ci95": wilson(correct, n),
            "mean_tokens": round(sum(len(c.token_ids) for c in outs) / n, 1), "max_tokens": max_tokens,
            "tool_calls_per_episode": 0.0, **copy_stats(problems, [c.text for c in outs])}


def copy_stats(problems, texts: list[str]) -> dict:
    """The two copies a tool episode needs, read off worked solutions without tools: the question written again
    exactly as the first line, and (of the solutions that finish) the answer equal to the reasoning's last
    number."""
    import re

    restated = sum(t.startswith(p.question + "\n") for p, t in zip(problems, texts))
    finished = [t.split(THINK_CLOSE, 1) for t in texts if THINK_CLOSE in t]
    copied = sum(bool(nums := re.findall(r"[0-9]+", r)) and a.strip() == nums[-1] for r, a in finished)
    return {"restated_question_exactly": round(restated / len(texts), 4),
            "finished": round(len(finished) / len(texts), 4),
            "answer_is_last_number": round(copied / len(finished), 4) if finished else None}


def eval_with_tools(model_dir: Path, problems, args) -> dict:
    """Greedy episodes with the calculator (``ToolEnv`` through the rollout worker, as GRPO runs them)."""
    from slowthink.engine import SamplingParams
    from slowthink.env import Limits, tool_stats
    from slowthink.models import load_model
    from slowthink.rl.rewards import RewardFn
    from slowthink.rl.rollout import LocalRolloutWorker
    from slowthink.tools import ToolSet

    model, tok = load_model(model_dir)
    worker = LocalRolloutWorker(model, tok, task(), RewardFn(), tools=ToolSet(["calculator"]),
                                limits=Limits(args.max_tool_calls, args.max_tool_calls + 1, 0), tools_prompt="none")
    eps = [g[0] for g in worker.episodes(problems, Mode.SYSTEM2, 1,
                                          SamplingParams(max_tokens=args.tool_tokens, temperature=0.0))]
    correct = sum(bool(e.score and e.score.correct) for e in eps)
    right_call = sum(any(c.name == "calculator" and not c.error and c.response == e.problem.answer
                         for c in e.tool_calls) for e in eps)
    examples = [{"question": e.problem.question, "answer": e.problem.answer, "transcript": e.text,
                 "correct": bool(e.score and e.score.correct)} for e in eps[:3]]
    return {"n": len(eps), "accuracy": correct / len(eps), "ci95": wilson(correct, len(eps)),
            "mean_tokens": round(sum(e.model_tokens for e in eps) / len(eps), 1), "max_tokens": args.tool_tokens,
            "tool_calls_per_episode": round(sum(len(e.tool_calls) for e in eps) / len(eps), 3),
            "episodes_with_exact_call": right_call / len(eps),
            **{k: round(v, 4) for k, v in tool_stats(eps).items()}, "examples": examples}


def heldout(args) -> list:
    return task().heldout_set(args.heldout, (args.level,))


def stage_eval_sft(args, run: Path) -> None:
    import torch

    torch.set_num_threads(args.threads)
    problems, t0 = heldout(args), time.time()
    res = {"base_no_tools": eval_without_tools(run / "base" / "model", problems, args.plain_tokens, args.threads),
           "tool_sft_no_tools": eval_without_tools(run / "tool_sft" / "model", problems, args.plain_tokens,
                                                   args.threads),
           "tool_sft_calculator": eval_with_tools(run / "tool_sft" / "model", problems, args)}
    if (run / "tool_sft_l6only" / "model").exists():  # an earlier recipe: 20 examples all at the target level
        res["tool_sft_l6only_calculator"] = eval_with_tools(run / "tool_sft_l6only" / "model", problems, args)
    write_json(run / "eval_sft.json", {**res, "seconds": round(time.time() - t0, 1)})


def stage_eval_rl(args, run: Path) -> None:
    import torch

    torch.set_num_threads(args.threads)
    problems, t0 = heldout(args), time.time()
    res = {"rl_calculator": eval_with_tools(run / "rl" / "model", problems, args),
           "rl_no_tools": eval_without_tools(run / "rl" / "model", problems, args.plain_tokens, args.threads)}
    write_json(run / "eval_rl.json", {**res, "seconds": round(time.time() - t0, 1)})


# ----------------------------------------------------------------------------- report
def rl_curve(run: Path) -> list[dict]:
    rows = read_metrics(run / "rl")
    keep = ("step", "eval/system2_pass@1", "eval/system2_n", "reward_mean", "tool_calls_per_episode",
            "episodes_with_tool", "tool_error_rate", "response_length", "learner_s", "rollout_s", "time")
    return [{k: r[k] for k in r if k in keep or k.startswith("eval/system2_L")} for r in rows
            if "eval/system2_pass@1" in r or "reward_mean" in r]


def base_seconds(run: Path) -> float | None:
    """Wall time of the base SFT run, from its metrics log (first to last row)."""
    rows = [r for r in read_metrics(run / "base") if "time" in r]
    return round(rows[-1]["time"] - rows[0]["time"], 1) if len(rows) > 1 else None


def base_vocabulary(run: Path) -> dict:
    """What the base model's tokenizer holds: its size, and whether digits and the tool tags are single tokens."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(run / "base" / "model")
    ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    return {"size": len(tok), "tokens_for_123456": len(ids("123456")),
            "tool_tags_single_tokens": len(ids("<tool_call>")) == 1}


def stage_report(args, run: Path, meta: dict) -> dict:
    from slowthink.evaluate import within_noise

    sft, rl = json.loads((run / "eval_sft.json").read_text()), json.loads((run / "eval_rl.json").read_text())
    tool_sft = json.loads((run / "tool_sft" / "tool_sft.json").read_text())
    rl_cfg = json.loads((run / "rl" / "config.json").read_text())
    curve = rl_curve(run)
    evals = [r for r in curve if "eval/system2_pass@1" in r]
    after, base = rl["rl_calculator"], sft["base_no_tools"]
    gain_over_no_tools = 100 * (after["accuracy"] - max(base["accuracy"], rl["rl_no_tools"]["accuracy"]))
    out = {
        "benchmark": "a tool learned by RL: 6x6-digit multiplication with the calculator, GRPO from <= 20 examples",
        "task": TASK, "task_args": TASK_ARGS, "level": args.level,
        "base_sft": {**base_config(args), "cot": args.base_cot, "seconds": base_seconds(run),
                     "vocabulary": base_vocabulary(run),
                     "copied_from": args.base_from or None,
                     "what_it_saw": f"ordinary arithmetic data (worked {args.base_cot} solutions 75%, direct answers "
                                    f"25%) at levels {args.base_levels}; no tool"},
        "tool_sft": {k: v for k, v in tool_sft.items() if k != "examples"},
        "tool_examples": tool_sft["examples"],
        "rl": {"trainer": "grpo", "levels": levels(args.rl_levels), "tools": "calculator", "tools_prompt": "none",
               "budget_s": args.rl_budget_s,
               "lr": args.rl_lr, "format_reward": args.rl_format_reward, "prompts_per_step": args.rl_prompts,
               "group_size": args.rl_group,
               "max_new_tokens": args.tool_tokens, "max_tool_calls": args.max_tool_calls,
               "steps_done": curve[-1]["step"] if curve else 0,
               "seconds": round(curve[-1]["time"] - curve[0]["time"], 1) if len(curve) > 1 and "time" in curve[-1]
               else None, "config": rl_cfg},
        "heldout": {"set": "heldout-v1", "level": args.level, "n": args.heldout},
        "results": {k: v for part in (sft, rl) for k, v in part.items() if k != "seconds"},
        "rl_curve": curve,
        "bar": {"accuracy_at_least": 0.8, "points_over_no_tools_at_least": 60, "goal": 0.95,
                "after_rl": after["accuracy"], "points_over_no_tools": round(gain_over_no_tools, 1),
                "met": after["accuracy"] >= 0.8 and gain_over_no_tools >= 60,
                "rl_gain_points": round(100 * (after["accuracy"] - sft["tool_sft_calculator"]["accuracy"]), 1),
                "rl_gain_within_noise": within_noise(after["accuracy"], after["n"],
                                                     sft["tool_sft_calculator"]["accuracy"],
                                                     sft["tool_sft_calculator"]["n"])},
        **meta}
    write_json(Path(args.out), out)
    plot(out, evals, Path(args.out).with_suffix(".png"))
    return out


def plot(out: dict, evals: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = out["results"]
    rows = [("base, no tools", r["base_no_tools"]), ("20 examples, no tools", r["tool_sft_no_tools"]),
            ("20 examples, calculator", r["tool_sft_calculator"]), ("after GRPO, no tools", r["rl_no_tools"]),
            ("after GRPO, calculator", r["rl_calculator"])]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    acc = [100 * x["accuracy"] for _, x in rows]
    err = [[100 * (x["accuracy"] - x["ci95"][0]) for _, x in rows],
           [100 * (x["ci95"][1] - x["accuracy"]) for _, x in rows]]
    ax1.barh([n for n, _ in rows], acc, xerr=err, color=["#999", "#999", "#7aa6d6", "#999", "#1f5fa8"])
    for i, (_, x) in enumerate(rows):
        ax1.text(100 * x["ci95"][1] + 2, i,  # right of the error bar
                 f"{acc[i]:.1f}%  {x['tool_calls_per_episode']:.2f} calls, {x['mean_tokens']:.0f} tok", va="center",
                 fontsize=8)
    ax1.set_xlim(0, 150)
    ax1.set_xlabel(f"held-out {out['level']}x{out['level']} accuracy, % (n={rows[0][1]['n']}, 95% Wilson)")
    ax1.invert_yaxis()
    rl_levels = out["rl"]["levels"]
    if evals:
        n = evals[0]["eval/system2_n"]
        ax2.plot([e["step"] for e in evals], [100 * e["eval/system2_pass@1"] for e in evals], "o-",
                 label=f"levels {rl_levels[0]}-{rl_levels[-1]} (n={n})")
        top = f"eval/system2_L{out['level']}"
        if top in evals[0]:
            ax2.plot([e["step"] for e in evals], [100 * e[top] for e in evals], "s--",
                     label=f"{out['level']}x{out['level']} only (n={n // len(rl_levels)})")
        ax2.legend(loc="lower right", fontsize=8)
    tools = [e for e in out["rl_curve"] if "tool_calls_per_episode" in e]
    if tools:
        ax3 = ax2.twinx()
        ax3.plot([e["step"] for e in tools], [e["episodes_with_tool"] for e in tools], color="#c66", alpha=.6,
                 label="episodes with a tool call (sampled)")
        ax3.set_ylim(0, 1.05)
        ax3.set_ylabel("share of sampled episodes with a tool call")
    ax2.set_xlabel("GRPO step")
    ax2.set_ylabel("trainer's held-out accuracy with calculator, %")
    ax2.set_ylim(0, 105)
    ax2.set_title("GRPO through the calculator")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> None:
    args = parse_args(argv)
    TASK_ARGS["cot"] = args.base_cot  # every stage's task (data, rewards, no-tool evaluation) writes the base's format
    if args.restate:
        TASK_ARGS["restate"] = True
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    import torch

    meta = {"command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
            "machine": machine_info(args.threads), "nice": os.nice(0), "stage_seconds": {}}
    meta_file = run / "meta.json"
    if meta_file.exists():  # stages run across invocations: keep each one's time and load
        meta["stage_seconds"] = json.loads(meta_file.read_text()).get("stage_seconds", {})
    torch.set_num_threads(args.threads)
    for stage in args.stages.split(","):
        t0, load = time.time(), [round(x, 2) for x in os.getloadavg()]
        if stage == "report":
            meta["machine"]["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
            out = stage_report(args, run, meta)
            print(json.dumps({k: out[k] for k in ("bar",)}, indent=2))
            continue
        ran = {"base": stage_base, "tool_sft": stage_tool_sft, "eval_sft": stage_eval_sft, "rl": stage_rl,
               "eval_rl": stage_eval_rl}[stage](args, run)
        if ran is not False:  # a stage whose output was already there did nothing: keep the run that made it
            meta["stage_seconds"][stage] = {"seconds": round(time.time() - t0, 1), "load_avg_at_start": load,
                                            "load_avg_at_end": [round(x, 2) for x in os.getloadavg()]}
        write_json(meta_file, meta)
        print(f"[tool_rl] {stage}: {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
