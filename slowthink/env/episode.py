"""An episode as token ids, kept end to end: the prompt, then segments of model tokens (with the sampler's
log-probs, in the loss) and of tool-response tokens (context only, out of the loss). Nothing is re-tokenised:
the learner sees exactly the ids the engine sampled and the ids of the observations that were appended."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..chat import Mode
from ..engine import Completion
from ..rl.rewards import Reward
from ..tasks.base import Problem, Score


@dataclass
class Segment:
    """A run of completion tokens: the model's (``mask`` 1, ``logprobs`` from the sampler) or an observation's
    (``mask`` 0: tool responses and template text, ``logprobs`` 0.0 placeholders, never used)."""

    token_ids: list[int]
    logprobs: list[float]
    mask: int
    text: str
    finish_reason: str | None = None  # model segments: the engine's ("stop", "length", "cancelled")


@dataclass
class ToolCallRecord:
    """One call the model made and what came back (``error``: malformed, unknown, bad arguments, raised or timed
    out; the model read the error text)."""

    turn: int
    name: str | None  # None when the call could not be parsed
    arguments: dict
    response: str
    error: bool


@dataclass
class Episode:
    """One multi-turn (or one-turn) episode. ``finish_reason``: "stop" (the model answered), "length" (the
    token budget ran out), "limit" (the tool-call or turn limit ended it: ``limit`` says which)."""

    problem: Problem
    mode: Mode
    prompt_ids: list[int]
    segments: list[Segment] = field(default_factory=list)
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    reward: Reward | None = None
    finish_reason: str = "stop"
    limit: str | None = None
    turns: int = 0
    with_tools: bool = False  # run by an environment that offers tools (its statistics are logged)

    @property
    def token_ids(self) -> list[int]:
        return [t for s in self.segments for t in s.token_ids]

    @property
    def logprobs(self) -> list[float]:
        return [x for s in self.segments for x in s.logprobs]

    @property
    def loss_mask(self) -> list[int]:
        """1 on the model's tokens, 0 on tool-response tokens (one per completion token)."""
        return [s.mask for s in self.segments for _ in s.token_ids]

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.segments)

    @property
    def model_tokens(self) -> int:
        return sum(len(s.token_ids) for s in self.segments if s.mask)

    @property
    def tool_errors(self) -> int:
        return sum(c.error for c in self.tool_calls)

    @property
    def score(self) -> Score | None:
        return None if self.reward is None else self.reward.score

    def completion(self) -> Completion:
        """The whole completion as the engine's type: every token (tool responses included, log-prob 0.0 there),
        the transcript text and the episode's finish reason. For a one-turn episode: the engine's completion."""
        return Completion(self.token_ids, self.logprobs, self.text, self.finish_reason)
