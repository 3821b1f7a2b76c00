"""GRPO on verifiable rewards: sample a group of completions per problem, learn from group-relative advantages.

Departures from GRPO as published (Shao et al. 2024, arXiv:2402.03300), most of them switches:
- Loss aggregation is a choice (``loss_agg``): ``sequence_mean`` (the paper: mean over each
  completion's tokens, then over completions), ``token_mean`` (DAPO, the default: every token weighs
  the same) or ``constant_normalizer`` (Dr. GRPO: token sum / (completions x max_new_tokens)).
- ``scale_by_std=False`` drops the division by the group's std (Dr. GRPO). The std is the
  population std (see ``losses.group_advantages``).
- DAPO options: clip-higher (``clip_high`` > ``clip_low``), dynamic sampling (groups whose rewards
  are all equal are dropped; unlike DAPO we do not sample more problems to refill the batch),
  overlong filtering (completions cut at ``max_new_tokens`` are left out of the loss but still count
  in their group's baseline) and the soft overlong penalty as a reward term (``overlong_buffer``).
- No KL term by default (``kl_coef=0``, as DAPO and Dr. GRPO; no reference model is kept). With
  ``kl_coef > 0`` the paper's k3 estimator is added to each token's loss, against a frozen copy of
  ``init`` (reloaded from disk, never checkpointed).
- Old log-probs are the engine's, recorded while sampling. The learner recomputes token log-probs as
  ``log_softmax(logits / temperature)``, the temperature-scaled distribution the engine sampled from,
  so the ratio is 1 (to float precision) at the first update. ``top_p`` truncation is in neither
  (both are the untruncated tempered distribution), so ``top_p < 1`` makes training slightly off-policy.
- Each inner epoch (``epochs_per_step``) is one optimizer step over the whole batch, accumulated
  over micro-batches; with 1 (default) training is strictly on-policy and the clip never binds.
  Logged diagnostics (clip fraction, approximate KL, entropy) are those of the last inner epoch.
- Without a KL term, rows with zero advantage (every row of a group whose rewards are all equal) add
  exactly nothing to the gradient, so the learner does not run them through the model; the loss's
  normalisers still count them, so the update is the same as with them. Entropy, clip fraction and
  approximate KL are then measured over the rows the learner ran (``learner_rows`` of ``rows``).
- The learner forwards each distinct prompt once and runs the group's completions on its KV cache
  (``batch.completion_logits``): the same logits and gradient as every row recomputing its prompt.
- ``async_rollout`` (off by default) samples step s+1 in a background thread from the weights before
  step s's update, while the learner trains on step s (one step off-policy, as in Noukhovitch et al.
  2024, arXiv:2410.18252). The ratio is then taken against the sampler's log-probs, so the clip can
  bind even at ``epochs_per_step=1``. A checkpoint holds the pending batch, so a run killed and resumed
  equals an uninterrupted one; a finished run whose ``steps`` is raised and resumed samples its first
  new step on-policy (no batch was pending when it ended). The learner is the longer of the two jobs on a
  CPU, so ``sampler_share`` hands a last micro-batch of it to the sampler's thread once its rollout is
  done; chunk gradients are summed in chunk order, so the weights do not depend on which thread took
  which chunk (``SharedChunks``). ``learner_s`` and ``sampler_s`` in the metrics show the balance.
- A reward is the task's correctness plus an optional format bonus (``slowthink.rl.rewards``);
  outcome reward only (process rewards come with the PRM). Constant learning rate after warm-up.

Phases per step: sample problems (a pure function of ``(seed, step)``, held-out problems excluded)
→ push weights to the rollout worker → rollout (engine, seeded per step) → rewards and group
advantages → optional dynamic sampling → learner update(s) → log → eval / checkpoint. Stops with
``TrainingHalted`` on a non-finite loss or collapsed entropy, leaving the last good checkpoint.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import ClassVar
from pathlib import Path

import torch

from ..config import ConfigError, arg, check_device, require, to_dict
from ..train.runlog import RunLog, latest_checkpoint, load_checkpoint, save_checkpoint, truncate_metrics
from ..chat import MODES, Mode
from .losses import (approx_kl, clip_fraction, clipped_pg_token_losses, constant_normalizer_loss,
                     entropy_from_logits, group_advantages, kl_k3, masked_sum, sequence_mean_loss,
                     token_logprobs, token_mean_loss)
from .rewards import RewardFn
from .batch import (Counts, RolloutAhead, Row, collate_rows, completion_logits, evaluate_on_heldout, learner_logprobs,
                    make_rows, micro_batches, on_policy_rollout, rollout_stats, SharedChunks)
from .rollout import Group, LocalRolloutWorker
from ..train.optimizers import OPTIMIZERS, make_optimizer
from ..train.loop import budget_spent, halted, open_run, resolve_task

# Each aggregation turns [B, T] token losses of one micro-batch into its share of the batch loss;
# ``n`` holds the whole batch's counts, so the micro-batch shares add up to the full-batch loss.
AGGREGATIONS = {
    "sequence_mean": lambda losses, mask, n: sequence_mean_loss(losses, mask, num_sequences=n.sequences),
    "token_mean": lambda losses, mask, n: token_mean_loss(losses, mask, total_tokens=n.tokens),
    "constant_normalizer": lambda losses, mask, n: constant_normalizer_loss(losses, mask, n.max_tokens,
                                                                           num_sequences=n.sequences),
}



@dataclass
class GRPOConfig:
    out: str = arg("runs/grpo", "run folder (config, metrics.jsonl, tb/, ckpt/, model/)")
    init: str = arg("", "model folder to start from (required), e.g. runs/sft/model")
    task: str = arg("arithmetic", "task name or path/to/file.py:ClassName")
    task_args: dict = arg({}, "task constructor arguments, e.g. op=mul,max_level=5")
    levels: list[int] = arg([1, 2, 3], "difficulty levels to sample training problems from (uniformly)")
    mode: str = arg(Mode.SYSTEM2, "system2 (think first) or system1 (answer directly)")
    steps: int = arg(200, "RL steps (each: one rollout batch, epochs_per_step optimizer steps)")
    prompts_per_step: int = arg(16, "problems per step")
    group_size: int = arg(8, "completions sampled per problem (the group, n)")
    max_new_tokens: int = arg(160, "generation limit per completion (also the Dr. GRPO normaliser)")
    temperature: float = arg(1.0, "sampling temperature (> 0); the learner's log-probs use the same")
    top_p: float = arg(1.0, "nucleus sampling (1: off; < 1 makes training slightly off-policy)")
    lr: float = arg(1e-5, "learning rate (AdamW), constant after warm-up; a fresh AdamW breaks a converged small "
                                "model at 3e-5 and up (dev/LOG.md)")
    warmup_steps: int = arg(0, "linear warm-up steps")
    grad_clip: float = arg(1.0, "clip the global gradient norm to this value (0: off)")
    optimizer: str = arg("adamw", "adamw or sgd (lr is then the step size on the clipped gradient)")
    momentum: float = arg(0.0, "SGD momentum (optimizer=sgd only)")
    betas: list[float] = arg([0.9, 0.99], "AdamW betas")
    weight_decay: float = arg(0.0, "AdamW weight decay")
    epochs_per_step: int = arg(1, "optimizer steps on each rollout batch (PPO-style; 1: on-policy, ratio 1)")
    micro_batch_size: int = arg(0, "completions per learner forward (0: the whole batch at once)")
    async_rollout: bool = arg(False, "sample step s+1 in a background thread, from the weights before step s's "
                              "update, while the learner trains on step s (one step off-policy; the threads are "
                              "split between the two)")
    sampler_share: float = arg(0.15, "async_rollout only: share of the learner's rows (its last micro-batch) that the "
                               "sampler's thread may take once its rollout is done, whichever thread is free first. "
                               "Balanced near (learner_s - sampler_s) / (2 * learner_s) from the metrics; 0: the "
                               "learner's thread does all")
    clip_low: float = arg(0.2, "PPO clip below: ratio >= 1 - clip_low")
    clip_high: float = arg(0.28, "PPO clip above: ratio <= 1 + clip_high (DAPO clip-higher; 0.2 = symmetric)")
    loss_agg: str = arg("token_mean", f"loss aggregation: {', '.join(AGGREGATIONS)}")
    scale_by_std: bool = arg(True, "divide advantages by the group std (false: Dr. GRPO)")
    dynamic_sampling: bool = arg(False, "drop groups whose rewards are all equal (DAPO; no refill)")
    overlong_filter: bool = arg(False, "leave completions cut at max_new_tokens out of the loss (DAPO)")
    overlong_buffer: int = arg(0, "soft overlong penalty over the last N tokens before max_new_tokens (0: off)")
    overlong_penalty: float = arg(1.0, "size of the soft overlong penalty at max_new_tokens")
    format_reward: float = arg(0.1, "reward bonus for a well-formed completion (added to correctness)")
    verify_steps: bool = arg(False, "credit a correct answer only if every worked step is right (task.step_labels)")
    kl_coef: float = arg(0.0, "weight of the k3 KL to the init model (0: no reference model)")
    entropy_floor: float = arg(1e-3, "stop when the mean token entropy stays below this ...")
    entropy_patience: int = arg(5, "... for this many steps in a row (entropy collapse)")
    time_budget_s: float = arg(0.0, "stop after this many seconds of this invocation (0: run all steps); the "
                               "last step is then evaluated, checkpointed and saved")
    eval_every: int = arg(50, "held-out greedy pass@1 every N steps (0: only at the end)")
    eval_per_level: int = arg(32, "held-out problems per level for evaluation (0: no evaluation)")
    checkpoint_every: int = arg(25, "write a resumable checkpoint every N steps")
    seed: int = arg(0, "seed for problems and sampling")
    threads: int = arg(0, "torch threads (0: all cores)")
    device: str = arg("cpu", "torch device to train on (cpu, cuda, cuda:1, ...)")
    resume: bool = arg(True, "continue from out/ckpt if it exists")
    progress: bool = arg(True, "show a progress bar")

    name: ClassVar[str] = "grpo"  # run-folder trainer name and progress-bar label

    def advantages(self, rewards: torch.Tensor) -> torch.Tensor:
        """[groups, n] rewards -> [groups, n] advantages; the only thing RLOO changes."""
        return group_advantages(rewards, scale_by_std=self.scale_by_std)

    def __post_init__(self):
        check_device(self.device)
        from ..models import is_model_dir

        require(bool(self.init), "init", "give the model folder to start from (GRPO fine-tunes a model that "
                "already writes the task's format), e.g. init=runs/sft/model")
        require(is_model_dir(self.init), "init", f"{self.init!r} is not a model folder (no config.json); "
                "give a folder written by save_pretrained, e.g. runs/sft/model")
        require(self.mode in MODES, "mode", f"must be one of {MODES}")
        require(len(self.levels) > 0, "levels", "give at least one level")
        for name in ("steps", "prompts_per_step", "max_new_tokens", "epochs_per_step", "checkpoint_every",
                     "entropy_patience"):
            require(getattr(self, name) > 0, name, "must be > 0")
        require(self.group_size >= 2, "group_size", "must be >= 2 (advantages are relative to the group)")
        require(self.temperature > 0 and math.isfinite(self.temperature), "temperature",
                "must be > 0 (RL samples; greedy decoding has no exploration)")
        require(0 < self.top_p <= 1, "top_p", "must be in (0, 1]")
        require(self.lr > 0, "lr", "must be > 0")
        for name in ("time_budget_s", "warmup_steps", "grad_clip", "weight_decay", "micro_batch_size", "overlong_buffer",
                     "overlong_penalty", "format_reward", "kl_coef", "entropy_floor", "eval_every",
                     "eval_per_level"):
            require(getattr(self, name) >= 0, name, "must be >= 0")
        require(0 <= self.clip_low < 1, "clip_low", "must be in [0, 1) (the ratio is clipped at 1 - clip_low)")
        require(self.clip_high >= 0, "clip_high", "must be >= 0 (the ratio is clipped at 1 + clip_high)")
        require(self.loss_agg in AGGREGATIONS, "loss_agg", f"unknown aggregation {self.loss_agg!r}; choose one of "
                f"{sorted(AGGREGATIONS)}")
        require(self.overlong_buffer <= self.max_new_tokens, "overlong_buffer", "must be <= max_new_tokens")
        require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas", "two values in [0, 1)")
        require(self.optimizer in OPTIMIZERS, "optimizer", f"must be one of {OPTIMIZERS}")
        require(0 <= self.momentum < 1, "momentum", "must be in [0, 1)")
        require(0 <= self.sampler_share < 1, "sampler_share", "must be in [0, 1)")


def lr_at(step: int, cfg: GRPOConfig) -> float:
    """Linear warm-up, then constant (independent of ``steps``, so a longer resumed run matches)."""
    return cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr


def drop_flat_groups(groups: list[Group]) -> list[Group]:
    """Dynamic sampling (DAPO): keep only groups whose rewards differ (the others have zero advantage)."""
    return [g for g in groups if not g.all_equal]


# ----------------------------------------------------------------------------- learner

def pg_chunk_loss(model, ref_model, chunk: list[Row], cfg: GRPOConfig, counts: Counts, pad_id: int,
                  device) -> tuple[torch.Tensor, dict[str, float]]:
    """One micro-batch's share of the clipped PG loss (+ KL), and its sums for the diagnostics."""
    b = collate_rows(chunk, pad_id, device)
    logits = completion_logits(model, b, cfg.temperature)
    logp = token_logprobs(logits, b["tokens"])
    token_losses = clipped_pg_token_losses(logp, b["old_logp"], b["advantages"], cfg.clip_low, cfg.clip_high)
    sums = {}
    if ref_model is not None:
        with torch.no_grad():
            ref_logp = learner_logprobs(ref_model, b, cfg.temperature)
        kl = kl_k3(logp, ref_logp)
        token_losses = token_losses + cfg.kl_coef * kl
        sums["kl_ref"] = float(masked_sum(kl.detach(), b["loss_mask"]))
    loss = AGGREGATIONS[cfg.loss_agg](token_losses, b["loss_mask"], counts)
    in_loss = int(b["loss_mask"].sum())
    with torch.no_grad():
        sums.update(loss=float(loss), real=int(b["real"].sum()), in_loss=in_loss,
                    entropy=float(masked_sum(entropy_from_logits(logits.detach()), b["real"])),
                    clip_frac=float(clip_fraction(logp, b["old_logp"], b["loss_mask"], cfg.clip_low,
                                                  cfg.clip_high)) * in_loss,
                    approx_kl=float(approx_kl(logp, b["old_logp"], b["loss_mask"])) * in_loss)
    return loss, sums


