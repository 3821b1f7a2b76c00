"""What the policy-gradient trainers (GRPO, RLOO, PPO) share: the problems of a step, the learner's
batch built from scored groups, the tempered log-probs of completion tokens, and rollout statistics.
"""

from __future__ import annotations

import inspect
import random
from dataclasses import dataclass

import torch

from .losses import token_logprobs
from .rewards import is_truncated
from .rollout import Group


def on_policy_rollout(worker, task, model, cfg, step: int, seed_name: str) -> list[Group]:
    """One step's rollout: the step's problems, the learner's weights pushed to the worker (version
    ``step``), n completions each at the configured temperature, checked to be on-policy."""
    from ..engine import SamplingParams, derive_seed

    problems = sample_problems(task, cfg.seed, step, cfg.prompts_per_step, cfg.levels)
    worker.load_weights(model.state_dict(), version=step)
    sampling = SamplingParams(max_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                              top_p=getattr(cfg, "top_p", 1.0), seed=derive_seed(seed_name, cfg.seed, step))
    groups = worker.rollout(problems, cfg.mode, cfg.group_size, sampling)
    if any(g.version != step for g in groups):
        raise RuntimeError(f"rollout at step {step} came from weights of another version (not on-policy)")
    return groups


def evaluate_on_heldout(worker, task, tok, heldout, cfg, log, bar, step: int) -> None:
    """Greedy held-out pass@1 in the run's mode, logged at ``step`` and written under the progress bar."""
    from ..evaluate import heldout_metrics

    ev = heldout_metrics(worker.engine, task, tok, heldout, (cfg.mode,), cfg.max_new_tokens)
    worker.model.train()
    log.log(step, **ev)
    bar.write(f"step {step}: held-out {cfg.mode} pass@1 {ev[f'eval/{cfg.mode}_pass@1']:.3f}")


def sample_problems(task, seed: int, step: int, count: int, levels: list[int]) -> list:
    """The problems of one step: a pure function of ``(seed, step)``; held-out problems excluded."""
    rng = random.Random(f"grpo-{seed}-{step}")  # name kept: resumed runs see the same problems
    return [task.sample_split(rng, rng.choice(levels), "train") for _ in range(count)]


@dataclass
class Row:
    prompt_ids: list[int]
    token_ids: list[int]
    old_logprobs: list[float]
    advantage: float
    in_loss: bool  # False: overlong-filtered (still scored, no gradient)


@dataclass
class Counts:
    sequences: int  # rows with tokens in the loss
    tokens: int  # tokens in the loss
    max_tokens: int


def make_rows(groups: list[Group], advantages: torch.Tensor, overlong_filter: bool) -> list[Row]:
    return [Row(g.prompt_ids, c.token_ids, c.logprobs, float(a),
                not (overlong_filter and is_truncated(c.finish_reason)))
            for g, adv in zip(groups, advantages) for c, a in zip(g.completions, adv)]


def collate_rows(rows: list[Row], pad_id: int, device) -> dict[str, torch.Tensor]:
    """Right-padded prompt+completion ids, and per completion token: the index of the logit that
    predicts it, the token, its old log-prob, the real-token mask and the loss mask."""
    width = max(len(r.prompt_ids) + len(r.token_ids) for r in rows)
    length = max(len(r.token_ids) for r in rows)
    B = len(rows)
    ids = torch.full((B, width), pad_id, dtype=torch.long)
    attn = torch.zeros((B, width), dtype=torch.long)
    where = torch.zeros((B, length), dtype=torch.long)
    tokens = torch.zeros((B, length), dtype=torch.long)
    old = torch.zeros((B, length))
    real = torch.zeros((B, length), dtype=torch.bool)
    for i, r in enumerate(rows):
        P, L = len(r.prompt_ids), len(r.token_ids)
        ids[i, :P + L] = torch.tensor(r.prompt_ids + r.token_ids)
        attn[i, :P + L] = 1
        where[i, :L] = torch.arange(P - 1, P - 1 + L)
        tokens[i, :L] = torch.tensor(r.token_ids)
        old[i, :L] = torch.tensor(r.old_logprobs)
        real[i, :L] = True
    loss = real & torch.tensor([r.in_loss for r in rows])[:, None]
    adv = torch.tensor([r.advantage for r in rows])
    out = dict(input_ids=ids, attention_mask=attn, where=where, tokens=tokens, old_logp=old, real=real,
               loss_mask=loss, advantages=adv)
    return {k: v.to(device) for k, v in out.items()}


def completion_logits(model, batch: dict, temperature: float) -> torch.Tensor:
    """Logits predicting each completion token, divided by the sampling temperature: [B, T, V].

    Where the model supports it (``logits_to_keep``), the LM head runs only from the first position
    that predicts a completion token onwards, not over the prompts (a large vocabulary makes the
    logits the biggest activation)."""
    where, width = batch["where"], batch["input_ids"].shape[1]
    kw = {}
    if "logits_to_keep" in inspect.signature(model.forward).parameters:
        kw["logits_to_keep"] = width - int(where[batch["real"]].min())
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **kw).logits
    index = (where - (width - logits.shape[1])).clamp(min=0)  # padding positions: any valid index
    return logits.gather(1, index[..., None].expand(-1, -1, logits.shape[-1])).float() / temperature


def learner_logprobs(model, batch: dict, temperature: float) -> torch.Tensor:
    """Log-probs of the completion tokens under the tempered policy: [B, T] (0 on padding)."""
    logp = token_logprobs(completion_logits(model, batch, temperature), batch["tokens"])
    return torch.where(batch["real"], logp, torch.zeros_like(logp))


def micro_batches(rows: list[Row], size: int) -> list[list[Row]]:
    """Rows sorted by length (less padding), in chunks of ``size`` (0: one chunk)."""
    rows = sorted(rows, key=lambda r: len(r.prompt_ids) + len(r.token_ids))
    size = size or len(rows)
    return [rows[i:i + size] for i in range(0, len(rows), size)]


def rollout_stats(groups: list[Group]) -> dict[str, float]:
    totals = torch.tensor([g.totals for g in groups], dtype=torch.float64)
    comps = [c for g in groups for c in g.completions]
    scores = [s for g in groups for s in g.scores]
    return {"reward_mean": float(totals.mean()), "reward_std": float(totals.std(unbiased=False)),
            "pass_rate": sum(s.correct for s in scores) / len(scores),
            "wrong_steps": sum(r.steps_ok is False for g in groups for r in g.rewards) / len(scores),
            "well_formed": sum(s.well_formed for s in scores) / len(scores),
            "zero_var_groups": sum(g.all_equal for g in groups) / len(groups),
            "response_len": sum(len(c.token_ids) for c in comps) / len(comps),
            "truncated": sum(is_truncated(c.finish_reason) for c in comps) / len(comps)}
