"""RLOO: REINFORCE with a leave-one-out baseline (Ahmadian et al. 2024, arXiv:2402.14740).

Each of the k completions of a problem is judged against the mean reward of the *other* k - 1:
``A_i = r_i - mean_{j != i} r_j``, an unbiased baseline that needs no value network and no std
normalisation. Everything else (rollout, rewards, monitoring, resume, halting) is the GRPO loop
(``slowthink.rl.grpo.train``); only the advantage differs.

Departures from the paper:
- The paper's loss is REINFORCE on the whole sequence's log-prob. We keep the clipped-ratio form
  with ``epochs_per_step=1`` (default), where the ratio is exactly 1 and the clip never binds, so the
  gradient is REINFORCE's; the token aggregation is a choice (``loss_agg``), default ``sequence_mean``
  (each completion weighs the same, as in the paper, but its log-prob is length-normalised).
- No KL-shaped reward by default (the paper folds a KL penalty into the reward; ``kl_coef > 0`` adds
  the k3 KL to the loss instead, as GRPO does).
- ``scale_by_std`` is inherited from GRPO's config but has no effect: RLOO never divides by a std.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..config import arg, require
from .grpo import GRPOConfig
from .grpo import train as _train
from .losses import rloo_advantages


@dataclass
class RLOOConfig(GRPOConfig):
    out: str = arg("runs/rloo")
    loss_agg: str = arg("sequence_mean")
    clip_high: float = arg(0.2, "PPO clip above (binds only with epochs_per_step > 1)")

    name: ClassVar[str] = "rloo"

    def advantages(self, rewards: torch.Tensor) -> torch.Tensor:
        return rloo_advantages(rewards)

    def __post_init__(self):
        super().__post_init__()
        require(self.scale_by_std, "scale_by_std", "has no effect in RLOO (no std normalisation); leave it at true")


def train(cfg: RLOOConfig, task=None, model=None, tok=None):
    """Run RLOO; returns the run folder."""
    return _train(cfg, task=task, model=model, tok=tok)