def learner_update(model, ref_model, rows: list[Row], cfg: GRPOConfig, pad_id: int,
                   skip_zero_advantage: bool = True, helper=None) -> dict[str, float]:
    """One gradient (accumulated over micro-batches) of the clipped PG loss (+ KL); the caller clips and
    steps. Returns the loss and diagnostics: entropy of the tempered (sampling) distribution over all
    completion tokens; clip fraction, approximate KL to the sampling policy and k3 KL to the reference
    over the tokens in the loss. ``helper.share(shared)``, if given, has the async sampler's thread
    compute micro-batches too once its rollout is done (``RolloutAhead``); the gradient does not depend
    on it (``SharedChunks``)."""
    counts = Counts(sequences=sum(1 for r in rows if r.in_loss and r.token_ids),
                    tokens=sum(len(r.token_ids) for r in rows if r.in_loss), max_tokens=cfg.max_new_tokens)
    device = next(model.parameters()).device
    # A zero-advantage token's clipped PG loss is 0 at every ratio, so its gradient is 0: with no KL
    # term such rows need no forward pass (``counts`` above still include them).
    skip = skip_zero_advantage and ref_model is None
    forward = [r for r in rows if r.advantage != 0.0] if skip else rows
    if not forward:  # nothing carries signal: a zero gradient, stepped like any other
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        return {"loss": 0.0, "learner_rows": 0, "rows": len(rows)}

    params = [p for p in model.parameters() if p.requires_grad]
    tail = cfg.sampler_share if helper is not None else 0.0
    shared = SharedChunks(micro_batches(forward, cfg.micro_batch_size, tail),
                          lambda chunk: pg_chunk_loss(model, ref_model, chunk, cfg, counts, pad_id, device), params)
    if helper is not None and len(shared.chunks) > 1:
        helper.share(shared)
    per_chunk = shared.finish()
    total = {k: sum(c.get(k, 0.0) for c in per_chunk) for k in per_chunk[0]}
    n_real, n_loss = max(1, total["real"]), max(1, total["in_loss"])
    return {"loss": total["loss"], "learner_rows": len(forward), "rows": len(rows),
            "entropy": total["entropy"] / n_real, "clip_frac": total["clip_frac"] / n_loss,
            "approx_kl": total["approx_kl"] / n_loss,
            **({"kl_ref": total["kl_ref"] / n_loss} if ref_model is not None else {})}


