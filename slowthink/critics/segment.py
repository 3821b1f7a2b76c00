"""Steps of a worked solution, as a critic reads them.

A step is one line of the reasoning (the task's ``steps``: ``STEP_DELIMITER`` = "\\n", empty lines are not
steps). A critic sees the prompt followed by every step *with its delimiter*, each step tokenized on its
own, so a step always ends on a token of its own (the delimiter, or one that contains it) whatever the
tokenizer merges; that token is where a PRM reads the step's score. The same text is what MC rollouts
continue from, so training labels and inference scores refer to the same prefixes.
"""

from __future__ import annotations

from collections.abc import Callable

from ..chat import STEP_DELIMITER, THINK_CLOSE


def completion_steps(task, completion: str) -> list[str]:
    """Steps of the reasoning in a System-2 completion (text before ``</think>``; all of it if unclosed)."""
    return task.steps(completion.split(THINK_CLOSE)[0])


def prefix_text(steps: list[str], i: int) -> str:
    """Completion text made of the first ``i`` steps, each followed by its delimiter."""
    return "".join(s + STEP_DELIMITER for s in steps[:i])


def encode_steps(encode: Callable[[str], list[int]], prompt_ids: list[int],
                 steps: list[str]) -> tuple[list[int], list[int]]:
    """(token ids of prompt + steps, index of each step's last token)."""
    ids, ends = list(prompt_ids), []
    for s in steps:
        ids += encode(s + STEP_DELIMITER)
        ends.append(len(ids) - 1)
    return ids, ends


def right_pad(seqs: list[list[int]], pad_id: int):
    """(input ids, attention mask) of token sequences right-padded to the longest: one batched forward."""
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
        attn[i, :len(s)] = 1
    return ids, attn


def first_false(labels: list[bool]) -> int | None:
    """Index of the first False (the first wrong step), None when there is none."""
    return next((i for i, ok in enumerate(labels) if not ok), None)
