"""Offline DPO on verified pairs sampled from the policy itself.

Rafailov et al., "Direct Preference Optimization: Your Language Model is Secretly a Reward Model",
2023 (arXiv:2305.18290). Phase 1 (data): sample ``samples_per_problem`` completions per train problem
from ``init``; a pair is a verified-correct and an incorrect completion of the same prompt; pairs and
the reference log-probs are written to ``pairs.jsonl`` (a resumed run reuses them). Phase 2 (training):
the DPO sigmoid loss (``losses.dpo_loss``) on sequence log-probs, the sum of completion-token log-probs
(end-of-turn token included: stopping is part of the answer), against the frozen ``init``.

Departures from the paper:
- Preferences come from the task's verifier, not from people: chosen = correct and ended by itself,
  rejected = incorrect (wrong, malformed or cut at ``max_new_tokens``). Problems whose samples are all
  correct or all wrong give no pair. Up to ``pairs_per_problem`` distinct pairs per problem.
- No SFT-on-chosen stage first: ``init`` (already fine-tuned on the task) generated the pairs, so the
  data is on its distribution, which is what that stage is for in the paper.
- The reference is ``init``; its log-probs are computed once, before training, and stored with the
  pairs (the same numbers a frozen copy would give every step, for half the forward passes).
- Optional ``nll_coef``: the chosen completions' token-mean NLL added to the loss (RPO: Pang et al. 2024,
  arXiv:2404.19733). Verified pairs of one format differ in a few tokens, and plain DPO then lowers the
  chosen log-prob too (Pal et al. 2024, arXiv:2402.13228); the NLL term holds it up.
- AdamW with linear warm-up then constant lr (the paper: RMSprop, warm-up); fixed data order per epoch,
  a pure function of ``(seed, epoch)``, so a resumed run sees the batches an uninterrupted run would.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import (ConfigError, EvalConfig, FromModelConfig, ModeConfig, OptimConfig, arg, check_non_negative,
                      check_positive, require)
from ..engine import SamplingParams, derive_seed
from ..evaluate import heldout_metrics
from .batch import Row, collate_rows, learner_logprobs, rollout_stats, sample_problems
from ..train.loop import TrainingHalted, TrainingRun, due, heldout_problems, load_init, resolve_task
from ..train.optimizers import clip_grad, make_optimizer, set_lr, warmup_lr
from .losses import dpo_loss
from .rewards import RewardFn
from .rollout import Group, LocalRolloutWorker


@dataclass
class DPOConfig(EvalConfig, OptimConfig, ModeConfig, FromModelConfig):
    out: str = arg("runs/dpo", "run folder (config.json, pairs.jsonl, metrics.jsonl, tb/, ckpt/, model/)")
    init: str = arg("", "model folder to start from and to use as the reference (required), e.g. runs/sft/model")
    num_problems: int = arg(512, "train problems to sample pairs from (phase 1)")
    samples_per_problem: int = arg(8, "completions sampled per problem (k)")
    pairs_per_problem: int = arg(1, "distinct (correct, incorrect) pairs kept per problem, at most")
    beta: float = arg(0.1, "DPO beta: strength of the implicit KL to the reference")
    nll_coef: float = arg(0.0, "weight of the chosen completions' token-mean NLL added to the loss (RPO; 0: plain DPO)")
    warmup_steps: int = arg(10)
    epochs: float = arg(1.0, "passes over the pairs ...")
    steps: int = arg(0, "... or this many optimizer steps (0: use epochs)")
    batch_size: int = arg(32, "pairs per optimizer step")
    micro_batch_size: int = arg(0, "pairs per forward (0: the whole batch at once)")
    eval_every: int = arg(50, "held-out greedy pass@1 every N steps (0: before and after training only)")
    checkpoint_every: int = arg(50)
    resume: bool = arg(True, "reuse out/pairs.jsonl and continue from out/ckpt if they exist")

    def __post_init__(self):
        super().__post_init__()
        check_positive(self, "num_problems", "pairs_per_problem", "batch_size")
        require(self.samples_per_problem >= 2, "samples_per_problem", "must be >= 2 (a pair needs two samples)")
        require(self.temperature > 0, "temperature", "must be > 0 (greedy samples are all the same: no pairs)")
        require(self.beta > 0, "beta", "must be > 0")
        require(self.steps > 0 or self.epochs > 0, "epochs", "must be > 0 when steps=0")
        check_non_negative(self, "steps", "micro_batch_size", "nll_coef")


# ----------------------------------------------------------------------------- phase 1: pairs

def make_pairs(groups: list[Group], per_problem: int, seed: int) -> list[dict]:
    """(correct, incorrect) pairs of the same prompt, distinct texts, ``per_problem`` at most each."""
    rng = random.Random(f"dpo-pairs-{seed}")
    pairs = []
    for g in groups:
        good, bad = {}, {}
        for c, s in zip(g.completions, g.scores):
            if s.correct and c.finish_reason == "stop":
                good.setdefault(c.text, c)
            elif not s.correct:
                bad.setdefault(c.text, c)
        combos = [(a, b) for a in good.values() for b in bad.values()]
        for a, b in rng.sample(combos, min(per_problem, len(combos))):
            pairs.append({"key": g.problem.key, "prompt_ids": g.prompt_ids, "chosen_ids": a.token_ids,
                          "rejected_ids": b.token_ids, "chosen": a.text, "rejected": b.text})
    return pairs


def sequence_logprobs(model, prompts: list[list[int]], completions: list[list[int]], pad_id: int,
                      chunk: int = 0) -> torch.Tensor:
    """Sum of the completion tokens' log-probs (temperature 1) for each (prompt, completion): [N]."""
    device = next(model.parameters()).device
    rows = [Row(p, c, [0.0] * len(c), 0.0, True) for p, c in zip(prompts, completions)]
    out = []
    for i in range(0, len(rows), chunk or len(rows)):
        batch = collate_rows(rows[i:i + (chunk or len(rows))], pad_id, device)
        out.append(learner_logprobs(model, batch, 1.0).sum(-1))
    return torch.cat(out)


