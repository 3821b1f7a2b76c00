"""Revise: teach the model to check its own draft and redo it after a "Wait" (trained self-correction).

Each iteration: sample the policy's own System-2 drafts on generated train problems → grade them
(``task.score``; ``task.step_labels`` where the task has them, logged as the first wrong step) → build
*revision traces*: the draft's thinking (right or wrong; its ``</think>`` and answer dropped), the cue
on its own line (``slowthink.search.reflect.with_cue``, "Wait"), the task's correct worked solution
(``task.solution_lines``), ``</think>`` and the right answer — "draft, Wait, redo it correctly" → mix in
plain reference examples (the SFT data of ``slowthink.train.data``) so the model keeps its normal behaviour →
fine-tune (the STaR inner fine-tune: fresh AdamW, warm-up, token-mean loss on the assistant's tokens)
→ held-out greedy pass@1 and the reflect metrics (draft, then cue, then revision) → checkpoint.
The test-time side is ``slowthink.search.reflect`` (``--strategy reflect``); budget forcing's "Wait"
uses the same cue, so a revise-trained model continues after it with a revision.

Related work and how we depart:
- Self-Refine (Madaan et al. 2023) prompts a large model for feedback and a refinement, untrained; a
  2M-parameter model cannot follow such prompts, so the behaviour is trained in here.
- s1 (Muennighoff et al. 2025) appends "Wait" at inference to extend thinking (budget forcing); its
  model saw long self-correcting traces in training. Ours never saw "Wait" (our budget forcing scored
  0%: the cue broke the output format); these traces are where the cue is learned.
- SCoRe (Kumar et al. 2024) trains self-correction with multi-turn RL on the model's own first attempts,
  because SFT on offline correction traces suffers distribution shift and collapses into making no
  edits. We do the cheap thing SCoRe's ablations start from: supervised traces, but on-policy drafts
  (the model's own current first attempts, resampled every iteration), with the revision being the
  task's reference solution rather than a sampled correction. The revision always re-derives the whole
  solution, even when the draft was right (``include_correct``), so "Wait" means "check by redoing",
  never "the draft is wrong"; whether the model learns more than "redo it" is measured in dev/LOG.md.
- Drafts cut at ``max_new_tokens`` are skipped (their thinking has no end to revise from); a draft that
  ended its turn without closing the think block is kept whole as the thinking.
- No verifier-guided choice of what to revise: step labels are logged, not used.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import ConfigError, FromModelConfig, HeldoutConfig, arg, check_positive, require
from ..train.data import reference_example
from ..engine import SamplingParams, derive_seed
from ..evaluate import heldout_metrics
from ..report import format_accuracy, heldout_line
from ..search.reflect import REVISE_CUE, thinking_of, with_cue
from ..tasks.base import Problem, Reference
from ..tokenizer import render_example
from ..train.finetune import FineTuneConfig, fine_tune_rendered
from ..train.loop import TrainingHalted, TrainingRun, heldout_problems, load_init, resolve_task
from .rewards import RewardFn
from .rollout import Group, LocalRolloutWorker
from .star import iteration_problems
from ..chat import Mode


@dataclass
class ReviseConfig(HeldoutConfig, FineTuneConfig, FromModelConfig):
    out: str = arg("runs/revise", "run folder (config.json, metrics.jsonl, tb/, ckpt/, traces.jsonl, model/)")
    task: str = arg("arithmetic", "task name or path/to/file.py:ClassName (needs solution_lines)")
    iterations: int = arg(1, "outer iterations (sample drafts from the current model, build traces, fine-tune)")
    problems_per_iteration: int = arg(256, "train problems drawn per iteration (duplicates dropped)")
    drafts_per_problem: int = arg(2, "System-2 drafts sampled per problem")
    max_per_problem: int = arg(2, "distinct drafts turned into revision traces per problem")
    temperature: float = arg(1.0, "draft sampling temperature (0: greedy, then drafts_per_problem must be 1)")
    max_new_tokens: int = arg(160, "generation limit per draft (and per phase in evaluation)")
    include_correct: bool = arg(True, "also revise drafts that were already right (false: wrong drafts only)")
    revise_fraction: float = arg(0.5, "share of revision traces in the fine-tuning set; the rest are plain "
                                      "reference examples (the SFT data) so normal behaviour is kept")
    system2_fraction: float = arg(0.5, "share of System-2 examples among the plain reference examples")
    cue: str = arg(REVISE_CUE, "the revision cue, on its own line after the draft (keep the default so budget "
                               "forcing's Wait and --strategy reflect match)")
    eval_per_level: int = arg(32, "held-out problems per level: greedy pass@1 and reflect metrics (0: none)")

    def __post_init__(self):
        super().__post_init__()
        check_positive(self, "iterations", "problems_per_iteration", "drafts_per_problem", "max_per_problem")
        require(self.temperature > 0 or self.drafts_per_problem == 1, "temperature",
                "greedy drafts (0) are identical; use temperature > 0 or drafts_per_problem=1")
        require(0.0 < self.revise_fraction <= 1.0, "revise_fraction",
                "must be in (0, 1]: the share of revision traces (1: no plain reference examples)")
        require(0.0 <= self.system2_fraction <= 1.0, "system2_fraction", "must be in [0, 1]")
        try:
            with_cue("", self.cue)
        except ValueError as e:
            raise ConfigError(f"cue: {e}") from None


# ----------------------------------------------------------------------------- revision traces

@dataclass(frozen=True)
class RevisionTrace:
    """One training example: the model's draft, then the cue and the correct solution."""

    problem: Problem
    draft: str  # the draft completion as sampled
    completion: str  # draft thinking + cue + worked solution + </think> + answer
    draft_correct: bool
    draft_well_formed: bool
    first_wrong_step: int | None  # index of the draft's first wrong step (None: all right, or no labels)
    iteration: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def revision_completion(task, problem: Problem, draft: str, cue: str = REVISE_CUE) -> str:
    """``draft thinking`` + cue line + the task's worked solution + ``</think>\\n\\n`` + the answer."""
    lines = getattr(task, "solution_lines", None)
    if lines is None:
        raise ConfigError(f"task {task.name!r} has no solution_lines(problem): revise needs a worked solution")
    return with_cue(thinking_of(draft), cue) + Reference(problem.answer, "\n".join(lines(problem))).completion()


