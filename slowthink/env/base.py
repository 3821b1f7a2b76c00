"""The environment interface (Gymnasium's shape, as in SkyRL-gym and TRL's environments), beside ``Task``.

An :class:`Environment` runs one episode at a time::

    messages = env.reset(problem)                  # the conversation the model is prompted with
    obs, reward, done, info = env.step(turn_text)  # one assistant turn: what comes back, and whether it ended

``step`` returns a :class:`StepResult` (a named tuple): ``observation`` is text to append to the context
(tool responses in their markup; "" once done), ``reward`` the episode's reward once ``done`` (0 before),
``info`` what happened (``"reward"``: the :class:`~slowthink.rl.rewards.Reward` with its terms, ``"score"``: the
task's verdict, ``"limit"``: the limit that ended it, ``"tool_calls"``: this turn's calls). ``end(reason)``
ends an episode from outside (the runner's token budget ran out) and scores what is there.

Every task is a one-turn environment as it stands: :class:`TaskEnv` prompts with the task's prompt, and its one
step scores the completion with the task and ends. ``ToolEnv`` (``slowthink.env.tool_env``) is multi-turn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

from ..chat import Mode, check_mode
from ..rl.rewards import RewardFn
from ..tasks.base import Problem
from ..tasks.guard import guard


class StepResult(NamedTuple):
    observation: str
    reward: float
    done: bool
    info: dict[str, Any]


@dataclass(frozen=True)
class Limits:
    """Per episode. ``max_tool_calls``: calls the model may make (a turn that would exceed it ends the episode
    unexecuted); ``max_turns``: assistant turns (the turn after the last allowed tool response never comes: the
    episode ends); ``max_tokens``: completion tokens, model's and tool responses' together (0: only the sampling
    budget, which counts the model's tokens over all turns)."""

    max_tool_calls: int = 4
    max_turns: int = 8
    max_tokens: int = 0

    def __post_init__(self):
        for name in ("max_tool_calls", "max_turns", "max_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"Limits.{name} must be an integer >= 0, got {value!r}")
        if self.max_turns < 1:
            raise ValueError(f"Limits.max_turns must be >= 1, got {self.max_turns}")


@runtime_checkable
class Environment(Protocol):
    """One episode at a time (make one environment per concurrent episode). ``stop``: stop strings a turn ends
    at (besides end of turn); ``runs_tools``: whether ``step`` may block on tools (the runner then calls it on a
    thread pool); ``mode``: how the model answers."""

    mode: Mode
    stop: tuple[str, ...]
    runs_tools: bool

    def reset(self, problem: Problem) -> list[dict]: ...

    def step(self, assistant_turn: str, num_tokens: int = 0) -> StepResult: ...

    def end(self, reason: str) -> StepResult: ...


class TaskEnv:
    """A task as a one-turn environment: ``reset`` gives the task's prompt, the one ``step`` scores the
    completion (``reward_fn``: correctness plus its shaping terms; ``num_tokens`` feeds the overlong penalty)
    and ends. The task is guarded (a verifier crash scores the completion malformed)."""

    stop: tuple[str, ...] = ()
    runs_tools = False

    def __init__(self, task, mode: Mode = Mode.SYSTEM2, reward_fn: RewardFn | None = None):
        self.task, self.mode = guard(task), check_mode(mode)
        self.reward_fn = reward_fn or RewardFn()
        self.problem: Problem | None = None

    def reset(self, problem: Problem) -> list[dict]:
        self.problem = problem
        return self.task.prompt(problem, self.mode)

    def step(self, assistant_turn: str, num_tokens: int = 0) -> StepResult:
        return self._score(assistant_turn, num_tokens, limit=None)

    def end(self, reason: str) -> StepResult:
        return self._score("", 0, limit=reason)

    def _score(self, text: str, num_tokens: int, limit: str | None) -> StepResult:
        if self.problem is None:
            raise RuntimeError("reset(problem) before step(): the environment has no episode")
        reward = self.reward_fn(self.task, self.problem, text, num_tokens, self.mode)
        return StepResult("", reward.total, True, {"reward": reward, "score": reward.score, "limit": limit,
                                                   "tool_calls": []})
