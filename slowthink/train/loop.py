"""What every trainer does the same way around its own algorithm: the run folder, the task and the starting
model, resume, the metrics log, the progress bar, checkpoints, halting and the final save.

A trainer reads as phases inside one :class:`TrainingRun`::

    cfg, task = resolve_task(cfg, task)            # the task, and what the config left open filled in
    with TrainingRun(cfg, "grpo") as run:          # run folder, config.json, torch threads
        model, tok = load_init(cfg, model, tok)
        opt = make_optimizer(model, cfg)
        state = run.resume(model, tok, optimizer=opt)   # weights, optimizer, RNG; metrics log opened
        bar = run.progress(cfg.steps, baseline=evaluate)   # evaluate(0) on a fresh start
        for step in range(run.start, cfg.steps):
            ...                                    # the algorithm; run.halt(why) stops it
            run.checkpoint(step + 1, **extra_state)
        return run.finish()                        # closes everything, saves model/
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import NoReturn

import torch

from ..chat import MODES, Mode
from ..config import ConfigError, require, to_dict
from .runlog import RunLog, latest_checkpoint, load_checkpoint, save_checkpoint, truncate_metrics, write_json


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


def due(done: int, every: int, last: bool) -> bool:
    """Whether something done every ``every`` steps (0: never) is due after step ``done``; always after the last."""
    return bool(every) and done % every == 0 or last


def open_run(cfg, trainer: str, folder: str | Path | None = None) -> Path:
    """Set torch threads, create the run folder (``cfg.out`` unless given) and write its ``config.json``."""
    if getattr(cfg, "threads", 0):
        torch.set_num_threads(cfg.threads)
    run = Path(folder or cfg.out)
    run.mkdir(parents=True, exist_ok=True)
    write_json(run / "config.json", {"trainer": trainer, **to_dict(cfg)})
    return run


def starting_model(cfg) -> str:
    """The model folder a trainer starts from (``init``, or a folder given as ``model``), else ''."""
    from ..models import is_model_dir

    folder = getattr(cfg, "init", "") or getattr(cfg, "model", "")
    return folder if folder and is_model_dir(folder) else ""


def resolve_task(cfg, task=None):
    """The task (or the one given) and the config with what it left open filled in: ``task``, ``task_args``,
    ``levels`` and ``mode`` from the model it starts from (its ``task.json``, ``slowthink.tasks.record``), else
    the task's own levels and System-2. Called before the run folder is made: a task that fails validation
    leaves nothing behind."""
    from ..tasks import get_task
    from ..tasks.guard import guard
    from ..tasks.record import follow_record, read_record

    start = starting_model(cfg)
    spec, args, record = follow_record(cfg.task, cfg.task_args, read_record(start) if start else None)
    task = task or get_task(spec, **args)
    levels = list(cfg.levels or (record.levels if record else ()) or task.levels)
    bad = [level for level in levels if level not in task.levels]
    require(not bad, "levels", f"task {task.name!r} has levels {list(task.levels)}, not {bad} (leave levels out "
            "for the starting model's, else all of the task's)")
    mode = {"mode": record.mode if record else Mode.SYSTEM2} if getattr(cfg, "mode", None) == "" else {}
    # behind the verifier guard: a crash in score() on one completion counts it malformed (or, strict, stops)
    return dataclasses.replace(cfg, task=spec, task_args=args, levels=levels, **mode), guard(
        task, strict=getattr(cfg, "strict_verifier", False))


def task_record(cfg):
    """What a trainer's model was trained on, for its ``task.json``: the task, its arguments and levels, and the
    modes it knows (SFT: those of its share of worked solutions; a trainer that starts from a model of the same
    task keeps that model's modes, else knows its own mode)."""
    from ..tasks.record import TaskRecord, modes_for_share, portable, read_record

    if hasattr(cfg, "system2_fraction"):
        modes = modes_for_share(cfg.system2_fraction)
    else:
        start = starting_model(cfg)
        record = read_record(start) if start else None
        own = (cfg.mode,) if hasattr(cfg, "mode") else MODES
        modes = record.modes if record is not None and record.task == portable(cfg.task, {})[0] else own
    return TaskRecord(*portable(cfg.task, dict(cfg.task_args)), tuple(cfg.levels), tuple(modes))


def load_init(cfg, model=None, tok=None):
    """The model an RL or DPO trainer starts from: ``model`` and ``tok`` when given (tests), else ``cfg.init``;
    prepared by ``train.lora.prepare`` (dtype, device, dropout off, gradient checkpointing, LoRA adapters)."""
    from ..models import load_model
    from .lora import prepare, torch_dtype

    if model is None:
        model, tok = load_model(cfg.init, dtype=torch_dtype(cfg))
    if tok is None:
        raise ConfigError("train(): pass tok together with model")
    return prepare(model, cfg, rl=True), tok


def heldout_problems(task, cfg) -> list:
    """The held-out problems a trainer evaluates on: the first ``cfg.eval_per_level`` of each level's named held-out
    set (``tasks.base.HELDOUT_SET``, the one ``slowthink eval`` uses too; none for 0)."""
    return task.heldout_set(cfg.eval_per_level, tuple(cfg.levels)) if cfg.eval_per_level else []


def check_same_optimizer(cfg, state: dict, ckpt: Path) -> None:
    """A checkpoint's optimizer state only loads into the optimizer kind that wrote it."""
    if not hasattr(cfg, "optimizer"):
        return
    written_with = state.get("config", {}).get("optimizer", "adamw")
    require(written_with == cfg.optimizer, "optimizer",
            f"{ckpt} was written with optimizer {written_with!r}, not {cfg.optimizer!r}: resume with the same "
            "optimizer, or start a new run folder")


class TrainingRun:
    """One trainer's run folder and the bookkeeping around its loop (see the module docstring).

    ``counter`` names the unit a checkpoint counts (``step`` or ``iteration``); ``start`` is the first one
    this invocation runs. Used as a context manager, it closes the progress bar, the metrics log and what
    the trainer registered with :meth:`on_close` however the run ends."""

    def __init__(self, cfg, trainer: str, counter: str = "step"):
        self.cfg, self.trainer, self.counter = cfg, trainer, counter
        self.dir = open_run(cfg, trainer)
        self.ckpt = latest_checkpoint(self.dir) if getattr(cfg, "resume", False) else None  # the last good one
        self.start = 0
        self.model = self.tok = self.log = self.bar = None
        self.tracked: dict = {}
        self._closers: list = []
        self._clock = time.time()

    def __enter__(self) -> TrainingRun:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        from ..tasks.guard import VerifierError
        from .memory import is_out_of_memory, out_of_memory_advice

        self.close()
        if isinstance(exc, VerifierError):  # strict_verifier: stop as a halt does, naming the checkpoint to go on from
            raise halted(str(exc), self.ckpt) from exc
        if exc is not None and is_out_of_memory(exc):  # name the settings to lower (train/memory.py)
            raise halted(f"{out_of_memory_advice(self.cfg)} ({type(exc).__name__}: {str(exc)[:200]})",
                         self.ckpt) from exc

    def resume(self, model, tok, **tracked) -> dict:
        """Continue from the last checkpoint if there is one: weights into ``model``, RNG states, and the state
        of each ``tracked`` object (optimizers, extra models; saved in every checkpoint under its name). Then
        open the metrics log. Returns the checkpoint's state, with the trainer's extras ({} on a fresh start)."""
        self.model, self.tok, self.tracked = model, tok, tracked
        self.report_memory()
        state = {}
        if self.ckpt is not None:
            state = load_checkpoint(self.ckpt, model)
            check_same_optimizer(self.cfg, state, self.ckpt)
            for name, obj in tracked.items():
                obj.load_state_dict(state[name])
            self.start = state[self.counter]
        self.open_log()
        return state

    def report_memory(self) -> None:
        """Print the memory estimate of this run's learner and engine (``train/memory.py``) before it starts, for
        a transformer whose config names its shape. Prompt length: one rendered prompt of the task at its
        highest level (64 tokens where the task cannot be built from the config)."""
        import sys

        from .memory import run_estimate

        config = getattr(self.model, "config", None)
        if config is None or not hasattr(config, "num_hidden_layers") or not hasattr(self.cfg, "max_new_tokens"):
            return
        self.memory = run_estimate(self.model, self.cfg, self._prompt_len())
        print(f"{self.trainer}: {self.memory.line()}", file=sys.stderr)

    def _prompt_len(self) -> int:
        import random

        from ..chat import Mode
        from ..tasks import get_task
        from ..tokenizer import render_prompt

        try:
            task = get_task(self.cfg.task, **self.cfg.task_args)
            problem = task.sample(random.Random(0), max(self.cfg.levels or task.levels))
            return len(render_prompt(self.tok, task.prompt(problem, Mode.SYSTEM2), Mode.SYSTEM2))
        except Exception:  # a task given as an object (tests) or one that cannot render: a typical prompt's length
            return 64

    def open_log(self) -> RunLog:
        """Drop the metrics logged after the checkpoint the run continues from (on a fresh start: all of them,
        a killed attempt's rows), then open the log."""
        truncate_metrics(self.dir, self.start if self.ckpt is not None else -1)
        self.log = RunLog(self.dir)
        return self.log

    def progress(self, total: int, baseline=None):
        """The progress bar, from the first step this invocation runs; the time budget counts from here. On a
        fresh start, ``baseline(0)`` first records the starting point of the learning curve."""
        from tqdm.auto import tqdm

        if baseline is not None and self.start == 0:
            baseline(0)
        self.bar = tqdm(total=total, initial=self.start, desc=self.trainer, disable=not self.cfg.progress,
                        dynamic_ncols=True)
        self._clock = time.time()
        return self.bar

    def budget_spent(self, budget_s: float) -> bool:
        return budget_spent(self._clock, budget_s)

    def checkpoint(self, done: int, **extra) -> None:
        """An atomic checkpoint after ``done`` steps: the weights, the tracked states, ``extra`` and the config."""
        state = {self.counter: done, **{name: obj.state_dict() for name, obj in self.tracked.items()}, **extra,
                 "config": to_dict(self.cfg)}
        self.ckpt = save_checkpoint(self.dir, self.model, self.tok, state)

    def halt(self, why: str, step: int | None = None, **metrics) -> NoReturn:
        """Stop without saving: log the failed step's ``metrics`` (when ``step`` is given), then raise
        :class:`TrainingHalted` naming the last good checkpoint."""
        if step is not None:
            self.log.log(step, **metrics)
        raise halted(why, self.ckpt) from None

    def on_close(self, fn) -> None:
        """Call ``fn`` when the run closes (after the progress bar and the log), in registration order."""
        self._closers.append(fn)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.log is not None:
            self.log.close()
        self.bar = self.log = None
        while self._closers:
            self._closers.pop(0)()

    def save_model(self, folder: Path) -> None:
        """The model in Hugging Face layout, with the task it was trained on (``task.json``)."""
        from ..models import save
        from ..tasks.record import write_record

        from .lora import is_lora, save_lora_model

        if is_lora(self.model):  # the merged plain model in folder, the adapter beside it (train/lora.py)
            write_record(save_lora_model(self.model, self.tok, folder), task_record(self.cfg))
        else:
            save(self.model, self.tok, folder)
        write_record(folder, task_record(self.cfg))

    def finish(self) -> Path:
        """Close the run and save the final model to ``model/``; returns the run folder."""
        self.close()
        self.save_model(self.dir / "model")
        return self.dir