def first_wrong_step(task, problem: Problem, draft: str) -> int | None:
    labels = task.step_labels(problem, thinking_of(draft)) if hasattr(task, "step_labels") else None
    return None if not labels or all(labels) else labels.index(False)


def revision_traces(task, groups: list[Group], cfg: ReviseConfig, iteration: int) -> tuple[list[RevisionTrace], dict]:
    """Per problem, up to ``max_per_problem`` distinct finished drafts turned into revision traces."""
    out, truncated, drafts = [], 0, 0
    for g in groups:
        kept: list[str] = []
        for c, s in zip(g.completions, g.scores):
            drafts += 1
            if c.finish_reason != "stop":
                truncated += 1
                continue
            if (s.correct and not cfg.include_correct) or c.text in kept or len(kept) >= cfg.max_per_problem:
                continue
            kept.append(c.text)
            out.append(RevisionTrace(g.problem, c.text, revision_completion(task, g.problem, c.text, cfg.cue),
                                     s.correct, s.well_formed, first_wrong_step(task, g.problem, c.text), iteration))
    scores = [s for g in groups for s in g.scores]
    stats = {"drafts": drafts, "drafts_truncated": truncated, "draft_pass_rate": sum(s.correct for s in scores) /
             max(1, len(scores)), "draft_well_formed": sum(s.well_formed for s in scores) / max(1, len(scores)),
             "revision_traces": len(out), "revised_wrong_drafts": sum(not t.draft_correct for t in out)}
    return out, stats


def plain_examples(task, tok, cfg: ReviseConfig, iteration: int, count: int) -> list:
    """``count`` reference examples (System-2 with probability ``system2_fraction``) on train problems."""
    rng = random.Random(f"revise-plain-{cfg.seed}-{iteration}")
    out = []
    for _ in range(count):
        mode = Mode.SYSTEM2 if rng.random() < cfg.system2_fraction else Mode.SYSTEM1
        out.append(reference_example(task, tok, task.sample_split(rng, rng.choice(cfg.levels), "train"), mode).rendered)
    return out


def draft_revisions(worker, model, task, cfg: ReviseConfig, iteration: int) -> tuple[list[RevisionTrace], dict]:
    """The current model's System-2 drafts of this iteration's train problems, turned into revision traces."""
    worker.load_weights(None, version=iteration)
    model.eval()
    problems = iteration_problems(task, cfg.seed + 7919, iteration, cfg.problems_per_iteration, cfg.levels)
    sampling = SamplingParams(max_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                              seed=derive_seed("revise", cfg.seed, iteration))
    groups = worker.rollout(problems, Mode.SYSTEM2, cfg.drafts_per_problem, sampling)
    return revision_traces(task, groups, cfg, iteration)


