"""STaR / expert iteration: sample, keep what the verifier accepts, fine-tune on it, repeat.

Zelikman, Wu, Mu, Goodman, "STaR: Bootstrapping Reasoning With Reasoning", 2022 (arXiv:2203.14465).
Each iteration: sample train problems → ``samples_per_problem`` completions each from the current model
→ keep verified ones → *rationalisation*: problems with no correct sample are tried again with the
final answer given away in the prompt (``hint``), and hinted traces that verify against the real
answer are stored with the original, unhinted prompt → fine-tune (System-2 rendered, loss on the
assistant's tokens only) → held-out greedy pass@1 → checkpoint.

Departures from the paper:
- Problems are generated, not a fixed dataset: each iteration draws ``problems_per_iteration`` fresh
  train problems (a pure function of ``(seed, iteration)``, held-out excluded). The paper re-solves
  its whole dataset every iteration; to keep what was solved before, we fine-tune on the traces of all
  iterations so far (``accumulate``; false = this iteration's traces only, as Algorithm 1 writes it).
- Sampling: k completions at ``temperature`` per problem (rejection-sampling fine-tuning / expert
  iteration style) instead of one rationale per problem; up to ``max_per_problem`` distinct correct
  traces are kept per problem (1, as the paper). A completion cut at ``max_new_tokens`` is never kept.
- No few-shot prompt: ``init`` must already write the task's format (an SFT model).
- Fine-tuning restarts from ``init`` every iteration (``restart_from_init``, the paper), with a fresh
  AdamW and linear warm-up then constant lr; its length is ``epochs`` over the training set (the paper
  grows a step budget by 20% per iteration) or a fixed ``steps_per_iteration``.
- ``curriculum_every`` (off by default): the first iterations draw only the easiest level and the next
  level joins every N iterations, a curriculum over difficulty that the paper does not use.
- The verifier checks only the final answer, as in the paper: a rationalised trace may reach the right
  answer by copying the hint through wrong reasoning, and is kept. ``verify_steps`` (off by default)
  also requires every worked step to be right by the task's own step checker (``step_labels``), so
  that only real derivations are learned; it needs a task that can label steps.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import FromModelConfig, HeldoutConfig, ModeConfig, ToolsConfig, arg, check_positive, require
from ..distributed.config import RayConfig
from ..env import tool_options, tool_stats
from ..engine import SamplingParams, derive_seed
from ..evaluate import heldout_metrics
from ..report import heldout_line
from ..chat import Mode
from ..tasks.base import Problem
from ..tokenizer import Rendered, render_example, render_prompt
from ..train.finetune import FineTuneConfig, fine_tune_rendered
from ..train.loop import TrainingHalted, TrainingRun, heldout_problems, load_init, resolve_task
from .rewards import RewardFn
from .rollout import Group, LocalRolloutWorker

DEFAULT_HINT = "{question}\n(answer: {answer})"


def _formats(template: str) -> bool:
    try:
        template.format(question="", answer="")
    except (KeyError, IndexError, ValueError):
        return False
    return True


def is_sqlite(path: str) -> bool:
    """Whether the file is an SQLite database (the trace store), by its 16-byte header."""
    with open(path, "rb") as f:
        return f.read(16) == b"SQLite format 3\x00"


@dataclass
class STaRConfig(RayConfig, ToolsConfig, HeldoutConfig, FineTuneConfig, ModeConfig, FromModelConfig):
    out: str = arg("runs/star", "run folder (config.json, metrics.jsonl, tb/, ckpt/, traces.jsonl, model/)")
    curriculum_every: int = arg(0, "start with the first of levels and add the next one every N iterations (0: all "
                                   "levels from the first iteration): what a model solves at one level becomes "
                                   "the steps it needs at the next")
    iterations: int = arg(3, "outer iterations (sample, filter, rationalise, fine-tune)")
    time_budget_s: float = arg(0.0, "stop after the iteration that crosses this many seconds of this invocation "
                               "(0: run all iterations)")
    problems_per_iteration: int = arg(256, "train problems drawn per iteration (duplicates dropped)")
    samples_per_problem: int = arg(4, "completions per problem, and per unsolved problem with the hint (k)")
    temperature: float = arg(1.0, "sampling temperature (0: greedy, then samples_per_problem must be 1)")
    rationalize: bool = arg(True, "retry unsolved problems with the answer as a hint (the paper's rationalisation)")
    hint: str = arg(DEFAULT_HINT, "how the hint rewrites the user message: a format string with {answer} and "
                    "{question} (a task may define hinted_prompt(problem, mode) instead)")
    from_traces: str = arg("", "JSONL of served traces (slowthink traces export --verified-only) added to every "
                                "inner fine-tune: served traffic becomes training data")
    verify_steps: bool = arg(False, "keep a trace only if every worked step is right by the task's step_labels, "
                             "not only its final answer (a rationalised trace cannot copy the hint through wrong "
                             "steps)")
    max_per_problem: int = arg(1, "distinct correct traces kept per problem and iteration (the paper: 1)")
    accumulate: bool = arg(True, "fine-tune on the traces of all iterations so far (false: this iteration's)")
    restart_from_init: bool = arg(True, "fine-tune from init every iteration (the paper) instead of continuing")

    def __post_init__(self):
        super().__post_init__()
        require(not self.from_traces or os.path.isfile(self.from_traces), "from_traces",
                f"{self.from_traces!r} is not a file; write one with: slowthink traces export --db DB --out FILE "
                "--verified-only")
        require(not self.from_traces or not is_sqlite(self.from_traces), "from_traces",
                f"{self.from_traces!r} is the trace database itself; export its traces as JSONL first: slowthink "
                f"traces export --db {self.from_traces} --out traces.jsonl --verified-only (then "
                "from_traces=traces.jsonl)")
        require(self.curriculum_every >= 0, "curriculum_every", "must be >= 0 (0: no curriculum)")
        check_positive(self, "iterations", "problems_per_iteration", "samples_per_problem", "max_per_problem")
        require(self.learners == 1, "learners", "STaR fine-tunes on the driver; only its sampling runs on Ray")
        require(self.temperature > 0 or self.samples_per_problem == 1, "temperature",
                "greedy decoding (0) gives k identical samples; use temperature > 0 or samples_per_problem=1")
        require(self.time_budget_s >= 0 and math.isfinite(self.time_budget_s), "time_budget_s", "must be >= 0")
        require("{answer}" in self.hint and _formats(self.hint), "hint",
                f"a format string with {{answer}} and optionally {{question}}, e.g. {DEFAULT_HINT!r}")


# ----------------------------------------------------------------------------- traces and rationalisation

@dataclass(frozen=True)
class Trace:
    """A verified completion. Only the problem is stored, never a prompt: rendering rebuilds the task's
    own (unhinted) prompt, so a rationalised trace cannot carry its hint into training."""

    problem: Problem
    completion: str
    source: str  # "direct" or "rationalized"
    iteration: int
    # an episode with tools: its completion token ids as sampled (tool responses included) and the loss mask (0 on
    # tool responses), so fine-tuning learns the calls and never the responses; None for a one-turn trace
    completion_ids: list[int] | None = None
    completion_mask: list[int] | None = None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: v for k, v in d.items() if v is not None or k not in ("completion_ids", "completion_mask")}

    @staticmethod
    def from_dict(d: dict) -> Trace:
        return Trace(Problem(**d["problem"]), d["completion"], d["source"], d["iteration"], d.get("completion_ids"),
                     d.get("completion_mask"))


def hinted_prompt(task, problem: Problem, mode, template: str = DEFAULT_HINT) -> list[dict]:
    """The task's prompt with the final answer given away in the last user message. A task that
    defines ``hinted_prompt(problem, mode)`` words the hint its own way."""
    own = getattr(task, "hinted_prompt", None)
    if callable(own):
        return own(problem, mode)
    messages = [dict(m) for m in task.prompt(problem, mode)]
    last = max(i for i, m in enumerate(messages) if m["role"] == "user")
    messages[last]["content"] = template.format(question=messages[last]["content"], answer=problem.answer)
    return messages


class Hinted:
    """The task seen through the hint: prompts give the answer away; scoring is the task's own, against
    the problem's real answer (the problem itself is never changed)."""

    def __init__(self, task, template: str = DEFAULT_HINT):
        self.task, self.template, self.name = task, template, task.name

    def prompt(self, problem: Problem, mode) -> list[dict]:
        return hinted_prompt(self.task, problem, mode, self.template)

    def score(self, problem: Problem, completion: str, mode=Mode.SYSTEM2):
        return self.task.score(problem, completion, mode)

    def step_labels(self, problem: Problem, reasoning: str):
        return self.task.step_labels(problem, reasoning)