def build_pairs(model, tok, task, cfg: DPOConfig) -> tuple[list[dict], dict]:
    """Sample from ``model`` (the init policy), pair, and add the reference log-probs."""
    worker = LocalRolloutWorker(model, tok, task, RewardFn())
    worker.load_weights(None, version=0)
    problems = sample_problems(task, cfg.seed, 0, cfg.num_problems, cfg.levels)
    sampling = SamplingParams(max_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                              seed=derive_seed("dpo", cfg.seed))
    groups = worker.rollout(problems, cfg.mode, cfg.samples_per_problem, sampling)
    pairs = make_pairs(groups, cfg.pairs_per_problem, cfg.seed)
    stats = {f"data/{k}": v for k, v in rollout_stats(groups).items()}
    stats.update({"data/problems": len(problems), "data/pairs": len(pairs)})
    if pairs:
        with torch.no_grad():
            for side in ("chosen", "rejected"):
                logp = sequence_logprobs(model, [p["prompt_ids"] for p in pairs], [p[f"{side}_ids"] for p in pairs],
                                         tok.pad_token_id, chunk=max(cfg.micro_batch_size, cfg.batch_size))
                for p, v in zip(pairs, logp.tolist()):
                    p[f"ref_{side}"] = v
    return pairs, stats


def batch_indices(n: int, size: int, step: int, seed: int) -> list[int]:
    """Pair indices of one step: consecutive shuffled epochs, each a pure function of ``(seed, epoch)``."""
    perms: dict[int, list[int]] = {}
    out = []
    for pos in range(step * size, (step + 1) * size):
        epoch, i = divmod(pos, n)
        if epoch not in perms:
            perms[epoch] = random.Random(f"dpo-order-{seed}-{epoch}").sample(range(n), n)
        out.append(perms[epoch][i])
    return out


# ----------------------------------------------------------------------------- phase 2: training

def dpo_step(model, pairs: list[dict], cfg: DPOConfig, pad_id: int) -> dict[str, float]:
    """Backward of the batch's mean DPO loss (in micro-batches) and its statistics; the caller steps."""
    sums = dict(loss=0.0, nll=0.0, reward_acc=0.0, margin=0.0, chosen_reward=0.0, rejected_reward=0.0, chosen_logp=0.0,
                rejected_logp=0.0)
    size = cfg.micro_batch_size or len(pairs)
    device = next(model.parameters()).device
    for i in range(0, len(pairs), size):
        chunk = pairs[i:i + size]
        n = len(chunk)
        # chosen and rejected in one forward: rows [0, n) and [n, 2n)
        logp = sequence_logprobs(model, [p["prompt_ids"] for p in chunk] * 2,
                                 [p["chosen_ids"] for p in chunk] + [p["rejected_ids"] for p in chunk], pad_id)
        ref = torch.tensor([p["ref_chosen"] for p in chunk] + [p["ref_rejected"] for p in chunk], device=device)
        loss, r_c, r_r = dpo_loss(logp[:n], logp[n:], ref[:n], ref[n:], cfg.beta)
        nll = -(logp[:n] / torch.tensor([len(p["chosen_ids"]) for p in chunk], device=device)).mean()
        ((loss + cfg.nll_coef * nll) * n / len(pairs)).backward()
        sums["loss"] += float(loss.detach()) * n
        sums["nll"] += float(nll.detach()) * n
        sums["reward_acc"] += float((r_c > r_r).float().sum())
        sums["margin"] += float((r_c - r_r).sum())
        sums["chosen_reward"] += float(r_c.sum())
        sums["rejected_reward"] += float(r_r.sum())
        sums["chosen_logp"] += float(logp[:n].detach().sum())
        sums["rejected_logp"] += float(logp[n:].detach().sum())
    return {k: v / len(pairs) for k, v in sums.items()}


