"""PPO with a learned critic on verifiable rewards (Schulman et al. 2017; as used for LLMs by Ouyang et al. 2022).

Each step samples ``group_size`` completions for each of ``prompts_per_step`` problems and scores them.
A completion's reward sits on its last token. A value model (critic) predicts, at every completion
token, the return from the state before that token; GAE (``gamma``, ``lam``) turns rewards and values
into per-token advantages, and ``returns = advantages + values`` are the critic's targets. Then
``epochs_per_step`` epochs, each over ``minibatches`` shuffled minibatches (one optimizer step each),
minimise the clipped surrogate (token mean) plus ``vf_coef`` x the clipped value loss.

Departures from Ouyang et al. 2022 (and the usual RLHF PPO setups):
- The reward is the task's verifier (correctness + optional format bonus), not a learned reward model.
- The critic is a separate copy of ``init``'s backbone with a fresh, zero-initialised linear head (the
  paper initialises it from the reward model). It starts by predicting 0 everywhere, so the first
  advantages are the (whitened) rewards. Policy and critic have their own AdamW and gradient clipping;
  under Adam, ``vf_coef`` therefore matters mainly through the value-gradient clip.
- No KL by default (``kl_coef=0``: no reference model kept). With ``kl_coef > 0`` the paper's per-token
  penalty ``-kl_coef * (log pi_old - log pi_init)`` (k1, under the sampling temperature) is added to
  each token's reward before GAE, against ``init`` reloaded from disk. No pretraining-loss mix (PPO-ptx).
- Advantages are whitened over the whole rollout batch (not per minibatch); no entropy bonus
  (entropy is only watched, to stop on a collapse). Completions cut at ``max_new_tokens`` are terminal
  (the reward is read there; no bootstrap). Constant learning rates after a linear warm-up.
- Old log-probs are the engine's, recorded while sampling at ``temperature``; the learner uses the same
  tempered distribution, so the ratio is 1 (to float precision) at the first minibatch.

Stops with ``TrainingHalted`` on a non-finite loss/gradient or collapsed entropy (last good checkpoint named).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from ..config import ToolsConfig, arg, check_positive, require
from ..env import tool_options
from ..engine import derive_seed
from .batch import (Row, collate_rows, completion_logits, learner_logprobs, micro_batches, on_policy_rollout,
                    rollout_stats)
from .onpolicy import OnPolicyConfig, heldout_evaluator, reference_model, watch_entropy
from ..train.loop import TrainingRun, due, load_init, resolve_task
from ..train.optimizers import clip_grad, make_optimizer, set_lr, warmup_lr
from .losses import (OBJECTIVES, approx_kl, clip_fraction, clipped_value_loss, entropy_from_logits,
                     gae, masked_sum, masked_whiten, token_logprobs, token_mean_loss)
from .rewards import RewardFn
from .rollout import LocalRolloutWorker


@dataclass
class PPOConfig(ToolsConfig, OnPolicyConfig):
    out: str = arg("runs/ppo", "run folder (config.json, metrics.jsonl, tb/, ckpt/, model/, critic.pt)")
    init: str = arg("", "model folder to start from (required; the critic's backbone too), e.g. runs/sft/model")
    group_size: int = arg(4, "completions sampled per problem (PPO needs no groups; more samples per prompt)")
    lr: float = arg(1e-5, "policy learning rate (AdamW), constant after warm-up (see GRPOConfig.lr)")
    value_lr: float = arg(3e-4, "critic learning rate (its own AdamW with the same betas, weight decay, warm-up "
                                "and gradient clipping), constant after warm-up")
    epochs_per_step: int = arg(4, "passes over each rollout batch")
    minibatches: int = arg(1, "optimizer steps per epoch: the batch is shuffled and split into this many")
    micro_batch_size: int = arg(0, "completions per learner forward (0: a whole minibatch at once)")
    value_clip: float = arg(0.2, "clip the new value to old value +- this in the value loss (0: no clipping)")
    vf_coef: float = arg(0.5, "weight of the value loss")
    gamma: float = arg(1.0, "discount per token")
    lam: float = arg(0.95, "GAE lambda (1: Monte-Carlo returns, 0: one-step TD)")
    whiten_advantages: bool = arg(True, "normalise advantages to zero mean, unit variance over the batch")
    kl_coef: float = arg(0.0, "per-token KL-to-init penalty folded into the reward (0: no reference model)")

    name: ClassVar[str] = "ppo"

    def __post_init__(self):
        super().__post_init__()
        check_positive(self, "minibatches", "value_lr", "vf_coef")
        require(self.is_correction == "none", "is_correction", "is not implemented in PPO (grpo and rloo only); "
                "PPO samples on-policy")
        require(self.learners == 1, "learners", "PPO learns on the driver (learners > 1: grpo and rloo only)")
        require(self.minibatches <= self.prompts_per_step * self.group_size, "minibatches",
                f"must be <= prompts_per_step x group_size ({self.prompts_per_step * self.group_size} completions)")
        require(self.value_clip >= 0, "value_clip", "must be >= 0")
        require(0 <= self.gamma <= 1, "gamma", "must be in [0, 1]")
        require(0 <= self.lam <= 1, "lam", "must be in [0, 1] (GAE lambda)")


class ValueModel(nn.Module):
    """A transformer backbone and a linear head: one value per completion token, read at the position
    that predicts the token (the state before emitting it)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.config.hidden_size, 1)
        nn.init.zeros_(self.head.weight)  # V = 0 everywhere at first: no random offsets in early advantages
        nn.init.zeros_(self.head.bias)

    @classmethod
    def from_pretrained(cls, path: str) -> ValueModel:
        from transformers import AutoModel

        return cls(AutoModel.from_pretrained(path, dtype=torch.float32))

    def forward(self, batch: dict) -> torch.Tensor:
        """Values of a collated batch (``collate_rows``): [B, T], 0 on padding."""
        hidden = self.backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        at = hidden.gather(1, batch["where"][..., None].expand(-1, -1, hidden.shape[-1]))
        values = self.head(at.float()).squeeze(-1)
        return torch.where(batch["real"], values, torch.zeros_like(values))


