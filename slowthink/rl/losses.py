"""The RL math: advantages, clipped policy losses, loss aggregations, KL estimators, DPO.

Every function here is pure (tensors in, tensors out, no state) and each variant has its own name,
so a trainer reads as the algorithm it implements: GRPO = ``group_advantages`` +
``clipped_pg_token_losses`` + ``sequence_mean_loss``; Dr. GRPO = ``group_advantages(scale_by_std=False)``
+ ``constant_normalizer_loss``; DAPO = asymmetric clips + ``token_mean_loss``.

Shapes and conventions used throughout:
- ``[B, T]`` tensors are per completion token; ``mask`` is 1 (or True) on real tokens and 0 on
  padding, and is a prefix (ones, then zeros). Padding positions never leak into a result, even if
  they hold inf or NaN, and a fully masked row or batch gives zeros, never NaN.
- Log-probabilities are of the sampled tokens, already aligned with them (``token_logprobs`` of the
  logits that *predicted* each token; shifting by one is the caller's job).
- Losses are to be minimised. Diagnostics (``clip_fraction``, ``approx_kl``) are detached.

Convention choices (also in docs/papers.md):
- Group std is the population std (divide by n). GRPO (arXiv:2402.03300) writes ``std(r)`` without
  saying which; TRL and verl use ``torch.std`` (sample std, divide by n - 1). For n = 4 the two
  differ by a factor sqrt(4/3) ~ 1.15 in the advantage scale. A group whose rewards are all equal
  gets exactly zero advantages.
- PPO's value loss carries the 0.5 factor (as in cleanrl and OpenAI baselines).
- ``sequence_mean_loss`` averages over sequences that have at least one real token; fully masked
  rows (batch padding) do not dilute the mean.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "masked_sum", "masked_mean", "masked_whiten",
    "group_advantages", "rloo_advantages", "gae",
    "policy_ratio_terms", "clipped_pg_token_losses", "clip_fraction", "approx_kl",
    "sequence_mean_loss", "token_mean_loss", "constant_normalizer_loss",
    "kl_k1", "kl_k3", "clipped_value_loss", "dpo_loss",
    "token_logprobs", "entropy_from_logits",
    "gspo_token_losses", "cispo_token_losses", "OBJECTIVES",
    "truncated_is_weights", "within_cap_mask", "logprob_mismatch", "staleness_stats",
]


# ----------------------------------------------------------------------------- masked helpers

def _valid(mask: torch.Tensor) -> torch.Tensor:
    return mask if mask.dtype == torch.bool else mask != 0


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim=None) -> torch.Tensor:
    """Sum of ``x`` over positions where ``mask`` is set (padding values, even NaN, are ignored)."""
    x = torch.where(_valid(mask), x, torch.zeros((), dtype=x.dtype, device=x.device))
    return x.sum() if dim is None else x.sum(dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim=None) -> torch.Tensor:
    """Mean of ``x`` over positions where ``mask`` is set; 0 where there are none (not NaN)."""
    count = _valid(mask).to(x.dtype)
    count = count.sum() if dim is None else count.sum(dim)
    return masked_sum(x, mask, dim) / count.clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Normalise ``x`` to unit (population) variance over the masked positions of the whole tensor.

    With ``shift_mean`` the result also has zero mean (PPO advantage normalisation); without it the
    mean is kept (as TRL does for rewards). Padding positions come back as 0.
    """
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return torch.where(_valid(mask), out, torch.zeros((), dtype=out.dtype, device=out.device))


# ----------------------------------------------------------------------------- advantages