def read_pairs(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_pairs(path: Path, pairs: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")  # whole file or nothing: a kill mid-write leaves no half pair list
    tmp.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    os.replace(tmp, path)


def run_pairs(run: TrainingRun, model, tok, task, cfg: DPOConfig) -> tuple[list[dict], dict]:
    """Phase 1: the run's pairs (``pairs.jsonl``, reused on resume), else sampled from ``model`` while it is
    still init, and their statistics."""
    path = run.dir / "pairs.jsonl"
    if cfg.resume and path.exists():
        return read_pairs(path), {}
    if run.ckpt is not None:
        raise ConfigError(f"{run.dir}: checkpoint without pairs.jsonl; use a new out or resume=false")
    pairs, stats = build_pairs(model, tok, task, cfg)
    write_pairs(path, pairs)
    return pairs, stats


def train(cfg: DPOConfig, task=None, model=None, tok=None) -> Path:
    """Run offline DPO; returns the run folder. ``task``/``model``/``tok`` override the config's specs
    (tests); a given ``model`` is taken as the init model (policy start and reference)."""
    cfg, task = resolve_task(cfg, task)
    with TrainingRun(cfg, "dpo") as run:
        model, tok = load_init(cfg, model, tok)
        # -- phase 1, while the model is still init: it samples the pairs and gives the reference log-probs
        pairs, data_stats = run_pairs(run, model, tok, task, cfg)
        if not pairs:
            raise TrainingHalted("no pairs: every problem's samples were all correct or all incorrect; try other "
                                 "levels, more samples_per_problem or a higher temperature")

        # -- phase 2
        size = min(cfg.batch_size, len(pairs))
        total = cfg.steps or max(1, math.ceil(cfg.epochs * len(pairs) / size))
        opt = make_optimizer(model, cfg)
        run.resume(model, tok, optimizer=opt)
        worker = LocalRolloutWorker(model, tok, task, RewardFn())  # its engine runs the held-out evaluation
        heldout = heldout_problems(task, cfg)

        def evaluate(step: int) -> None:
            if heldout:
                run.log.log(step, **heldout_metrics(worker.engine, task, tok, heldout, (cfg.mode,), cfg.max_new_tokens))
            model.train()

        def baseline(step: int) -> None:  # what phase 1 found, and init's held-out score
            run.log.log(step, **data_stats, steps=total)
            evaluate(step)

        bar = run.progress(total, baseline=baseline)
        model.train()
        for step in range(run.start, total):
            t0 = time.time()
            set_lr(opt, warmup_lr(step, cfg.lr, cfg.warmup_steps))
            opt.zero_grad(set_to_none=True)
            stats = dpo_step(model, [pairs[i] for i in batch_indices(len(pairs), size, step, cfg.seed)], cfg,
                             tok.pad_token_id)
            gnorm = clip_grad(model, cfg.grad_clip)
            done = step + 1
            if not (math.isfinite(stats["loss"]) and math.isfinite(stats["nll"]) and math.isfinite(gnorm)):
                run.halt(f"non-finite loss/gradient at step {done} (loss {stats['loss']}, grad norm {gnorm})", done,
                         **stats, grad_norm=gnorm)
            opt.step()
            run.log.log(done, **stats, grad_norm=gnorm, lr=opt.param_groups[0]["lr"], step_s=time.time() - t0)
            bar.update(1)
            bar.set_postfix(loss=f"{stats['loss']:.3f}", acc=f"{stats['reward_acc']:.2f}")
            if due(done, cfg.eval_every, done == total):
                evaluate(done)
            if due(done, cfg.checkpoint_every, done == total):
                run.checkpoint(done)
        return run.finish()
