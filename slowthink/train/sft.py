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

import torch

from ..config import arg, check_device, require, to_dict
from .data import collate, sample_examples
from ..evaluate import heldout_metrics
from .optimizers import SFT_OPTIMIZERS, make_optimizer
from .loop import TrainingHalted, open_run, resolve_task
from .runlog import RunLog, latest_checkpoint, load_checkpoint, save_checkpoint, truncate_metrics


@dataclass
class SFTConfig:
    out: str = arg("runs/sft", "run folder (config, metrics.jsonl, tb/, ckpt/, model/)")
    task: str = arg("arithmetic", "task name or path/to/file.py:ClassName")
    task_args: dict = arg({}, "task constructor arguments, e.g. op=mul,max_level=5")
    levels: list[int] = arg([1, 2, 3], "difficulty levels to train on")
    level_weights: list[float] = arg([], "sampling weight of each level (default: uniform)")
    system2_fraction: float = arg(0.5, "share of examples with a worked solution (the rest answer directly)")
    model: str = arg("small", "model preset (tiny/small/medium/large) or a model folder to start from")
    steps: int = arg(1000, "optimizer steps")
    batch_size: int = arg(64, "examples per step")
    lr: float = arg(3e-3, "peak learning rate (AdamW)")
    min_lr_ratio: float = arg(0.1, "final learning rate as a fraction of lr (cosine decay)")
    warmup_steps: int = arg(50, "linear warm-up steps")
    weight_decay: float = arg(0.01, "AdamW weight decay")
    betas: list[float] = arg([0.9, 0.98], "AdamW betas")
    optimizer: str = arg("adamw", "adamw, or muon (Muon on the hidden matrices, AdamW on embeddings and norms, "
                                  "one lr: Muon's updates are scaled to AdamW's RMS)")
    micro_batches: int = arg(2, "split each batch into this many length-sorted micro-batches (less padding)")
    grad_clip: float = arg(1.0, "clip the global gradient norm to this value (0: off)")
    seed: int = arg(0, "seed for model init and data")
    eval_every: int = arg(200, "evaluate greedy held-out accuracy every N steps (0: only at the end)")
    eval_per_level: int = arg(32, "held-out problems per level for the periodic evaluation")
    max_new_tokens: int = arg(160, "generation limit during evaluation")
    checkpoint_every: int = arg(100, "write a resumable checkpoint every N steps")
    snapshot_every: int = arg(0, "also keep the model of every N-th step in snapshots/step_N (0: none); "
                                 "the intermediate models that search and critic experiments start from")
    log_every: int = arg(10, "log training metrics every N steps")
    threads: int = arg(0, "torch threads (0: all cores)")
    device: str = arg("cpu", "torch device to train on (cpu, cuda, cuda:1, ...)")
    resume: bool = arg(True, "continue from out/ckpt if it exists")
    progress: bool = arg(True, "show a progress bar")

    def __post_init__(self):
        check_device(self.device)
        require(self.steps > 0, "steps", "must be > 0")
        require(self.batch_size > 0, "batch_size", "must be > 0")
        require(self.lr > 0, "lr", "must be > 0")
        require(0.0 <= self.system2_fraction <= 1.0, "system2_fraction", "must be in [0, 1]")
        require(0.0 <= self.min_lr_ratio <= 1.0, "min_lr_ratio", "must be in [0, 1]")
        require(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        require(len(self.levels) > 0, "levels", "give at least one level")
        require(not self.level_weights or (len(self.level_weights) == len(self.levels)
                                           and all(w >= 0 for w in self.level_weights) and sum(self.level_weights) > 0),
                "level_weights", "one non-negative weight per level, not all zero")
        require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas", "two values in [0, 1)")
        require(self.optimizer in SFT_OPTIMIZERS, "optimizer", f"must be one of {SFT_OPTIMIZERS}")
        require(self.checkpoint_every > 0, "checkpoint_every", "must be > 0")
        require(self.snapshot_every >= 0, "snapshot_every", "must be >= 0")
        require(self.grad_clip >= 0, "grad_clip", "must be >= 0")
        require(1 <= self.micro_batches <= self.batch_size, "micro_batches", "must be in 1..batch_size")


def lr_at(step: int, cfg: SFTConfig) -> float:
    """Linear warm-up, then cosine decay from lr to lr * min_lr_ratio."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


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
    from tqdm.auto import tqdm

    from ..engine import Engine
    from ..models import build_or_load, count_parameters, save

    run = open_run(cfg, "sft")
    task = resolve_task(cfg, task)
    if model is None:
        model, tok = build_or_load(cfg.model, tok, seed=cfg.seed)
    model.to(cfg.device).train()
    opt = make_optimizer(model, cfg)

    start = 0
    ckpt = latest_checkpoint(run) if cfg.resume else None
    if ckpt is not None:
        state = load_checkpoint(ckpt, model)
        written_with = state.get("config", {}).get("optimizer", "adamw")
        require(written_with == cfg.optimizer, "optimizer",
                f"{ckpt} was written with optimizer {written_with!r}, not {cfg.optimizer!r}: resume with the same "
                "optimizer, or start a new run folder")
        opt.load_state_dict(state["optimizer"])
        start = state["step"]
        truncate_metrics(run, start)
    log = RunLog(run)
    engine = Engine(model, tok)
    heldout = task.heldout_set(cfg.eval_per_level, tuple(cfg.levels))
    pad = tok.pad_token_id

    bar = tqdm(total=cfg.steps, initial=start, desc="sft", disable=not cfg.progress, dynamic_ncols=True)
    if start == 0:
        log.log(0, params=count_parameters(model))
    t0, tokens = time.time(), 0
    for step in range(start, cfg.steps):
        examples = sample_examples(task, tok, cfg.seed, step, cfg.batch_size, cfg.levels, cfg.system2_fraction,
                                   cfg.level_weights)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        opt.zero_grad(set_to_none=True)
        loss, n_tokens = token_mean_backward(model, [e.rendered for e in examples], pad, cfg.micro_batches)
        if not math.isfinite(loss):
            raise TrainingHalted(f"non-finite loss ({loss}) at step {step + 1}; stopped without saving. "
                                 f"Last good checkpoint: {ckpt}")
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or float("inf"))
        opt.step()
        tokens += n_tokens
        done = step + 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")
        if done % cfg.log_every == 0 or done == cfg.steps:
            elapsed = time.time() - t0
            log.log(done, loss=loss, lr=opt.param_groups[0]["lr"], grad_norm=float(gnorm),
                    tokens_per_s=tokens / max(elapsed, 1e-9))
        if (cfg.eval_every and done % cfg.eval_every == 0) or done == cfg.steps:
            metrics = heldout_metrics(engine, task, tok, heldout, max_tokens=cfg.max_new_tokens)
            model.train()
            log.log(done, **metrics)
            bar.write(f"step {done}: " + "  ".join(f"{k[5:]}={v:.2f}" for k, v in metrics.items()
                                                   if k.endswith("pass@1")))
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            ckpt = save_checkpoint(run, model, tok, {"step": done, "optimizer": opt.state_dict(),
                                                     "config": to_dict(cfg)})
        if cfg.snapshot_every and done % cfg.snapshot_every == 0:
            save(model, tok, run / "snapshots" / f"step_{done}")
    bar.close()
    log.close()
    save(model, tok, run / "model")
    return run
