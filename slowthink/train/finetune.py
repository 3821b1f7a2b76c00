"""The inner fine-tune of the iterative trainers (STaR, revise): supervised passes over a fixed list of
rendered examples, token-mean loss on the assistant's tokens, a fresh AdamW with linear warm-up then a
constant learning rate. The data order is a pure function of ``(seed, iteration)``."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from ..config import OptimConfig, arg, check_positive, require
from ..tokenizer import Rendered
from .loop import TrainingHalted
from .optimizers import clip_grad, make_optimizer, set_lr, warmup_lr
from .sft import token_mean_backward


@dataclass
class FineTuneConfig(OptimConfig):
    epochs: float = arg(2.0, "inner fine-tune length in passes over the training set ...")
    steps_per_iteration: int = arg(0, "... or this many optimizer steps (0: use epochs)")
    batch_size: int = arg(32, "examples per fine-tuning step")
    lr: float = arg(3e-5, "fine-tuning learning rate (AdamW), constant after warm-up; about the SFT run's final lr "
                    "(a fresh AdamW at 1e-4 took a converged small model from 68% to 50% held-out in 7 steps)")
    warmup_steps: int = arg(10, "linear warm-up steps of each inner fine-tune")
    betas: list[float] = arg([0.9, 0.98])
    micro_batches: int = arg(1, "split each batch into this many length-sorted micro-batches")

    def __post_init__(self):
        super().__post_init__()
        require(self.steps_per_iteration > 0 or self.epochs > 0, "epochs", "must be > 0 when steps_per_iteration=0")
        require(self.steps_per_iteration >= 0, "steps_per_iteration", "must be >= 0 (0: use epochs)")
        check_positive(self, "batch_size")
        require(1 <= self.micro_batches <= self.batch_size, "micro_batches", "must be in 1..batch_size")


@dataclass
class StandaloneFineTuneConfig(FineTuneConfig):
    """A fine-tune run outside a trainer (benchmarks): the fields an iterative trainer's config adds, the seed the
    data order reads and the optimizer ``make_optimizer`` builds."""

    seed: int = arg(0, "seed of the data order")
    optimizer: str = arg("adamw", "adamw, or muon (Muon on the hidden matrices, AdamW on the rest)")


def fine_tune_rendered(model, tok, rendered: list[Rendered], cfg: FineTuneConfig, iteration: int,
                       tag: str = "star") -> dict:
    """Fine-tune on ``rendered`` (consecutive shuffled passes, seeded by ``(tag, seed, iteration)``). Returns
    the mean and last loss and the steps run; raises :class:`TrainingHalted` on a non-finite loss or gradient."""
    if not rendered:
        return {"ft_steps": 0}
    size = min(cfg.batch_size, len(rendered))
    steps = cfg.steps_per_iteration or max(1, math.ceil(cfg.epochs * len(rendered) / size))
    rng, stream = random.Random(f"{tag}-ft-{cfg.seed}-{iteration}"), []
    while len(stream) < steps * size:  # consecutive shuffled passes over the training set
        stream += rng.sample(range(len(rendered)), len(rendered))
    opt = make_optimizer(model, cfg)
    model.train()
    losses = []
    for step in range(steps):
        set_lr(opt, warmup_lr(step, cfg.lr, cfg.warmup_steps))
        opt.zero_grad(set_to_none=True)
        batch = [rendered[i] for i in stream[step * size:(step + 1) * size]]
        loss, _ = token_mean_backward(model, batch, tok.pad_token_id, min(cfg.micro_batches, len(batch)))
        gnorm = clip_grad(model, cfg.grad_clip)
        if not (math.isfinite(loss) and math.isfinite(gnorm)):
            raise TrainingHalted(f"non-finite loss/gradient ({loss}, {gnorm}) in iteration {iteration + 1}, "
                                 f"fine-tuning step {step + 1}")
        opt.step()
        losses.append(loss)
    return {"ft_steps": steps, "ft_loss": sum(losses) / len(losses), "ft_loss_last": losses[-1]}
