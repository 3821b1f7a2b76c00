"""What every trainer does the same way: open the run folder, resolve the task, build the optimizer."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ..config import to_dict
from .runlog import write_json


class TrainingHalted(RuntimeError):
    """Training stopped itself (non-finite loss, collapsed entropy); the message says why and where the
    last good checkpoint is."""


def halted(why: str, ckpt) -> TrainingHalted:
    """The exception a trainer raises when it stops itself, naming the last good checkpoint."""
    return TrainingHalted(f"{why}; stopped without saving. Last good checkpoint: "
                          f"{ckpt or 'none (no checkpoint written yet)'}")


def budget_spent(t_start: float, budget_s: float) -> bool:
    """True once ``budget_s`` seconds have passed since ``t_start`` (a budget of 0 never ends)."""
    return bool(budget_s) and time.time() - t_start >= budget_s


def open_run(cfg, trainer: str) -> Path:
    """Set torch threads, create ``cfg.out`` and write its ``config.json``."""
    if getattr(cfg, "threads", 0):
        torch.set_num_threads(cfg.threads)
    run = Path(cfg.out)
    run.mkdir(parents=True, exist_ok=True)
    write_json(run / "config.json", {"trainer": trainer, **to_dict(cfg)})
    return run


def resolve_task(cfg, task=None):
    """The config's task (or the one given), with the configured levels checked against it."""
    from ..tasks import get_task

    task = task or get_task(cfg.task, **cfg.task_args)
    if hasattr(task, "check_level"):
        for level in cfg.levels:
            task.check_level(level)
    return task