def group_advantages(rewards: torch.Tensor, scale_by_std: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """GRPO group-relative advantages: ``(r - mean(group)) / (std(group) + eps)``, shape ``[G, n]``.

    ``rewards[g]`` are the n completions sampled for prompt g. ``std`` is the population std (divide
    by n; see the module docstring). ``scale_by_std=False`` is Dr. GRPO, which drops the division
    because it up-weights prompts that are nearly always (or never) solved. A group whose rewards are
    all equal gets exactly zero advantages (no rounding residue blown up by ``1 / eps``).
    """
    if rewards.ndim != 2:
        raise ValueError(f"rewards must be [groups, samples_per_group], got shape {tuple(rewards.shape)}")
    if not rewards.is_floating_point():
        rewards = rewards.float()
    centered = rewards - rewards.mean(dim=1, keepdim=True)
    if scale_by_std:
        centered = centered / (rewards.std(dim=1, unbiased=False, keepdim=True) + eps)
    return zero_flat_groups(rewards, centered)


def zero_flat_groups(rewards: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """Exactly 0 for every group whose rewards are all equal (float baselines can leave a residue such
    as 1e-17; the learner skips exact-zero rows, and std scaling would blow a residue up by ``1 / eps``)."""
    flat = (rewards == rewards[:, :1]).all(dim=1, keepdim=True)
    return torch.where(flat, torch.zeros_like(advantages), advantages)


def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """REINFORCE leave-one-out: ``r_i - mean(r_j for j != i)`` within each group, shape ``[G, n]``.

    Equal to ``n / (n - 1) * (r_i - mean(group))``; the baseline never includes the sample's own
    reward, so the estimate stays unbiased. Needs n >= 2. A group whose rewards are all equal gets
    exactly zero advantages.
    """
    if rewards.ndim != 2:
        raise ValueError(f"rewards must be [groups, samples_per_group], got shape {tuple(rewards.shape)}")
    if not rewards.is_floating_point():
        rewards = rewards.float()
    n = rewards.shape[1]
    if n < 2:
        raise ValueError("rloo_advantages needs at least 2 samples per group (the baseline is the others' mean)")
    others_mean = (rewards.sum(dim=1, keepdim=True) - rewards) / (n - 1)
    return zero_flat_groups(rewards, rewards - others_mean)


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over token sequences; returns ``(advantages, returns)`` [B, T].

    ``delta_t = r_t + gamma * V_{t+1} - V_t`` and ``A_t = delta_t + gamma * lam * A_{t+1}``, run
    backwards over each row's real tokens. A row that ends before position T - 1 (padding after it)
    is terminal: the value after its last real token is 0, so its terminal reward is read at that
    token. ``values`` is either ``[B, T]`` (every row terminal) or ``[B, T + 1]``, whose last column
    bootstraps rows still running at the final position (truncated by the length limit).
    ``returns = advantages + values`` (the value-function target). Both are 0 on padding. Computed
    without gradient tracking.
    """
    if rewards.shape != mask.shape or rewards.ndim != 2:
        raise ValueError(f"rewards and mask must both be [B, T], got {tuple(rewards.shape)} and {tuple(mask.shape)}")
    B, T = rewards.shape
    valid = _valid(mask)
    if T > 1 and (valid[:, 1:] & ~valid[:, :-1]).any():
        raise ValueError("gae needs each mask row to be ones then zeros (padding only after the end)")
    if values.shape == (B, T):
        values = F.pad(values, (0, 1))
    elif values.shape != (B, T + 1):
        raise ValueError(f"values must be [B, T] or [B, T + 1] (bootstrap column), got {tuple(values.shape)} "
                         f"for rewards {tuple(rewards.shape)}")
    with torch.no_grad():
        zero = torch.zeros((), dtype=rewards.dtype, device=rewards.device)
        r = torch.where(valid, rewards, zero)
        v = torch.where(valid, values[:, :T], zero)
        # token t has a successor if t + 1 is real, or t is the real last column (bootstrap value)
        cont = torch.cat([valid[:, 1:], valid[:, -1:]], dim=1)
        next_v = torch.where(cont, torch.cat([v[:, 1:], values[:, T:]], dim=1), zero)
        deltas = r + gamma * next_v - v
        adv = torch.zeros_like(r)
        running = torch.zeros_like(r[:, 0])
        for t in reversed(range(T)):
            running = deltas[:, t] + gamma * lam * torch.where(cont[:, t], running, zero)
            adv[:, t] = running
        adv = torch.where(valid, adv, zero)
        return adv, torch.where(valid, adv + v, zero)


# ----------------------------------------------------------------------------- policy-gradient loss

def policy_ratio_terms(logp_new: torch.Tensor, logp_old: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log_ratio, ratio)`` with ``log_ratio = logp_new - logp_old`` and ``ratio = exp(log_ratio)``.

    ``logp_old`` is treated as a constant (detached); gradients flow through ``logp_new`` only.
    """
    log_ratio = logp_new - logp_old.detach()
    return log_ratio, torch.exp(log_ratio)


def _dual_clip(losses: torch.Tensor, advantages: torch.Tensor, dual_clip: float | None) -> torch.Tensor:
    """Dual-clip PPO (Ye et al. 2020, arXiv:1912.09729): for A < 0 the loss is capped at ``c * |A|``, so a
    token the policy now likes far more than the sampler did (ratio > c) cannot dominate an off-policy batch.
    ``dual_clip`` None or 0: off. Where the cap binds the loss is constant (zero gradient)."""
    if not dual_clip:
        return losses
    if dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1 (the cap c in c * |A|), got {dual_clip}")
    capped = torch.minimum(losses, -dual_clip * advantages)
    return torch.where(advantages < 0, capped, losses)


def clipped_pg_token_losses(logp_new: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor,
                            eps_low: float = 0.2, eps_high: float = 0.2, mask: torch.Tensor | None = None,
                            dual_clip: float | None = None) -> torch.Tensor:
    """PPO clipped surrogate per token, with separate lower and upper clips (DAPO clip-higher).

    ``loss_t = -min(ratio_t * A_t, clip(ratio_t, 1 - eps_low, 1 + eps_high) * A_t)``, shape [B, T].
    ``advantages`` is per sequence ``[B]`` (broadcast over tokens: GRPO, RLOO) or per token
    ``[B, T]`` (GAE). Where the clip is active the loss is constant in ``logp_new`` (zero gradient).
    ``dual_clip`` c > 1 also caps the loss of negative-advantage tokens at ``c * |A|`` (``_dual_clip``).
    ``mask`` is unused (token-level objective; the argument keeps every ``OBJECTIVES`` entry's signature).
    Padding is not removed here; pass the result to one of the aggregations with the mask.
    """
    if advantages.ndim == 1:
        advantages = advantages[:, None]
    advantages = advantages.detach()
    _, ratio = policy_ratio_terms(logp_new, logp_old)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high) * advantages
    return _dual_clip(-torch.minimum(unclipped, clipped), advantages.expand_as(ratio), dual_clip)


def gspo_token_losses(logp_new: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor,
                      eps_low: float = 3e-4, eps_high: float = 4e-4, mask: torch.Tensor | None = None,
                      dual_clip: float | None = None) -> torch.Tensor:
    """GSPO (Zheng et al. 2025, arXiv:2507.18071): one importance ratio per sequence, length-normalised,
    ``s_i = exp(mean_t(logp_new - logp_old))`` over the row's real tokens, clipped per sequence:
    ``loss_i = -min(s_i * A_i, clip(s_i, 1 - eps_low, 1 + eps_high) * A_i)``.

    Returned as [B, T] with ``loss_i`` on every token of row i, so ``sequence_mean_loss`` gives the
    paper's objective (mean over sequences). The paper's clip range is about 1e-3 wide (3e-4 / 4e-4 here by
    default), since a sequence-level ratio moves far less than a token's. ``mask`` is required (which
    tokens belong to the mean); padding positions, even NaN, do not reach the ratio. ``advantages`` per
    sequence ``[B]`` (the paper) or per token ``[B, T]`` (PPO's GAE: each token's A with its sequence's
    ratio). ``dual_clip`` as in ``clipped_pg_token_losses``, on the sequence ratio.
    """
    if mask is None:
        raise ValueError("gspo_token_losses needs the mask (the sequence ratio is a mean over real tokens)")
    if advantages.ndim == 1:
        advantages = advantages[:, None]
    advantages = advantages.detach().expand_as(logp_new)
    log_ratio, _ = policy_ratio_terms(logp_new, logp_old)
    seq_ratio = torch.exp(masked_mean(log_ratio, mask, dim=-1))[:, None]  # [B, 1]
    unclipped = seq_ratio * advantages
    clipped = torch.clamp(seq_ratio, 1.0 - eps_low, 1.0 + eps_high) * advantages
    return _dual_clip(-torch.minimum(unclipped, clipped), advantages, dual_clip)


def cispo_token_losses(logp_new: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor,
                       eps_low: float = 0.2, eps_high: float = 0.2, mask: torch.Tensor | None = None,
                       dual_clip: float | None = None) -> torch.Tensor:
    """CISPO (MiniMax-M1, arXiv:2506.13585): ``loss_t = -sg(clip(ratio_t, 1 - eps_low, 1 + eps_high)) * A_t *
    logp_new_t``.

    The clipped ratio is a stop-gradient weight, so every token keeps the gradient ``-w_t * A_t`` of its
    log-prob (PPO's clip zeroes it instead); at ratio 1 the gradient equals PPO's. MiniMax-M1 sets no lower
    clip in practice (a large ``eps_low`` such as 1.0 does the same). ``mask``/``dual_clip`` unused (the
    weight is already bounded by ``1 + eps_high``).
    """
    if advantages.ndim == 1:
        advantages = advantages[:, None]
    _, ratio = policy_ratio_terms(logp_new, logp_old)
    weight = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high).detach()
    return -weight * advantages.detach() * logp_new


