"""Task-generated supervised data: problems → rendered (ids, loss mask) → padded batches.

Batch ``i`` of a run depends only on ``(seed, i)``, so a resumed run sees exactly the data an
uninterrupted run would have seen, with no data-loader state to save.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from ..chat import Mode
from ..tasks.base import Problem
from ..tokenizer import Rendered, render_example

IGNORE = -100


@dataclass(frozen=True)
class Example:
    problem: Problem
    mode: Mode
    rendered: Rendered


def reference_example(task, tok, problem: Problem, mode: Mode) -> Example:
    ref = task.reference(problem, mode)
    if ref is None:
        raise ValueError(missing_reference(task, mode))
    return Example(problem, mode, render_example(tok, task.prompt(problem, mode), mode, ref.completion()))


def missing_reference(task, mode: Mode) -> str:
    """Why SFT cannot train ``mode`` on ``task``, and what to change, for a data set's user and a task's author."""
    if mode == Mode.SYSTEM2:
        fix = ("map a worked-solution field of the data set with --task-args solution=FIELD, or (a task's author) "
               "define solution_lines(problem) or reference(); or train answers only with --system2-fraction 0")
    else:
        fix = "define reference() in the task, or train worked solutions only with --system2-fraction 1"
    return f"task {task.name!r} has no reference solution for mode {str(mode.value)!r}, and SFT needs one: {fix}"


def check_references(task, levels: list[int], system2_fraction: float) -> None:
    """Fail before a run starts when a mode SFT will train has no reference (one problem per level is probed)."""
    import random

    modes = [m for m, share in ((Mode.SYSTEM1, 1 - system2_fraction), (Mode.SYSTEM2, system2_fraction)) if share > 0]
    for level in levels:
        problem = task.sample(random.Random(0), level)
        for mode in modes:
            if task.reference(problem, mode) is None:
                raise ValueError(missing_reference(task, mode))


def sample_examples(task, tok, seed: int, step: int, batch_size: int, levels: list[int],
                    system2_fraction: float, level_weights: list[float] | None = None) -> list[Example]:
    """Training examples for one step: levels drawn by weight (uniform by default), modes mixed,
    held-out problems excluded."""
    rng = random.Random(f"sft-{seed}-{step}")
    out = []
    for _ in range(batch_size):
        level = rng.choices(levels, weights=level_weights)[0] if level_weights else rng.choice(levels)
        mode: Mode = Mode.SYSTEM2 if rng.random() < system2_fraction else Mode.SYSTEM1
        out.append(reference_example(task, tok, task.sample_split(rng, level, "train"), mode))
    return out


def collate(rendered: list[Rendered], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input_ids, attention_mask and labels (-100 outside the assistant's tokens)."""
    width = max(len(r.ids) for r in rendered)
    ids = torch.full((len(rendered), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rendered), width), IGNORE, dtype=torch.long)
    attn = torch.zeros((len(rendered), width), dtype=torch.long)
    for i, r in enumerate(rendered):
        n = len(r.ids)
        ids[i, :n] = torch.tensor(r.ids)
        attn[i, :n] = 1
        labels[i, :n] = torch.where(torch.tensor(r.mask, dtype=torch.bool), torch.tensor(r.ids), IGNORE)
    return {"input_ids": ids, "attention_mask": attn, "labels": labels}