# ----------------------------------------------------------------------------- training loop

def train(cfg: GRPOConfig, task=None, model=None, tok=None) -> Path:
    """Run GRPO (or RLOO: same loop, ``cfg.advantages`` differs); returns the run folder.
    ``task``/``model``/``tok`` override the config's specs (tests)."""
    from tqdm.auto import tqdm

    from ..models import load_model, save

    run = open_run(cfg, cfg.name)
    task = resolve_task(cfg, task)
    if model is None:
        model, tok = load_model(cfg.init)
    if tok is None:
        raise ConfigError("train(): pass tok together with model")
    model.to(cfg.device).train()
    ref_model = None
    if cfg.kl_coef > 0:  # the reference is init itself: reloaded, never checkpointed
        ref_model = load_model(cfg.init)[0].to(cfg.device).eval().requires_grad_(False)
    opt = make_optimizer(model, cfg)

    start, low_entropy = 0, 0
    ckpt = latest_checkpoint(run) if cfg.resume else None
    if ckpt is not None:
        state = load_checkpoint(ckpt, model)
        opt.load_state_dict(state["optimizer"])
        start, low_entropy = state["step"], state.get("low_entropy_steps", 0)
        truncate_metrics(run, start)
    log = RunLog(run)
    reward_fn = RewardFn(format_bonus=cfg.format_reward, overlong_buffer=cfg.overlong_buffer,
                         overlong_penalty=cfg.overlong_penalty, max_tokens=cfg.max_new_tokens,
                         verify_steps=cfg.verify_steps)
    worker = LocalRolloutWorker(model, tok, task, reward_fn)
    ahead = None
    if cfg.async_rollout:  # the sampler gets its own copy: the learner updates ``model`` meanwhile
        outer_threads = torch.get_num_threads()  # given back when train() returns
        threads = max(1, outer_threads // 2)
        torch.set_num_threads(threads)
        ahead = RolloutAhead(LocalRolloutWorker(copy.deepcopy(model), tok, task, reward_fn), task, cfg, "grpo",
                             threads)
        if ckpt is not None and state.get("pending_rollout") is not None:
            ahead.put(start, state["pending_rollout"])
    heldout = task.heldout_set(cfg.eval_per_level, tuple(cfg.levels)) if cfg.eval_per_level else []

    def halt(why: str):
        bar.close()
        log.close()
        if ahead is not None:
            ahead.close()
            torch.set_num_threads(outer_threads)
        raise halted(why, ckpt)

    def evaluate_heldout(done: int) -> None:
        evaluate_on_heldout(worker, task, tok, heldout, cfg, log, bar, done)

    bar = tqdm(total=cfg.steps, initial=start, desc=cfg.name, disable=not cfg.progress, dynamic_ncols=True)
    if heldout and start == 0:  # the starting point of the learning curve
        evaluate_heldout(0)
    t_start = time.time()
    for step in range(start, cfg.steps):
        t0 = time.time()
        # -- rollout: sample problems, push weights, generate and score n completions each (async: this
        # step's batch was sampled during the previous step, and the next one starts now)
        groups, sampler_s = ahead.take(step) if ahead is not None else (None, None)
        if groups is None:
            groups = on_policy_rollout(worker, task, model, cfg, step, "grpo")
        if ahead is not None and step + 1 < cfg.steps:
            ahead.submit(model, step + 1)
        t_rollout = time.time() - t0
        metrics = rollout_stats(groups)
        metrics["policy_lag"] = step - min(g.version for g in groups)
        if sampler_s is not None:  # async: the sampler thread's time on this batch (rollout_s is only the wait)
            metrics["sampler_s"] = sampler_s

        # -- advantages, dynamic sampling, learner update(s)
        if cfg.dynamic_sampling:
            groups = drop_flat_groups(groups)
        metrics["groups_used"] = len(groups)
        for pg in opt.param_groups:
            pg["lr"] = lr_at(step, cfg)
        if groups:
            adv = cfg.advantages(torch.tensor([g.totals for g in groups]))
            rows = make_rows(groups, adv, cfg.overlong_filter)
            t_learn = time.time()
            for _ in range(cfg.epochs_per_step):
                opt.zero_grad(set_to_none=True)
                stats = learner_update(model, ref_model, rows, cfg, tok.pad_token_id, helper=ahead)
                gnorm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or float("inf")))
                entropy = stats.get("entropy", 1.0)  # absent: no row ran, nothing to measure
                if not (math.isfinite(stats["loss"]) and math.isfinite(gnorm) and math.isfinite(entropy)):
                    log.log(step + 1, **metrics, **stats, grad_norm=gnorm)
                    halt(f"non-finite loss/gradient/entropy at step {step + 1} (loss {stats['loss']}, "
                         f"grad norm {gnorm}, entropy {entropy})")
                opt.step()
            metrics.update(stats, grad_norm=gnorm, learner_s=time.time() - t_learn)
            if "entropy" in stats:
                low_entropy = low_entropy + 1 if stats["entropy"] < cfg.entropy_floor else 0
        done = step + 1
        elapsed = time.time() - t0
        n_samples = cfg.prompts_per_step * cfg.group_size
        log.log(done, **metrics, lr=opt.param_groups[0]["lr"], samples_per_s=n_samples / max(elapsed, 1e-9),
                samples=done * n_samples, rollout_s=t_rollout, step_s=elapsed)
        bar.update(1)
        bar.set_postfix(reward=f"{metrics['reward_mean']:.3f}", passed=f"{metrics['pass_rate']:.2f}")
        if low_entropy >= cfg.entropy_patience:
            halt(f"entropy collapse: mean token entropy below {cfg.entropy_floor} for {low_entropy} steps "
                 f"(last {metrics.get('entropy', float('nan')):.2e}) at step {done}")

        # -- evaluation and checkpoints
        last = done == cfg.steps or budget_spent(t_start, cfg.time_budget_s)
        if heldout and ((cfg.eval_every and done % cfg.eval_every == 0) or last):
            evaluate_heldout(done)
        if done % cfg.checkpoint_every == 0 or last:
            # the next batch, already sampled from older weights: a resumed run needs it to be exact
            pending = ahead.peek(done) if ahead is not None and not last else None
            ckpt = save_checkpoint(run, model, tok, {"step": done, "optimizer": opt.state_dict(),
                                                     "low_entropy_steps": low_entropy, "config": to_dict(cfg),
                                                     "pending_rollout": pending})
        if last:
            break
    bar.close()
    log.close()
    if ahead is not None:
        ahead.close()
        torch.set_num_threads(outer_threads)
    save(model, tok, run / "model")
    return run
