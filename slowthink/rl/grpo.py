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

from ..config import ToolsConfig, arg, check_non_negative, require
from ..env import tool_options
from .losses import (OBJECTIVES, approx_kl, clip_fraction, constant_normalizer_loss,
                     entropy_from_logits, group_advantages, kl_k3, masked_sum, sequence_mean_loss,
                     staleness_stats, token_logprobs, token_mean_loss)
from .correction import correct, sampler_logp, with_learner_logprobs
from .rewards import RewardFn
from .batch import (Counts, RolloutAhead, Row, collate_rows, completion_logits, learner_logprobs, make_rows,
                    micro_batches, on_policy_rollout, rollout_stats, SharedChunks)
from .onpolicy import OnPolicyConfig, heldout_evaluator, reference_model, watch_entropy
from .rollout import Group, LocalRolloutWorker
from ..train.optimizers import OPTIMIZERS, clip_grad, make_optimizer, set_lr, warmup_lr
from ..train.loop import TrainingRun, due, load_init, resolve_task

# Each aggregation turns [B, T] token losses of one micro-batch into its share of the batch loss;
# ``n`` holds the whole batch's counts, so the micro-batch shares add up to the full-batch loss.
AGGREGATIONS = {
    "sequence_mean": lambda losses, mask, n: sequence_mean_loss(losses, mask, num_sequences=n.sequences),
    "token_mean": lambda losses, mask, n: token_mean_loss(losses, mask, total_tokens=n.tokens),
    "constant_normalizer": lambda losses, mask, n: constant_normalizer_loss(losses, mask, n.max_tokens,
                                                                           num_sequences=n.rows),
}


@dataclass
class BatchCounts(Counts):
    """``Counts`` and every row of the batch, overlong-filtered ones included: Dr. GRPO's constant B, so the
    loss scale does not follow each step's truncation rate."""

    rows: int = 0