@dataclass
class PPORow(Row):
    """A learner row with its sequence reward and, per token, the rollout-time value, advantage and return."""

    reward: float = 0.0
    values: list[float] = field(default_factory=list)
    advantages: list[float] = field(default_factory=list)
    returns: list[float] = field(default_factory=list)


def per_token(rows: list[PPORow], name: str, device) -> torch.Tensor:
    """A per-token list field of the rows, right-padded with 0 to the batch's length: [B, T]."""
    out = torch.zeros((len(rows), max(len(r.token_ids) for r in rows)))
    for i, r in enumerate(rows):
        out[i, :len(r.token_ids)] = torch.tensor(getattr(r, name))
    return out.to(device)


# ----------------------------------------------------------------------------- advantages

@torch.no_grad()
def score_rollout(rows: list[PPORow], critic: ValueModel, ref_model, cfg: PPOConfig, pad_id: int) -> dict[str, float]:
    """Fill in the rows' old values, GAE advantages (whitened if configured) and returns. Returns the
    critic's explained variance of the returns (and the mean per-token KL to init with a reference)."""
    device = next(critic.parameters()).device
    kl_sum = 0.0
    for chunk in micro_batches(rows, cfg.micro_batch_size):
        b = collate_rows(chunk, pad_id, device)
        values = critic(b)
        rewards = torch.zeros_like(values)
        last = b["real"].sum(1) - 1
        rewards[torch.arange(len(chunk)), last] = torch.tensor([r.reward for r in chunk], device=device)
        if ref_model is not None:
            kl = torch.where(b["act"], b["old_logp"] - learner_logprobs(ref_model, b, cfg.temperature), 0.0)
            rewards -= cfg.kl_coef * kl
            kl_sum += float(kl.sum())
        adv, ret = gae(rewards, values, b["real"], cfg.gamma, cfg.lam)
        for i, r in enumerate(chunk):
            n = len(r.token_ids)
            r.values, r.advantages, r.returns = values[i, :n].tolist(), adv[i, :n].tolist(), ret[i, :n].tolist()
    flat = {k: torch.tensor([x for r in rows for x in getattr(r, k)], dtype=torch.float64)
            for k in ("values", "advantages", "returns")}
    var_returns = float(flat["returns"].var(unbiased=False))
    out = {"explained_variance": 1 - float((flat["returns"] - flat["values"]).var(unbiased=False)) / var_returns
           if var_returns > 0 else float("nan"),
           "value_mean": float(flat["values"].mean()), "return_mean": float(flat["returns"].mean())}
    if ref_model is not None:
        out["kl_ref"] = kl_sum / len(flat["values"])
    if cfg.whiten_advantages:
        acts = torch.tensor([m for r in rows for m in (r.mask or [1] * len(r.token_ids))], dtype=torch.bool)
        adv = masked_whiten(flat["advantages"].float(), acts).tolist()  # statistics of the model's tokens only
        at = 0
        for r in rows:
            r.advantages, at = adv[at:at + len(r.token_ids)], at + len(r.token_ids)
    return out


