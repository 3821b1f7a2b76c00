"""Off-policy correction in the learner: the learner's own log-probs of a batch next to the sampler's.

The sampler (an engine in another process, or weights a few versions old in async training) gives each token a
log-prob that differs from the learner's forward on the same weights version. With ``is_correction`` set, the
learner first computes its own log-probs of the batch, without gradient, on the weights before the update
("learner old", the proximal policy of decoupled PPO); the clipped ratio is then taken against those, and each
token's loss is multiplied by the truncated importance weight ``min(pi_learner_old / pi_sampler, C)``
(``losses.truncated_is_weights``), or, with ``is_mask``, tokens beyond the cap leave the loss
(``losses.within_cap_mask``). The per-step mismatch (mean and max |diff|, KL estimate) is logged with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .batch import Row, collate_rows, learner_logprobs, micro_batches
from .losses import logprob_mismatch, truncated_is_weights, within_cap_mask


@dataclass
class CorrectedRow(Row):
    """A learner row whose ``old_logprobs`` are the learner's own; ``sampler_logprobs`` are the engine's."""

    sampler_logprobs: list[float] = field(default_factory=list)


@torch.no_grad()
def with_learner_logprobs(model, rows: list[Row], cfg, pad_id: int) -> tuple[list[Row], dict[str, float]]:
    """The rows with the learner's log-probs as ``old_logprobs`` (sampler's kept in ``sampler_logprobs``), and
    the sampler/learner mismatch over their tokens. Rows with zero advantage and no KL term are passed through
    unchanged (they add nothing to the gradient, the learner never runs them)."""
    device = next(model.parameters()).device
    todo = [r for r in rows if r.token_ids and (r.advantage != 0.0 or getattr(cfg, "kl_coef", 0) > 0)]
    learner: dict[int, list[float]] = {}
    learners, samplers, masks = [], [], []
    for chunk in micro_batches(todo, cfg.micro_batch_size):
        b = collate_rows(chunk, pad_id, device)
        logp = learner_logprobs(model, b, cfg.temperature)
        for i, r in enumerate(chunk):
            learner[id(r)] = logp[i, :len(r.token_ids)].tolist()
        learners.append(logp.flatten())
        samplers.append(b["old_logp"].flatten())
        masks.append(b.get("act", b["real"]).flatten())  # the tokens the model wrote (not tool responses)
    out = [CorrectedRow(**{**vars(r), "old_logprobs": learner.get(id(r), r.old_logprobs),
                           "sampler_logprobs": r.old_logprobs}) for r in rows]
    stats = logprob_mismatch(torch.cat(learners), torch.cat(samplers), torch.cat(masks)) if learners else {}
    return out, stats


def sampler_logp(rows: list[Row], device) -> torch.Tensor:
    """The rows' sampler log-probs, right-padded with 0: [B, T] (the layout of ``collate_rows``)."""
    out = torch.zeros((len(rows), max(len(r.token_ids) for r in rows)))
    for i, r in enumerate(rows):
        out[i, :len(r.token_ids)] = torch.tensor(getattr(r, "sampler_logprobs", None) or r.old_logprobs)
    return out.to(device)


def correct(token_losses: torch.Tensor, learner_old: torch.Tensor, sampler: torch.Tensor, mask: torch.Tensor,
            cfg) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """Token losses times the truncated importance weights (and, with ``is_mask``, the mask without the tokens
    beyond the cap); also the sums of the weights and of the masked-out tokens over the loss's tokens (their
    count in ``is_tokens``), for the diagnostics."""
    weights = truncated_is_weights(learner_old, sampler, mask, cfg.is_cap, cfg.is_correction)
    kept = within_cap_mask(learner_old, sampler, mask, cfg.is_cap, cfg.is_correction) if cfg.is_mask else \
        mask.bool()
    valid = mask.bool()
    sums = {"is_weight": float(weights[valid].sum()), "is_masked": float((valid & ~kept).sum()),
            "is_tokens": int(valid.sum())}
    return token_losses * weights, kept, sums


__all__ = ["CorrectedRow", "with_learner_logprobs", "sampler_logp", "correct"]