# A trainer picks its policy loss by name (``objective``); every entry has the same signature and returns
# [B, T] token losses for one of the aggregations.
OBJECTIVES = {"ppo_clip": clipped_pg_token_losses, "gspo": gspo_token_losses, "cispo": cispo_token_losses}


# ----------------------------------------------------------------------------- off-policy correction

def truncated_is_weights(learner_logp: torch.Tensor, sampler_logp: torch.Tensor, mask: torch.Tensor,
                         cap: float = 2.0, level: str = "token") -> torch.Tensor:
    """Truncated importance weights between the learner's old policy and the sampler that produced the tokens:
    ``w = min(pi_learner_old / pi_sampler, cap)``, detached, [B, T] (1 on padding).

    The sampler (an inference engine, or older weights in async training) and the learner's own forward
    disagree on log-probs; multiplying each token's loss by ``w`` corrects for that (Yao et al. 2025, "Your
    efficient RL framework secretly brings you off-policy RL training"). ``level="sequence"`` uses the product
    over the row's real tokens (``exp(sum of log-ratios)``, capped) for every token of the row. ``cap`` C >= 1.
    """
    if cap < 1:
        raise ValueError(f"cap must be >= 1 (weights are truncated at C), got {cap}")
    valid = _valid(mask)
    with torch.no_grad():
        log_w = torch.where(valid, learner_logp - sampler_logp, torch.zeros((), dtype=learner_logp.dtype))
        if level not in ("token", "sequence"):
            raise ValueError(f"level must be 'token' or 'sequence', got {level!r}")
        if level == "sequence":  # one weight per row: the product of its token ratios
            log_w = log_w.sum(dim=-1, keepdim=True).expand_as(log_w)
        w = torch.exp(torch.clamp(log_w, max=math.log(cap)))
        return torch.where(valid, w, torch.ones_like(w))