# ----------------------------------------------------------------------------- learner

def minibatch_update(model, critic: ValueModel, rows: list[PPORow], cfg: PPOConfig, pad_id: int) -> dict[str, float]:
    """Gradients of one minibatch's loss, clipped surrogate + vf_coef x clipped value loss (both token
    means over the minibatch), accumulated over micro-batches; the caller clips and steps. Returns the
    losses and token means of the diagnostics (entropy of the tempered policy, clip fraction, approx KL)."""
    device = next(model.parameters()).device
    total = sum(r.loss_tokens for r in rows)
    sums = dict.fromkeys(("policy_loss", "value_loss", "entropy", "clip_frac", "approx_kl"), 0.0)
    for chunk in micro_batches(rows, cfg.micro_batch_size):
        b = collate_rows(chunk, pad_id, device)
        mask = b["act"]  # the model's tokens: a tool response is context, neither an action nor a value target
        share = int(mask.sum()) / total  # this micro-batch's share of the minibatch's tokens
        logits = completion_logits(model, b, cfg.temperature)
        logp = token_logprobs(logits, b["tokens"])
        lo, hi = cfg.policy_clip()
        pg_losses = OBJECTIVES[cfg.objective](logp, b["old_logp"], per_token(chunk, "advantages", device), lo, hi,
                                              mask=mask, dual_clip=cfg.dual_clip)
        policy_loss = token_mean_loss(pg_losses, mask, total_tokens=total)
        # clipped_value_loss is a token mean over this micro-batch: weigh it by the micro-batch's share
        old_values, returns = per_token(chunk, "values", device), per_token(chunk, "returns", device)
        value_loss = clipped_value_loss(critic(b), old_values, returns, mask, cfg.value_clip or float("inf")) * share
        (policy_loss + cfg.vf_coef * value_loss).backward()
        with torch.no_grad():
            sums["policy_loss"] += float(policy_loss)
            sums["value_loss"] += float(value_loss)
            sums["entropy"] += float(masked_sum(entropy_from_logits(logits.detach()), mask)) / total
            sums["clip_frac"] += float(clip_fraction(logp, b["old_logp"], mask, cfg.clip_low, cfg.clip_high)) * share
            sums["approx_kl"] += float(approx_kl(logp, b["old_logp"], mask)) * share
    return sums


# ----------------------------------------------------------------------------- training loop

def learn(run: TrainingRun, model, critic: ValueModel, opts: tuple, rows: list[PPORow], cfg: PPOConfig, pad_id: int,
          step: int, metrics: dict) -> dict[str, float]:
    """``epochs_per_step`` passes over the scored rows, each shuffled (a pure function of ``(seed, step, epoch)``)
    into ``minibatches`` optimizer steps of policy and critic; halts the run (logging ``metrics``) on a
    non-finite loss, gradient or entropy. Returns the statistics averaged over the updates."""
    opt, value_opt = opts
    set_lr(opt, warmup_lr(step, cfg.lr, cfg.warmup_steps))
    set_lr(value_opt, warmup_lr(step, cfg.value_lr, cfg.warmup_steps))
    updates = cfg.epochs_per_step * cfg.minibatches
    stats = dict.fromkeys(("policy_loss", "value_loss", "entropy", "clip_frac", "approx_kl", "grad_norm",
                           "value_grad_norm"), 0.0)
    for epoch in range(cfg.epochs_per_step):
        shuffle = torch.Generator().manual_seed(derive_seed("ppo-shuffle", cfg.seed, step, epoch))
        order = torch.randperm(len(rows), generator=shuffle).tolist()
        for part in range(cfg.minibatches):
            opt.zero_grad(set_to_none=True)
            value_opt.zero_grad(set_to_none=True)
            s = minibatch_update(model, critic, [rows[i] for i in order[part::cfg.minibatches]], cfg, pad_id)
            s["grad_norm"], s["value_grad_norm"] = clip_grad(model, cfg.grad_clip), clip_grad(critic, cfg.grad_clip)
            if not all(math.isfinite(v) for v in s.values()):
                run.halt(f"non-finite loss/gradient/entropy at step {step + 1} (policy loss {s['policy_loss']}, "
                         f"value loss {s['value_loss']}, grad norms {s['grad_norm']}/{s['value_grad_norm']}, "
                         f"entropy {s['entropy']})", step + 1, **metrics, **s)
            opt.step()
            value_opt.step()
            for k, v in s.items():
                stats[k] += v / updates
    return stats