# ----------------------------------------------------------------------------- evaluation

def reflect_metrics(engine, task, problems: list[Problem], max_tokens: int, cue: str = REVISE_CUE) -> dict:
    """Greedy draft, then the cue, then a greedy revision, batched over ``problems`` (what ``--strategy
    reflect`` does per problem with rounds=1): draft and revised pass@1, and how often the revision is
    well formed (the cue did not break the output format)."""
    from ..search.base import Meter, Policy

    if not problems:
        return {}
    policy = Policy(engine, task, Mode.SYSTEM2, temperature=0.0, max_tokens=max_tokens)
    meter = Meter(None)
    prompts = [policy.prompt_ids(p) for p in problems]
    drafts = [c for [c] in policy.sample_many(prompts, 1, meter)]
    prefixes = [with_cue(thinking_of(c.text), cue) for c in drafts]
    revisions = [c for [c] in policy.sample_many([pr + policy.encode(x) for pr, x in zip(prompts, prefixes)], 1, meter)]
    d = [task.score(p, c.text, Mode.SYSTEM2) for p, c in zip(problems, drafts)]
    r = [task.score(p, x + c.text, Mode.SYSTEM2) for p, x, c in zip(problems, prefixes, revisions)]
    n = len(problems)
    return {"eval/draft_pass@1": sum(s.correct for s in d) / n, "eval/revised_pass@1": sum(s.correct for s in r) / n,
            "eval/revised_well_formed": sum(s.well_formed for s in r) / n,
            "eval/revise_tokens": meter.spent / n}


# ----------------------------------------------------------------------------- outer loop

def train(cfg: ReviseConfig, task=None, model=None, tok=None) -> Path:
    """Run revise training; returns the run folder. ``task``/``model``/``tok`` override the config's specs
    (tests); a given ``model`` is taken as the init model."""
    cfg, task = resolve_task(cfg, task)
    with TrainingRun(cfg, "revise", counter="iteration") as run:
        if not callable(getattr(task, "solution_lines", None)):
            raise ConfigError(f"task: {task.name!r} has no solution_lines(problem); revise needs worked solutions")
        model, tok = load_init(cfg, model, tok)
        run.resume(model, tok)
        worker = LocalRolloutWorker(model, tok, task, RewardFn())
        heldout = heldout_problems(task, cfg)

        def evaluate(step: int) -> dict:
            if not heldout:
                return {}
            model.eval()
            ev = {**heldout_metrics(worker.engine, task, tok, heldout, (Mode.SYSTEM2,), cfg.max_new_tokens),
                  **reflect_metrics(worker.engine, task, heldout, cfg.max_new_tokens, cfg.cue)}
            run.log.log(step, **ev)
            return ev

        bar = run.progress(cfg.iterations, baseline=evaluate)
        for iteration in range(run.start, cfg.iterations):
            t0 = time.time()
            # -- the current model's own drafts on fresh train problems, graded, turned into revision traces
            traces, stats = draft_revisions(worker, model, task, cfg, iteration)
            t_gen = time.time() - t0

            # -- mix with plain reference examples and fine-tune (continuing from the current weights)
            n_plain = round(len(traces) * (1 - cfg.revise_fraction) / cfg.revise_fraction)
            rendered = [render_example(tok, task.prompt(t.problem, Mode.SYSTEM2), Mode.SYSTEM2, t.completion)
                        for t in traces]
            rendered += plain_examples(task, tok, cfg, iteration, n_plain)
            try:
                ft = fine_tune_rendered(model, tok, rendered, cfg, iteration, tag="revise")
            except TrainingHalted as e:
                run.halt(str(e))
            done = iteration + 1
            run.log.log(done, **stats, plain_examples=n_plain, **ft, gen_s=t_gen, iteration_s=time.time() - t0)
            ev = evaluate(done)
            bar.update(1)
            bar.write(f"iteration {done}: {stats['revision_traces']} revision traces ({stats['revised_wrong_drafts']} "
                      f"of wrong drafts) + {n_plain} plain" + (f"; {heldout_line(ev, Mode.SYSTEM2)}, after the cue "
                      f"{format_accuracy(ev['eval/revised_pass@1'], ev['eval/system2_n'])} "
                      f"({ev['eval/revised_well_formed']:.0%} well formed)" if ev else ""))
            run.checkpoint(done)
            with open(run.dir / "traces.jsonl", "a" if iteration else "w") as f:  # for reading only
                f.writelines(json.dumps(t.to_dict(), default=str) + "\n" for t in traces)
        return run.finish()