def within_cap_mask(learner_logp: torch.Tensor, sampler_logp: torch.Tensor, mask: torch.Tensor,
                    cap: float = 2.0, level: str = "token") -> torch.Tensor:
    """``mask`` with the tokens (or, ``level="sequence"``, whole rows) whose learner/sampler ratio lies outside
    ``[1 / cap, cap]`` removed: the masking alternative to truncation (the token leaves the loss instead of
    being down-weighted). Boolean [B, T]."""
    if cap < 1:
        raise ValueError(f"cap must be >= 1, got {cap}")
    valid = _valid(mask)
    with torch.no_grad():
        log_r = torch.where(valid, learner_logp - sampler_logp, torch.zeros((), dtype=learner_logp.dtype))
        if level == "sequence":
            log_r = log_r.sum(dim=-1, keepdim=True).expand_as(log_r)
        elif level != "token":
            raise ValueError(f"level must be 'token' or 'sequence', got {level!r}")
        return valid & (log_r.abs() <= math.log(cap))


def logprob_mismatch(learner_logp: torch.Tensor, sampler_logp: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """How far the sampler's log-probs are from the learner's on the same tokens: mean and max of
    ``|learner - sampler|`` and the k3 estimate of KL(sampler || learner), over real tokens. Plain floats."""
    valid = _valid(mask)
    if not valid.any():
        return {"logp_diff_mean": 0.0, "logp_diff_max": 0.0, "sampler_kl": 0.0}
    with torch.no_grad():
        d = (learner_logp - sampler_logp)[valid].double()
        return {"logp_diff_mean": float(d.abs().mean()), "logp_diff_max": float(d.abs().max()),
                "sampler_kl": float((torch.exp(d) - d - 1.0).mean())}


def staleness_stats(learner_version: int, sample_versions) -> dict[str, float]:
    """Policy lag of a batch: ``learner_version - version`` of each sample's weights (mean and max)."""
    lags = [learner_version - v for v in sample_versions]
    if not lags:
        return {"staleness_mean": 0.0, "staleness_max": 0.0}
    if min(lags) < 0:
        raise ValueError(f"a sample's version is newer than the learner's ({learner_version}): {max(sample_versions)}")
    return {"staleness_mean": sum(lags) / len(lags), "staleness_max": float(max(lags))}


def clip_fraction(logp_new: torch.Tensor, logp_old: torch.Tensor, mask: torch.Tensor,
                  eps_low: float = 0.2, eps_high: float = 0.2) -> torch.Tensor:
    """Share of real tokens whose ratio lies outside ``[1 - eps_low, 1 + eps_high]`` (cleanrl's clipfrac).

    This counts tokens outside the band whatever the advantage's sign, as cleanrl does; the clip
    removes the gradient of only those where it also lowers the objective. Detached scalar.
    """
    with torch.no_grad():
        _, ratio = policy_ratio_terms(logp_new, logp_old)
        outside = (ratio < 1.0 - eps_low) | (ratio > 1.0 + eps_high)
        return masked_mean(outside.to(ratio.dtype), mask)


def approx_kl(logp_new: torch.Tensor, logp_old: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """cleanrl's approximate KL(old || new): masked mean of ``(ratio - 1) - log ratio`` (k3). Detached."""
    with torch.no_grad():
        log_ratio, ratio = policy_ratio_terms(logp_new, logp_old)
        return masked_mean((ratio - 1.0) - log_ratio, mask)


# ----------------------------------------------------------------------------- aggregations

def sequence_mean_loss(token_losses: torch.Tensor, mask: torch.Tensor,
                       num_sequences: int | None = None) -> torch.Tensor:
    """GRPO: mean over each sequence's real tokens, then mean over sequences.

    Every sequence weighs the same, so a token of a long completion counts less than one of a short
    completion (the length bias Dr. GRPO points out). Rows with no real token are left out of the
    sequence count. ``num_sequences`` overrides that count, for micro-batches of a larger batch.
    """
    per_seq = masked_mean(token_losses, mask, dim=-1)
    if num_sequences is None:
        return per_seq.sum() / _valid(mask).any(dim=-1).sum().clamp(min=1)
    return per_seq.sum() / max(1, num_sequences)


def token_mean_loss(token_losses: torch.Tensor, mask: torch.Tensor, total_tokens: int | None = None) -> torch.Tensor:
    """DAPO: sum over all real tokens / number of real tokens (every token weighs the same).

    ``total_tokens`` overrides the count, for micro-batches of a larger batch (pass the whole
    batch's real-token count so the micro-batch losses add up to the batch's token mean).
    """
    if total_tokens is None:
        return masked_sum(token_losses, mask) / _valid(mask).sum().clamp(min=1)
    return masked_sum(token_losses, mask) / max(1, total_tokens)


def constant_normalizer_loss(token_losses: torch.Tensor, mask: torch.Tensor, max_tokens: int,
                             num_sequences: int | None = None) -> torch.Tensor:
    """Dr. GRPO: sum over all real tokens / (B * max_tokens), a constant that ignores lengths.

    ``max_tokens`` is the generation budget (fixed for the run), so neither short nor long
    completions are favoured. ``num_sequences`` overrides B, for micro-batches of a larger batch.
    """
    if max_tokens <= 0:
        raise ValueError(f"max_tokens must be > 0 (the generation limit), got {max_tokens}")
    B = token_losses.shape[0] if num_sequences is None else num_sequences
    return masked_sum(token_losses, mask) / (max(1, B) * max_tokens)


# ----------------------------------------------------------------------------- KL to a reference

def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k1 estimate of KL(policy || ref) from policy samples: ``logp - ref_logp`` (unbiased, can be < 0)."""
    return logp - ref_logp


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(policy || ref): ``exp(ref - logp) - (ref - logp) - 1`` (unbiased, >= 0).

    Schulman's low-variance estimator, the one GRPO adds to its loss. Zero, with zero gradient,
    where the two log-probs agree. As veRL does, the log-ratio is clamped to [-20, 20] (exp overflows
    float32 past ~88 nats: inf, then NaN gradients) and the result to [-10, 10].
    """
    d = torch.clamp(ref_logp - logp, -20.0, 20.0)
    return torch.clamp(torch.exp(d) - d - 1.0, -10.0, 10.0)


# ----------------------------------------------------------------------------- value and DPO losses

def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                       mask: torch.Tensor, clip: float) -> torch.Tensor:
    """PPO clipped value loss: ``0.5 * masked_mean(max((V - R)^2, (V_old + clip(V - V_old, ±clip) - R)^2))``.

    Taking the max means the new value cannot gain by moving more than ``clip`` from the value at
    rollout time; the 0.5 factor follows cleanrl / OpenAI baselines. Token mean over real tokens.
    """
    old_values, returns = old_values.detach(), returns.detach()
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    per_token = torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)
    return 0.5 * masked_mean(per_token, mask)