@dataclass
class GRPOConfig(ToolsConfig, OnPolicyConfig):
    out: str = arg("runs/grpo")
    max_new_tokens: int = arg(160, "generation limit per completion (also the Dr. GRPO normaliser)")
    top_p: float = arg(1.0, "nucleus sampling (1: off; < 1 makes training slightly off-policy)")
    optimizer: str = arg("adamw", "adamw or sgd (lr is then the step size on the clipped gradient)")
    momentum: float = arg(0.0, "SGD momentum (optimizer=sgd only)")
    async_rollout: bool = arg(False, "sample step s+1 in a background thread, from the weights before step s's "
                              "update, while the learner trains on step s (one step off-policy; the threads are "
                              "split between the two)")
    sampler_share: float = arg(0.15, "async_rollout only: share of the learner's rows (its last micro-batch) that the "
                               "sampler's thread may take once its rollout is done, whichever thread is free first. "
                               "Balanced near (learner_s - sampler_s) / (2 * learner_s) from the metrics; 0: the "
                               "learner's thread does all")
    clip_high: float = arg(0.28, "PPO clip above: ratio <= 1 + clip_high (DAPO clip-higher; 0.2 = symmetric)")
    loss_agg: str = arg("token_mean", f"loss aggregation: {', '.join(AGGREGATIONS)}")
    scale_by_std: bool = arg(True, "divide advantages by the group std (false: Dr. GRPO)")
    dynamic_sampling: bool = arg(False, "drop groups whose rewards are all equal (DAPO; no refill)")
    overlong_filter: bool = arg(False, "leave completions cut at max_new_tokens out of the loss (DAPO)")
    overlong_buffer: int = arg(0, "soft overlong penalty over the last N tokens before max_new_tokens (0: off)")
    overlong_penalty: float = arg(1.0, "size of the soft overlong penalty at max_new_tokens")
    verify_steps: bool = arg(False, "credit a correct answer only if every worked step is right (task.step_labels)")
    kl_coef: float = arg(0.0, "weight of the k3 KL to the init model, added to each token's loss (0: no reference "
                              "model)")

    name: ClassVar[str] = "grpo"  # run-folder trainer name and progress-bar label

    def advantages(self, rewards: torch.Tensor) -> torch.Tensor:
        """[groups, n] rewards -> [groups, n] advantages; the only thing RLOO changes."""
        return group_advantages(rewards, scale_by_std=self.scale_by_std)

    def __post_init__(self):
        super().__post_init__()
        require(self.group_size >= 2, "group_size", "must be >= 2 (advantages are relative to the group)")
        require(0 < self.top_p <= 1, "top_p", "must be in (0, 1]")
        require(self.loss_agg in AGGREGATIONS, "loss_agg", f"unknown aggregation {self.loss_agg!r}; choose one of "
                f"{sorted(AGGREGATIONS)}")
        check_non_negative(self, "overlong_buffer", "overlong_penalty")
        require(self.overlong_buffer <= self.max_new_tokens, "overlong_buffer", "must be <= max_new_tokens")
        require(self.optimizer in OPTIMIZERS, "optimizer", f"must be one of {OPTIMIZERS}")
        require(0 <= self.momentum < 1, "momentum", "must be in [0, 1)")
        require(0 <= self.sampler_share < 1, "sampler_share", "must be in [0, 1)")


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
    lo, hi = cfg.policy_clip()
    token_losses = OBJECTIVES[cfg.objective](logp, b["old_logp"], b["advantages"], lo, hi, mask=b["loss_mask"],
                                             dual_clip=cfg.dual_clip)
    sums = {}
    if cfg.is_correction != "none":  # old_logp is the learner's own here (correction.with_learner_logprobs)
        token_losses, b["loss_mask"], is_sums = correct(token_losses, b["old_logp"], sampler_logp(chunk, device),
                                                        b["loss_mask"], cfg)
        sums.update(is_sums)
    if ref_model is not None:
        with torch.no_grad():
            ref_logp = learner_logprobs(ref_model, b, cfg.temperature)
        kl = kl_k3(logp, ref_logp)
        token_losses = token_losses + cfg.kl_coef * kl
        sums["kl_ref"] = float(masked_sum(kl.detach(), b["loss_mask"]))
    loss = AGGREGATIONS[cfg.loss_agg](token_losses, b["loss_mask"], counts)
    in_loss = int(b["loss_mask"].sum())
    with torch.no_grad():
        sums.update(loss=float(loss), real=int(b["act"].sum()), in_loss=in_loss,  # act: the model's tokens
                    entropy=float(masked_sum(entropy_from_logits(logits.detach()), b["act"])),
                    clip_frac=float(clip_fraction(logp, b["old_logp"], b["loss_mask"], cfg.clip_low,
                                                  cfg.clip_high)) * in_loss,
                    approx_kl=float(approx_kl(logp, b["old_logp"], b["loss_mask"])) * in_loss)
    return loss, sums


def batch_counts(rows: list[Row], cfg: GRPOConfig) -> BatchCounts:
    """The whole batch's counts the aggregations normalise by (a learner given a shard of it needs them)."""
    return BatchCounts(sequences=sum(1 for r in rows if r.in_loss and r.token_ids),
                       tokens=sum(r.loss_tokens for r in rows if r.in_loss), max_tokens=cfg.max_new_tokens,
                       rows=len(rows))


def learner_update(model, ref_model, rows: list[Row], cfg: GRPOConfig, pad_id: int,
                   skip_zero_advantage: bool = True, helper=None, counts: BatchCounts | None = None) -> dict[str, float]:
    """One gradient (accumulated over micro-batches) of the clipped PG loss (+ KL); the caller clips and
    steps. Returns the loss and diagnostics: entropy of the tempered (sampling) distribution over all
    completion tokens; clip fraction, approximate KL to the sampling policy and k3 KL to the reference
    over the tokens in the loss. ``helper.share(shared)``, if given, has the async sampler's thread
    compute micro-batches too once its rollout is done (``RolloutAhead``); the gradient does not depend
    on it (``SharedChunks``)."""
    counts = counts or batch_counts(rows, cfg)  # given: ``rows`` is one learner's shard of a larger batch
    device = next(model.parameters()).device
    # A zero-advantage token's clipped PG loss is 0 at every ratio, so its gradient is 0: with no KL
    # term such rows need no forward pass (``counts`` above still include them).
    skip = skip_zero_advantage and ref_model is None
    forward = [r for r in rows if r.advantage != 0.0] if skip else rows
    if not forward:  # nothing carries signal: a zero gradient, stepped like any other
        for p in model.parameters():
            if p.requires_grad:  # a frozen (LoRA base) weight gets no gradient to hold
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
            **({"kl_ref": total["kl_ref"] / n_loss} if ref_model is not None else {}),
            **({"is_weight_mean": total["is_weight"] / max(1, total["is_tokens"]),
                "is_masked_frac": total["is_masked"] / max(1, total["is_tokens"])} if "is_weight" in total else {})}