def verified_traces(groups: list[Group], source: str, iteration: int, max_per_problem: int) -> list[Trace]:
    """Per group, up to ``max_per_problem`` distinct completions the verifier marks correct (every step too,
    when the reward verifies steps) and that ended by themselves (a truncated prefix that happens to parse is
    not a solution)."""
    out = []
    for g in groups:
        kept: dict[str, int] = {}  # text -> index of the completion
        for i, (c, r) in enumerate(zip(g.completions, g.rewards)):
            # r.steps_ok is False only when the run verifies steps and one is wrong
            if r.score.correct and r.steps_ok is not False and c.finish_reason == "stop" and c.text not in kept:
                kept[c.text] = i
        for text, i in list(kept.items())[:max_per_problem]:
            ep = g.episodes[i] if g.episodes and g.episodes[i].with_tools else None
            out.append(Trace(g.problem, text, source, iteration, *((ep.token_ids, ep.loss_mask) if ep else ())))
    return out


def render_trace(tok, task, trace: Trace, mode, messages=None) -> Rendered:
    """The training example: the task's unhinted prompt + the trace, loss on the assistant's tokens. A trace
    with tools keeps its sampled token ids (never re-tokenised) and their mask (tool responses out of the loss);
    ``messages(problem)`` gives its prompt (the environment's: the task's with the tool instructions)."""
    if trace.completion_ids is None:
        return render_example(tok, task.prompt(trace.problem, mode), mode, trace.completion)
    prompt = render_prompt(tok, (messages or (lambda p: task.prompt(p, mode)))(trace.problem), mode)
    return Rendered(ids=prompt + list(trace.completion_ids), mask=[0] * len(prompt) + list(trace.completion_mask),
                    prompt_len=len(prompt))


