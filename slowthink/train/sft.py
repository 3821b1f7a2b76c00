"""Supervised fine-tuning on task-generated reference solutions (System-1 and System-2 mixed).

Departures from a textbook SFT loop:
- Data is generated, not loaded: batch ``i`` is a pure function of ``(seed, i)``, so resume needs no
  data-loader state and a resumed run sees exactly the batches an uninterrupted one would.
- One model learns both modes: each example is System-2 (worked solution) with probability
  ``system2_fraction``, else System-1 (direct answer); the chat template's thinking switch tells
  them apart. The loss is the token mean over assistant tokens only.
- Held-out problems (hash bucket 0 of the task's problem keys) never appear in training.

Phases: set up → (resume) → train with periodic eval and atomic checkpoints → save ``model/``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import (EvalConfig, GenerationConfig, LoraConfig, OptimConfig, ResumeConfig, RunConfig, WeightsConfig,
                      arg, check_non_negative, check_positive, require)
from .data import check_references, collate, sample_examples
from ..chat import MODES
from ..evaluate import heldout_metrics
from ..report import heldout_line
from .optimizers import SFT_OPTIMIZERS, clip_grad, make_optimizer, set_lr, warmup_cosine_lr
from .lora import prepare
from .loop import TrainingRun, due, heldout_problems, resolve_task


@dataclass
class SFTConfig(LoraConfig, WeightsConfig, EvalConfig, OptimConfig, GenerationConfig, ResumeConfig, RunConfig):
    out: str = arg("runs/sft")
    level_weights: list[float] = arg([], "sampling weight of each level (default: uniform)")
    system2_fraction: float = arg(0.75, "share of examples with a worked solution (the rest answer directly)")
    model: str = arg("small", "model preset (tiny/small/medium/large) or a model folder to start from")
    steps: int = arg(1000, "optimizer steps")
    batch_size: int = arg(64, "examples per step")
    lr: float = arg(3e-3, "peak learning rate (cosine decay to min_lr_ratio x lr)")
    min_lr_ratio: float = arg(0.1, "final learning rate as a fraction of lr (cosine decay)")
    warmup_steps: int = arg(50)
    weight_decay: float = arg(0.01)
    betas: list[float] = arg([0.9, 0.98])
    optimizer: str = arg("muon", "muon (Muon on the hidden matrices, AdamW on embeddings and norms, one lr: Muon's "
                                 "updates are scaled to AdamW's RMS), or adamw; muon learns several times faster here "
                                 "(benchmarks/results/sft_optimizers.json)")
    micro_batches: int = arg(2, "split each batch into this many length-sorted micro-batches (less padding)")
    eval_every: int = arg(200)
    max_new_tokens: int = arg(160, "generation limit during evaluation")
    checkpoint_every: int = arg(100)
    snapshot_every: int = arg(0, "also keep the model of every N-th step in snapshots/step_N (0: none); "
                                 "the intermediate models that search and critic experiments start from")
    log_every: int = arg(10, "log training metrics every N steps")

    def __post_init__(self):
        super().__post_init__()
        check_positive(self, "steps", "batch_size", "log_every")
        require(0.0 <= self.system2_fraction <= 1.0, "system2_fraction", "must be in [0, 1]")
        require(0.0 <= self.min_lr_ratio <= 1.0, "min_lr_ratio", "must be in [0, 1]")
        require(not self.level_weights or bool(self.levels), "level_weights", "give the levels they weigh too")
        require(not self.level_weights or (len(self.level_weights) == len(self.levels)
                                           and all(w >= 0 for w in self.level_weights) and sum(self.level_weights) > 0),
                "level_weights", "one non-negative weight per level, not all zero")
        require(self.optimizer in SFT_OPTIMIZERS, "optimizer", f"must be one of {SFT_OPTIMIZERS}")
        check_non_negative(self, "snapshot_every")
        require(1 <= self.micro_batches <= self.batch_size, "micro_batches", "must be in 1..batch_size")


def lr_at(step: int, cfg: SFTConfig) -> float:
    """Linear warm-up, then cosine decay from lr to lr * min_lr_ratio."""
    return warmup_cosine_lr(step, cfg.lr, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)


def token_mean_backward(model, rendered, pad_id: int, micro_batches: int) -> tuple[float, int]:
    """Backward of the token-mean loss over the whole batch, computed in length-sorted micro-batches.

    Sorting by length before splitting means short (System-1) rows are not padded to the length of
    long (System-2) rows; weighting each micro-batch by its share of target tokens keeps the
    gradient equal to the full batch's token-mean gradient.
    """
    order = sorted(rendered, key=lambda r: len(r.ids))
    size = math.ceil(len(order) / micro_batches)
    chunks = [order[i:i + size] for i in range(0, len(order), size)]
    counts = [sum(sum(r.mask[1:]) for r in c) for c in chunks]  # labels are shifted by one inside HF
    total = max(1, sum(counts))
    loss_sum, seen = 0.0, 0
    for chunk, count in zip(chunks, counts):
        if count == 0:
            continue
        batch = {k: v.to(model.device) for k, v in collate(chunk, pad_id).items()}
        loss = model(**batch).loss
        (loss * (count / total)).backward()
        loss_sum += loss.item() * count
        seen += int(batch["attention_mask"].sum())
    return loss_sum / total, seen


def train(cfg: SFTConfig, task=None, model=None, tok=None) -> Path:
    """Run SFT; returns the run folder. ``task``/``model``/``tok`` override the config's specs (tests)."""
    from ..engine import Engine
    from ..models import build_or_load, count_parameters

    cfg, task = resolve_task(cfg, task)
    check_references(task, cfg.levels, cfg.system2_fraction)  # before the run folder is written
    with TrainingRun(cfg, "sft") as run:
        if model is None:
            model, tok = build_or_load(cfg.model, tok, seed=cfg.seed)
        model = prepare(model, cfg, rl=False).train()  # dtype, device, gradient checkpointing, LoRA
        opt = make_optimizer(model, cfg)
        run.resume(model, tok, optimizer=opt)
        engine = Engine(model, tok)
        heldout = heldout_problems(task, cfg)

        def evaluate(done: int) -> None:
            if not heldout:
                return
            metrics = heldout_metrics(engine, task, tok, heldout, max_tokens=cfg.max_new_tokens)
            model.train()
            run.log.log(done, **metrics)
            bar.write(f"step {done}: " + "; ".join(heldout_line(metrics, mode) for mode in MODES))

        bar = run.progress(cfg.steps, baseline=lambda step: run.log.log(step, params=count_parameters(model)))
        t0, tokens = time.time(), 0
        for step in range(run.start, cfg.steps):
            examples = sample_examples(task, tok, cfg.seed, step, cfg.batch_size, cfg.levels, cfg.system2_fraction,
                                       cfg.level_weights)
            set_lr(opt, lr_at(step, cfg))
            opt.zero_grad(set_to_none=True)
            loss, n_tokens = token_mean_backward(model, [e.rendered for e in examples], tok.pad_token_id,
                                                 cfg.micro_batches)
            if not math.isfinite(loss):
                run.halt(f"non-finite loss ({loss}) at step {step + 1}")
            gnorm = clip_grad(model, cfg.grad_clip)
            opt.step()
            tokens += n_tokens
            done, last = step + 1, step + 1 == cfg.steps
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")
            if due(done, cfg.log_every, last):
                run.log.log(done, loss=loss, lr=opt.param_groups[0]["lr"], grad_norm=gnorm,
                            tokens_per_s=tokens / max(time.time() - t0, 1e-9))
            if due(done, cfg.eval_every, last):
                evaluate(done)
            if due(done, cfg.checkpoint_every, last):
                run.checkpoint(done)
            if cfg.snapshot_every and done % cfg.snapshot_every == 0:
                run.save_model(run.dir / "snapshots" / f"step_{done}")
        return run.finish()
