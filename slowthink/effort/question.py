"""What the effort service is given and what it gives back, engine-agnostic.

A :class:`Model` is anything that can ``generate(prompt_ids, n, sampling) -> list[Completion]`` (awaited):
the server wraps its scheduler (requests share batches), the CLI its in-process engine. A
:class:`Question` is one request: its conversation in each mode, what a sample votes for, and the
client's limits. :class:`Answered` is one completion per choice plus what producing them cost.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..chat import Mode
from ..engine import Completion, SamplingParams
from ..tokenizer import render_prompt
from .vote import AnswerOf, voted_answer

Generate = Callable[[list[int], int, SamplingParams], Awaitable[list[Completion]]]
Hidden = Callable[[list[int]], Awaitable[np.ndarray]]  # final hidden state at a prompt's last token
Check = Callable[[list[str]], tuple[list[float], int]]  # System-2 completions -> (scores, tokens it read)


@dataclass(frozen=True)
class Model:
    """One model as the service drives it. ``hidden`` computes the router's ``prompt`` signal (None: a
    router that needs it cannot run); ``context``: its maximum positions (None: not checked here)."""

    tokenizer: Any
    generate: Generate
    hidden: Hidden | None = None
    context: int | None = None

    def prompt(self, question: Question, mode: Mode) -> list[int]:
        return render_prompt(self.tokenizer, question.messages(mode), mode)

    def room(self, prompt_ids: list[int]) -> int:
        """Tokens a completion of this prompt may have."""
        return 1 << 30 if self.context is None else self.context - len(prompt_ids)


@dataclass
class Question:
    """One request. ``budget``: max_completion_tokens per choice, everything generated for it counted
    (None: each sample gets its setting's tokens). ``temperature``: the client's, for every sample; when
    None a vote samples at its setting's temperature and a single sample at ``sampling.temperature``
    (the caller's default). ``sampling`` also carries top_p, stop strings, seed and ignore_eos."""

    messages: Callable[[Mode], list[dict]]
    sampling: SamplingParams
    n: int = 1
    budget: int | None = None
    thinking_budget: int | None = None
    temperature: float | None = None
    answer_of: AnswerOf = voted_answer
    verifiers: Mapping[str, Check] = field(default_factory=dict)  # by name, for verifier-weighted votes


@dataclass
class Answered:
    """One completion per choice, in ``mode`` from ``prompt_ids``; ``generated``: every token generated for
    the request (router signals and samples that lost a vote included); ``route``: what ran and why (None
    for a single sample per choice run as asked)."""

    mode: Mode
    prompt_ids: list[int]
    choices: list[Completion]
    generated: int
    samples: int
    verifier_tokens: int = 0
    route: dict | None = None

    @property
    def extra_tokens(self) -> int:
        """Tokens generated beyond the returned choices."""
        return self.generated - sum(len(c.token_ids) for c in self.choices)


def generated(completions: list[Completion]) -> int:
    return sum(len(c.token_ids) for c in completions)
