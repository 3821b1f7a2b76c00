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

from ..config import ConfigError, arg, check_device, require, to_dict
from ..engine import SamplingParams, derive_seed
from ..evaluate import heldout_metrics
from ..train.runlog import RunLog, latest_checkpoint, load_checkpoint, save_checkpoint, truncate_metrics
from ..chat import MODES, Mode
from .batch import Row, collate_rows, learner_logprobs, rollout_stats, sample_problems
from ..train.loop import TrainingHalted, open_run, resolve_task
from ..train.optimizers import make_optimizer
from .losses import dpo_loss
from .rewards import RewardFn
from .rollout import Group, LocalRolloutWorker


@dataclass
class DPOConfig:
    out: str = arg("runs/dpo", "run folder (config, pairs.jsonl, metrics.jsonl, tb/, ckpt/, model/)")
    init: str = arg("", "model folder to start from and to use as the reference (required), e.g. runs/sft/model")
    task: str = arg("arithmetic", "task name or path/to/file.py:ClassName")
    task_args: dict = arg({}, "task constructor arguments, e.g. op=mul,max_level=5")
    levels: list[int] = arg([1, 2, 3], "difficulty levels to sample problems from (uniformly)")
    mode: str = arg(Mode.SYSTEM2, "system2 (think first) or system1 (answer directly)")
    num_problems: int = arg(512, "train problems to sample pairs from (phase 1)")
    samples_per_problem: int = arg(8, "completions sampled per problem (k)")
    temperature: float = arg(1.0, "sampling temperature for the pairs (> 0)")
    max_new_tokens: int = arg(160, "generation limit per completion (also for evaluation)")
    pairs_per_problem: int = arg(1, "distinct (correct, incorrect) pairs kept per problem, at most")
    beta: float = arg(0.1, "DPO beta: strength of the implicit KL to the reference")
    nll_coef: float = arg(0.0, "weight of the chosen completions' token-mean NLL added to the loss (RPO; 0: plain DPO)")
    lr: float = arg(1e-5, "learning rate (AdamW), constant after warm-up")
    warmup_steps: int = arg(10, "linear warm-up steps")
    epochs: float = arg(1.0, "passes over the pairs ...")
    steps: int = arg(0, "... or this many optimizer steps (0: use epochs)")
    batch_size: int = arg(32, "pairs per optimizer step")
    micro_batch_size: int = arg(0, "pairs per forward (0: the whole batch at once)")
    grad_clip: float = arg(1.0, "clip the global gradient norm to this value (0: off)")
    weight_decay: float = arg(0.0, "AdamW weight decay")
    betas: list[float] = arg([0.9, 0.99], "AdamW betas")
    eval_every: int = arg(50, "held-out greedy pass@1 every N steps (0: before and after training only)")
    eval_per_level: int = arg(32, "held-out problems per level for evaluation (0: no evaluation)")
    checkpoint_every: int = arg(50, "write a resumable checkpoint every N steps")
    seed: int = arg(0, "seed for problems, sampling, pairing and data order")
    threads: int = arg(0, "torch threads (0: all cores)")
    device: str = arg("cpu", "torch device to train on (cpu, cuda, cuda:1, ...)")
    resume: bool = arg(True, "reuse out/pairs.jsonl and continue from out/ckpt if they exist")
    progress: bool = arg(True, "show a progress bar")

    def __post_init__(self):
        check_device(self.device)
        from ..models import is_model_dir

        require(bool(self.init), "init", "give the model folder to start from (it samples the pairs and is the "
                "reference), e.g. init=runs/sft/model")
        require(is_model_dir(self.init), "init", f"{self.init!r} is not a model folder (no config.json)")
        require(self.mode in MODES, "mode", f"must be one of {MODES}")
        require(len(self.levels) > 0, "levels", "give at least one level")
        for name in ("num_problems", "max_new_tokens", "pairs_per_problem", "batch_size", "checkpoint_every"):
            require(getattr(self, name) > 0, name, "must be > 0")
        require(self.samples_per_problem >= 2, "samples_per_problem", "must be >= 2 (a pair needs two samples)")
        require(self.temperature > 0 and math.isfinite(self.temperature), "temperature",
                "must be > 0 (greedy samples are all the same: no pairs)")
        require(self.beta > 0, "beta", "must be > 0")
        require(self.lr > 0, "lr", "must be > 0")
        require(self.steps > 0 or self.epochs > 0, "epochs", "must be > 0 when steps=0")
        for name in ("steps", "warmup_steps", "micro_batch_size", "grad_clip", "weight_decay", "eval_every",
                     "eval_per_level", "nll_coef"):
            require(getattr(self, name) >= 0, name, "must be >= 0")
        require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas", "two values in [0, 1)")


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


