"""Sampling with a thinking budget (budget forcing): a row still thinking when its think block reaches the
budget gets ``</think>`` appended (on its own line, then the blank line the answer follows) and continues
from there with the answer, within the same per-sample token limit.

The first pass generates every row up to the think cap; only the rows it cut off run again, each as a
continuation of its own tokens (all at once: a server batches them with everything else). A row that
closed its think block itself but ran out of the first pass just continues. The appended tokens are part
of the returned completion and count as generated tokens (log-probability 0: they were certain), so the
limits bound them too.
"""

from __future__ import annotations

import asyncio
import dataclasses

from ..chat import THINK_CLOSE
from ..engine import Completion, SamplingParams, derive_seed
from .budget import think_cap
from .question import Model


def forced_close(thinking: str) -> str:
    """The text that closes a think block cut at its budget."""
    return ("" if not thinking or thinking.endswith("\n") else "\n") + THINK_CLOSE + "\n\n"


def encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


async def sample(model: Model, prompt_ids: list[int], n: int, sampling: SamplingParams,
                 thinking_budget: int | None = None) -> tuple[list[Completion], int]:
    """``n`` samples of a prompt and how many of them had their think block forced closed."""
    if thinking_budget is None:
        return await model.generate(prompt_ids, n, sampling), 0
    cap = think_cap(thinking_budget, sampling.max_tokens, len(encode(model.tokenizer, forced_close("x"))))
    if cap >= sampling.max_tokens:
        return await model.generate(prompt_ids, n, sampling), 0
    first = await model.generate(prompt_ids, n, dataclasses.replace(sampling, max_tokens=cap))
    rows = await asyncio.gather(*(_answer(model, prompt_ids, c, sampling, i) for i, c in enumerate(first)))
    return [c for c, _ in rows], sum(forced for _, forced in rows)


async def _answer(model: Model, prompt_ids: list[int], cut: Completion, sampling: SamplingParams,
                  row: int) -> tuple[Completion, bool]:
    """A first-pass row carried on to its answer (the close forced when it was still thinking)."""
    if cut.finish_reason != "length":
        return cut, False
    forced = THINK_CLOSE not in cut.text
    close_text = forced_close(cut.text) if forced else ""
    close = encode(model.tokenizer, close_text)
    left = sampling.max_tokens - len(cut.token_ids) - len(close)
    if left < 1:  # no room for an answer: the row ends where the first pass cut it
        return cut, False
    seed = None if sampling.seed is None else derive_seed(sampling.seed, "answer", row)
    [rest] = await model.generate(prompt_ids + cut.token_ids + close, 1,
                                  dataclasses.replace(sampling, max_tokens=left, seed=seed))
    return Completion(cut.token_ids + close + rest.token_ids, cut.logprobs + [0.0] * len(close) + rest.logprobs,
                      cut.text + close_text + rest.text, rest.finish_reason), forced