def dpo_loss(policy_chosen_logp: torch.Tensor, policy_rejected_logp: torch.Tensor,
             ref_chosen_logp: torch.Tensor, ref_rejected_logp: torch.Tensor,
             beta: float = 0.1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO sigmoid loss from sequence-level (summed over completion tokens) log-probs, all shape [B].

    ``margin = (pi_c - ref_c) - (pi_r - ref_r)``; ``loss = mean(-logsigmoid(beta * margin))``, which is
    log 2 when the policy still equals the reference. Also returns the implicit rewards
    ``beta * (pi - ref)`` of the chosen and rejected completions (detached, per pair).
    """
    chosen = policy_chosen_logp - ref_chosen_logp.detach()
    rejected = policy_rejected_logp - ref_rejected_logp.detach()
    loss = -F.logsigmoid(beta * (chosen - rejected)).mean()
    return loss, (beta * chosen).detach(), (beta * rejected).detach()


# ----------------------------------------------------------------------------- from logits

def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Log-probability of each token under its logits: ``log_softmax(logits)[..., token]``, [B, T, V] -> [B, T].

    Computed as ``logit[token] - logsumexp(logits)`` (stable for large logits, no full log-softmax
    tensor kept); half-precision logits are upcast to float32 first.
    """
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    picked = logits.gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the softmax distribution per position, [..., V] -> [...] (in nats).

    Logits of -inf (filtered tokens) are allowed: they contribute 0, not NaN.
    """
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    logp = torch.log_softmax(logits, dim=-1)
    p = logp.exp()
    return -(p * torch.nan_to_num(logp, neginf=0.0)).sum(dim=-1)