def train(cfg: DPOConfig, task=None, model=None, tok=None) -> Path:
    """Run offline DPO; returns the run folder. ``task``/``model``/``tok`` override the config's specs
    (tests); a given ``model`` is taken as the init model (policy start and reference)."""
    from tqdm.auto import tqdm

    from ..models import load_model, save

    run = open_run(cfg, "dpo")
    task = resolve_task(cfg, task)
    if model is None:
        model, tok = load_model(cfg.init)
    if tok is None:
        raise ConfigError("train(): pass tok together with model")
    model.to(cfg.device)

    # -- phase 1, while the model is still init: it samples the pairs and gives the reference log-probs
    path = run / "pairs.jsonl"
    ckpt = latest_checkpoint(run) if cfg.resume else None
    data_stats = {}
    if cfg.resume and path.exists():
        pairs = read_pairs(path)
    else:
        if ckpt is not None:
            raise ConfigError(f"{run}: checkpoint without pairs.jsonl; use a new out or resume=false")
        pairs, data_stats = build_pairs(model, tok, task, cfg)
        write_pairs(path, pairs)
    if not pairs:
        raise TrainingHalted("no pairs: every problem's samples were all correct or all incorrect; try other "
                             "levels, more samples_per_problem or a higher temperature")

    # -- phase 2
    size = min(cfg.batch_size, len(pairs))
    total = cfg.steps or max(1, math.ceil(cfg.epochs * len(pairs) / size))
    opt = make_optimizer(model, cfg)
    start = 0
    if ckpt is not None:
        state = load_checkpoint(ckpt, model)
        opt.load_state_dict(state["optimizer"])
        start = state["step"]
    truncate_metrics(run, start if ckpt is not None else -1)  # a fresh start also drops a killed attempt's rows
    log = RunLog(run)
    worker = LocalRolloutWorker(model, tok, task, RewardFn())  # its engine runs the held-out evaluation
    heldout = task.heldout_set(cfg.eval_per_level, tuple(cfg.levels)) if cfg.eval_per_level else []

    def evaluate(step: int) -> None:
        if heldout:
            log.log(step, **heldout_metrics(worker.engine, task, tok, heldout, (cfg.mode,), cfg.max_new_tokens))

    if start == 0:
        log.log(0, **data_stats, steps=total)
        evaluate(0)
    model.train()
    bar = tqdm(total=total, initial=start, desc="dpo", disable=not cfg.progress, dynamic_ncols=True)
    for step in range(start, total):
        t0 = time.time()
        for group in opt.param_groups:
            group["lr"] = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr
        opt.zero_grad(set_to_none=True)
        stats = dpo_step(model, [pairs[i] for i in batch_indices(len(pairs), size, step, cfg.seed)], cfg,
                         tok.pad_token_id)
        gnorm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or float("inf")))
        done = step + 1
        if not (math.isfinite(stats["loss"]) and math.isfinite(stats["nll"]) and math.isfinite(gnorm)):
            log.log(done, **stats, grad_norm=gnorm)
            bar.close()
            log.close()
            raise TrainingHalted(f"non-finite loss/gradient at step {done} (loss {stats['loss']}, grad norm "
                                 f"{gnorm}); stopped without saving. Last good checkpoint: {ckpt or 'none'}")
        opt.step()
        log.log(done, **stats, grad_norm=gnorm, lr=opt.param_groups[0]["lr"], step_s=time.time() - t0)
        bar.update(1)
        bar.set_postfix(loss=f"{stats['loss']:.3f}", acc=f"{stats['reward_acc']:.2f}")
        if (cfg.eval_every and done % cfg.eval_every == 0) or done == total:
            evaluate(done)
            model.train()
        if done % cfg.checkpoint_every == 0 or done == total:
            ckpt = save_checkpoint(run, model, tok, {"step": done, "optimizer": opt.state_dict(),
                                                     "config": to_dict(cfg)})
    bar.close()
    log.close()
    save(model, tok, run / "model")
    return run