# ----------------------------------------------------------------------------- training loop

def rollout_ahead(run: TrainingRun, cfg: GRPOConfig, model, tok, task, reward_fn, pending) -> RolloutAhead:
    """The async sampler: its own copy of the model (the learner updates ``model`` meanwhile) and half the
    threads, both given back when the run closes; a resumed run's checkpointed ``pending`` batch comes first."""
    outer_threads = torch.get_num_threads()
    threads = max(1, outer_threads // 2)
    torch.set_num_threads(threads)
    ahead = RolloutAhead(LocalRolloutWorker(copy.deepcopy(model), tok, task, reward_fn, **tool_options(cfg)), task, cfg,
                         "grpo", threads)
    run.on_close(ahead.close)
    run.on_close(lambda: torch.set_num_threads(outer_threads))
    if pending is not None:
        ahead.put(run.start, pending)
    return ahead


def rollout(worker, ahead: RolloutAhead | None, task, model, cfg: GRPOConfig, step: int) -> tuple[list[Group], dict]:
    """Step ``step``'s scored groups and their statistics. Async, the batch was sampled during the previous step
    (or came from a checkpoint) and the next step's sampling starts now."""
    t0 = time.time()
    groups, sampler_s = ahead.take(step) if ahead is not None else (None, None)
    if groups is None:
        groups = on_policy_rollout(worker, task, model, cfg, step, "grpo")
    if ahead is not None and step + 1 < cfg.steps:
        ahead.submit(model, step + 1)
    metrics = {"rollout_s": time.time() - t0, **rollout_stats(groups),
               "policy_lag": step - min(g.version for g in groups),
               **staleness_stats(step, [g.version for g in groups for _ in g.completions])}
    if sampler_s is not None:  # async: the sampler thread's time on this batch (rollout_s is only the wait)
        metrics["sampler_s"] = sampler_s
    if hasattr(worker, "pop_metrics"):  # a Ray worker pool: weight-sync time and size, replaced workers
        metrics.update(worker.pop_metrics())
    return groups, metrics


def learn(run: TrainingRun, model, ref_model, opt, groups: list[Group], cfg: GRPOConfig, pad_id: int,
           ahead: RolloutAhead | None, step: int, metrics: dict, update=None) -> dict[str, float]:
    """Group advantages, then ``epochs_per_step`` optimizer steps on the batch; halts the run (logging
    ``metrics``) on a non-finite loss, gradient or entropy. Returns the learner's statistics. ``update`` computes
    the gradient (default ``learner_update``; a Ray ``LearnerGroup.update`` splits it over learners)."""
    update = update or learner_update
    set_lr(opt, warmup_lr(step, cfg.lr, cfg.warmup_steps))
    if not groups:  # dynamic sampling left nothing to learn from
        return {}
    rows = make_rows(groups, cfg.advantages(torch.tensor([g.totals for g in groups])), cfg.overlong_filter)
    t_learn = time.time()
    mismatch = {}
    if cfg.is_correction != "none":  # ratios against the learner's own log-probs, weighted towards the sampler's
        rows, mismatch = with_learner_logprobs(model, rows, cfg, pad_id)
    for _ in range(cfg.epochs_per_step):
        opt.zero_grad(set_to_none=True)
        stats = update(model, ref_model, rows, cfg, pad_id, helper=ahead)
        gnorm = clip_grad(model, cfg.grad_clip)
        entropy = stats.get("entropy", 1.0)  # absent: no row ran, nothing to measure
        if not (math.isfinite(stats["loss"]) and math.isfinite(gnorm) and math.isfinite(entropy)):
            run.halt(f"non-finite loss/gradient/entropy at step {step + 1} (loss {stats['loss']}, grad norm {gnorm}, "
                     f"entropy {entropy})", step + 1, **metrics, **stats, grad_norm=gnorm)
        opt.step()
    return {**stats, **mismatch, "grad_norm": gnorm, "learner_s": time.time() - t_learn}


def train(cfg: GRPOConfig, task=None, model=None, tok=None) -> Path:
    """Run GRPO (or RLOO: same loop, ``cfg.advantages`` differs); returns the run folder.
    ``task``/``model``/``tok`` override the config's specs (tests)."""
    cfg, task = resolve_task(cfg, task)
    with TrainingRun(cfg, cfg.name) as run:
        model, tok = load_init(cfg, model, tok)
        model.train()
        ref_model = reference_model(cfg, model)
        opt = make_optimizer(model, cfg)
        state = run.resume(model, tok, optimizer=opt)
        low_entropy = state.get("low_entropy_steps", 0)
        reward_fn = RewardFn(format_bonus=cfg.format_reward, overlong_buffer=cfg.overlong_buffer,
                             overlong_penalty=cfg.overlong_penalty, max_tokens=cfg.max_new_tokens,
                             verify_steps=cfg.verify_steps)
        worker = LocalRolloutWorker(model, tok, task, reward_fn, **tool_options(cfg))
        pool, ahead, learners = worker, None, None
        if cfg.ray:  # rollout workers (and learners) as Ray actors; the loop below does not change
            from ..distributed.setup import ray_rollouts

            pool, ahead, learners = ray_rollouts(run, cfg, model, tok, task, reward_fn, "grpo",
                                                 state.get("pending_rollout"), tool_options(cfg))
        elif cfg.async_rollout:
            ahead = rollout_ahead(run, cfg, model, tok, task, reward_fn, state.get("pending_rollout"))
        evaluate = heldout_evaluator(worker, task, tok, cfg, run.log)
        bar = run.progress(cfg.steps, baseline=evaluate)
        for step in range(run.start, cfg.steps):
            t0 = time.time()
            # -- rollout: sample problems, push weights, generate and score n completions each
            groups, metrics = rollout(pool, ahead, task, model, cfg, step)
            # -- advantages, dynamic sampling, learner update(s)
            if cfg.dynamic_sampling:
                groups = drop_flat_groups(groups)
            metrics["groups_used"] = len(groups)
            metrics.update(learn(run, model, ref_model, opt, groups, cfg, tok.pad_token_id, ahead, step, metrics,
                                 learners.update if learners is not None else None))
            done, elapsed, n_samples = step + 1, time.time() - t0, cfg.prompts_per_step * cfg.group_size
            run.log.log(done, **metrics, lr=opt.param_groups[0]["lr"], samples_per_s=n_samples / max(elapsed, 1e-9),
                        samples=done * n_samples, step_s=elapsed)
            bar.update(1)
            bar.set_postfix(reward=f"{metrics['reward_mean']:.3f}", passed=f"{metrics['pass_rate']:.2f}")
            low_entropy = watch_entropy(run, low_entropy, metrics.get("entropy"), cfg, done)

            # -- evaluation and checkpoints
            last = done == cfg.steps or run.budget_spent(cfg.time_budget_s)
            if due(done, cfg.eval_every, last):
                evaluate(done)
            if due(done, cfg.checkpoint_every, last):
                # the next batch, already sampled from older weights: a resumed run needs it to be exact
                pending = ahead.peek(done) if ahead is not None and not last else None
                run.checkpoint(done, low_entropy_steps=low_entropy, pending_rollout=pending)
            if last:
                break
        return run.finish()