def curriculum_levels(levels: list[int], every: int, iteration: int) -> list[int]:
    """The levels of one iteration: all of them (``every`` 0), else the first ``1 + iteration // every``."""
    return list(levels) if every <= 0 else list(levels[:1 + iteration // every])


def iteration_problems(task, seed: int, iteration: int, count: int, levels: list[int]) -> list[Problem]:
    """Distinct train problems of one iteration: a pure function of ``(seed, iteration)``."""
    rng = random.Random(f"star-{seed}-{iteration}")
    problems = {}
    for _ in range(count):
        p = task.sample_split(rng, rng.choice(levels), "train")
        problems.setdefault(p.key, p)
    return list(problems.values())


def collect(worker, hint_worker, problems: list[Problem], cfg: STaRConfig, iteration: int) -> tuple[list[Trace], dict]:
    """Sample, keep verified traces, rationalise the unsolved problems. Returns traces and statistics."""
    sampling = SamplingParams(max_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                              seed=derive_seed("star", cfg.seed, iteration))
    groups = worker.rollout(problems, cfg.mode, cfg.samples_per_problem, sampling)
    direct = verified_traces(groups, "direct", iteration, cfg.max_per_problem)
    solved = {t.problem.key for t in direct}
    scores = [s for g in groups for s in g.scores]
    stats = {"problems": len(problems), "solved_direct": len(solved), "sampled_pass_rate":
             sum(s.correct for s in scores) / len(scores), "well_formed": sum(s.well_formed for s in scores) / len(scores),
             **tool_stats([e for g in groups for e in g.episodes])}
    rationalized, hinted_scores = [], []
    unsolved = [p for p in problems if p.key not in solved]
    if cfg.rationalize and unsolved:
        hinted = hint_worker.rollout(unsolved, cfg.mode, cfg.samples_per_problem,
                                     dataclasses.replace(sampling, seed=derive_seed("star-hint", cfg.seed, iteration)))
        rationalized = verified_traces(hinted, "rationalized", iteration, cfg.max_per_problem)
        hinted_scores = [s for g in hinted for s in g.scores]
    stats.update(solved_rationalized=len({t.problem.key for t in rationalized}), unsolved=len(unsolved),
                 hinted_pass_rate=sum(s.correct for s in hinted_scores) / max(1, len(hinted_scores)),
                 samples=len(scores) + len(hinted_scores))
    return direct + rationalized, stats


# ----------------------------------------------------------------------------- inner fine-tune

def fine_tune(model, tok, task, traces: list[Trace], cfg: STaRConfig, iteration: int, messages=None) -> dict:
    """Fine-tune on the traces: shuffled passes (seeded by ``(seed, iteration)``), token-mean loss over
    the assistant's tokens, fresh AdamW with warm-up. Returns the mean and last loss and the steps run.
    ``messages(problem)``: the prompt of a trace with tools (see ``render_trace``)."""
    rendered = [render_trace(tok, task, t, cfg.mode, messages) for t in traces]
    if cfg.from_traces:
        from ..serve.traces import traces_to_examples

        rendered += traces_to_examples(cfg.from_traces, tok, task, mode=cfg.mode)
    return fine_tune_rendered(model, tok, rendered, cfg, iteration)


# ----------------------------------------------------------------------------- outer loop

def pool_traces(traces: list[Trace], new: list[Trace], accumulate: bool) -> tuple[list[Trace], list[Trace]]:
    """The fine-tuning set after an iteration (all traces so far with ``accumulate``, else this iteration's)
    and the new traces in it."""
    if not accumulate:
        return new, new
    seen = {(t.problem.key, t.completion) for t in traces}
    new = [t for t in new if (t.problem.key, t.completion) not in seen]
    return traces + new, new


def train(cfg: STaRConfig, task=None, model=None, tok=None) -> Path:
    """Run STaR; returns the run folder. ``task``/``model``/``tok`` override the config's specs (tests);
    a given ``model`` is taken as the init model."""
    cfg, task = resolve_task(cfg, task)
    with TrainingRun(cfg, "star", counter="iteration") as run:
        model, tok = load_init(cfg, model, tok)
        # The weights every inner fine-tune restarts from, taken before a checkpoint overwrites them.
        init_state = {k: v.detach().clone() for k, v in model.state_dict().items()} if cfg.restart_from_init else None
        traces = [Trace.from_dict(d) for d in run.resume(model, tok).get("traces", [])]
        tools = tool_options(cfg)  # empty: one-turn episodes
        worker = LocalRolloutWorker(model, tok, task, RewardFn(verify_steps=cfg.verify_steps), **tools)
        hint_worker = LocalRolloutWorker(model, tok, Hinted(task, cfg.hint), RewardFn(verify_steps=cfg.verify_steps),
                                         **tools)
        hint_worker.engine = worker.engine  # same model: one engine, one copy of its fused weights
        gen, hint_gen = worker, hint_worker
        if cfg.ray:  # sampling on Ray actors (two pools: the task and its hinted form); fine-tuning stays here
            from ..distributed.setup import ray_pool

            gen, hint_gen = (ray_pool(run, cfg, model, tok, t, RewardFn(verify_steps=cfg.verify_steps), tools)
                             for t in (task, Hinted(task, cfg.hint)))
        heldout = heldout_problems(task, cfg)

        def evaluate(step: int) -> dict:
            if not heldout:
                return {}
            ev = heldout_metrics(worker.engine, task, tok, heldout, (cfg.mode,), cfg.max_new_tokens,
                                 episodes=worker.episodes if worker.tools is not None else None)
            run.log.log(step, **ev)
            return ev

        bar = run.progress(cfg.iterations, baseline=evaluate)  # the init model's score
        for iteration in range(run.start, cfg.iterations):
            t0 = time.time()
            # -- generate with the current model (M_{n-1}); rationalise what it could not solve
            for w in (gen, hint_gen):  # a Ray pool gets the weights; the local workers share the model
                w.load_weights(model.state_dict() if cfg.ray else None, version=iteration)
            levels = curriculum_levels(cfg.levels, cfg.curriculum_every, iteration)
            problems = iteration_problems(task, cfg.seed, iteration, cfg.problems_per_iteration, levels)
            new, stats = collect(gen, hint_gen, problems, cfg, iteration)
            stats["hardest_level"] = max(levels)
            t_gen = time.time() - t0

            # -- fine-tune M_n: from init (the paper) or from M_{n-1}, on this and (accumulate) earlier traces
            traces, new = pool_traces(traces, new, cfg.accumulate)
            if init_state is not None:
                model.load_state_dict(init_state)
            try:
                ft = fine_tune(model, tok, task, traces, cfg, iteration,
                               messages=lambda p: worker.make_env(cfg.mode).reset(p))
            except TrainingHalted as e:
                run.halt(str(e))
            done = iteration + 1
            run.log.log(done, **stats, traces_kept=len(new), train_set=len(traces), **ft, gen_s=t_gen,
                        iteration_s=time.time() - t0)
            ev = evaluate(done)
            bar.update(1)
            bar.write(f"iteration {done}: solved {stats['solved_direct']} + {stats['solved_rationalized']} "
                      f"rationalised of {stats['problems']}, kept {len(new)}" +
                      (f", {heldout_line(ev, cfg.mode)}" if ev else ""))
            run.checkpoint(done, traces=[t.to_dict() for t in traces])
            # For reading only (resume uses the copy inside the checkpoint, written atomically with the weights).
            (run.dir / "traces.jsonl").write_text("".join(json.dumps(t.to_dict(), default=str) + "\n" for t in traces))
            if run.budget_spent(cfg.time_budget_s):
                break
        return run.finish()