def train(cfg: PPOConfig, task=None, model=None, tok=None) -> Path:
    """Run PPO; returns the run folder. ``task``/``model``/``tok`` override the config's specs (tests);
    the critic is always built from ``cfg.init``."""
    cfg, task = resolve_task(cfg, task)
    with TrainingRun(cfg, cfg.name) as run:
        model, tok = load_init(cfg, model, tok)
        model.train()
        critic = ValueModel.from_pretrained(cfg.init).to(cfg.device).train()
        ref_model = reference_model(cfg, model)
        opts = make_optimizer(model, cfg), make_optimizer(critic, cfg)
        state = run.resume(model, tok, optimizer=opts[0], critic=critic, value_optimizer=opts[1])
        low_entropy = state.get("low_entropy_steps", 0)
        worker = LocalRolloutWorker(model, tok, task, RewardFn(format_bonus=cfg.format_reward,
                                                               max_tokens=cfg.max_new_tokens), **tool_options(cfg))
        pool = worker
        if cfg.ray:  # rollout workers as Ray actors; the loop below does not change
            from ..distributed.setup import ray_pool

            pool = ray_pool(run, cfg, model, tok, task, worker.reward_fn, tool_options(cfg))
        evaluate = heldout_evaluator(worker, task, tok, cfg, run.log)
        bar = run.progress(cfg.steps, baseline=evaluate)
        for step in range(run.start, cfg.steps):
            t0 = time.time()
            # -- rollout: sample problems, push weights, generate and score
            groups = on_policy_rollout(pool, task, model, cfg, step, "ppo")
            metrics = {"rollout_s": time.time() - t0, **rollout_stats(groups),
                       **(pool.pop_metrics() if hasattr(pool, "pop_metrics") else {})}
            # -- values and advantages, then epochs of shuffled minibatch updates
            rows = [PPORow(g.prompt_ids, c.token_ids, c.logprobs, 0.0, True, mask, reward=total)
                    for g in groups for c, total, mask in zip(g.completions, g.totals, g.loss_masks)]
            metrics.update(score_rollout(rows, critic, ref_model, cfg, tok.pad_token_id))
            metrics.update(learn(run, model, critic, opts, rows, cfg, tok.pad_token_id, step, metrics))
            done, elapsed = step + 1, time.time() - t0
            run.log.log(done, **metrics, lr=opts[0].param_groups[0]["lr"], value_lr=opts[1].param_groups[0]["lr"],
                        samples_per_s=len(rows) / max(elapsed, 1e-9), samples=done * len(rows), step_s=elapsed)
            bar.update(1)
            bar.set_postfix(reward=f"{metrics['reward_mean']:.3f}", passed=f"{metrics['pass_rate']:.2f}",
                            ev=f"{metrics['explained_variance']:.2f}", kl=f"{metrics['approx_kl']:.1e}")
            low_entropy = watch_entropy(run, low_entropy, metrics["entropy"], cfg, done)

            # -- evaluation and checkpoints
            last = done == cfg.steps or run.budget_spent(cfg.time_budget_s)
            if due(done, cfg.eval_every, last):
                evaluate(done)
            if due(done, cfg.checkpoint_every, last):
                run.checkpoint(done, low_entropy_steps=low_entropy)
            if last:
                break
        run.finish()
        torch.save(critic.state_dict(), run.dir / "critic.pt")
        return run.dir
