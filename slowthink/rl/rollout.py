"""Rollout workers: sample n completions per problem with the current policy and score them.

Generation, scoring and learning are kept apart so that a later backend (Ray actors, one engine per
GPU) can stand in for ``LocalRolloutWorker`` without touching a trainer. A worker:

- ``load_weights(state_dict, version)``: receives the learner's weights before each rollout and
  records which policy version it now samples from;
- ``rollout(problems, mode, n, sampling) -> list[Group]``: one ``Group`` per problem, holding its n
  completions (token ids, the engine's log-probs, text, finish reason), their rewards and the
  version of the weights that produced them (so a learner can check it trains on-policy data).

Episodes run through the environment interface (``slowthink.env``): without tools each problem is a one-turn
``TaskEnv`` (sampling and scoring exactly as a plain generate-then-score); with a tool set a ``ToolEnv`` lets the
model call tools while it reasons, and each ``Group`` also holds its ``Episode``s (token ids, loss mask, tool
calls). Everything in a ``Group`` is plain data (picklable) so it can cross a process boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch

from ..engine import Completion, Engine, SamplingParams
from ..chat import Mode
from ..env import Episode, Limits, TaskEnv, ToolEnv, run_episodes
from ..tasks.base import Problem, Score
from ..tasks.guard import guard
from .rewards import Reward, RewardFn


@dataclass
class Group:
    """n completions of one problem, scored. ``rewards[i]`` belongs to ``completions[i]``."""

    problem: Problem
    mode: Mode
    prompt_ids: list[int]
    completions: list[Completion]
    rewards: list[Reward]
    version: int = 0  # policy version (learner step) whose weights sampled it
    episodes: list[Episode] = field(default_factory=list)  # episodes[i] gave completions[i] (empty: built by hand)

    @property
    def loss_masks(self) -> list[list[int] | None]:
        """Per completion, 1 on the model's tokens and 0 on tool responses; None where every token is the model's."""
        masks = [e.loss_mask for e in self.episodes] or [None] * len(self.completions)
        return [None if m is None or all(m) else m for m in masks]

    @property
    def totals(self) -> list[float]:
        return [r.total for r in self.rewards]

    @property
    def scores(self) -> list[Score]:
        return [r.score for r in self.rewards]

    @property
    def all_equal(self) -> bool:
        """Every completion got the same reward: zero group advantage, no learning signal."""
        return len(set(self.totals)) <= 1


@runtime_checkable
class RolloutWorker(Protocol):
    def load_weights(self, state_dict: dict[str, torch.Tensor] | None, version: int) -> None: ...

    def rollout(self, problems: list[Problem], mode: Mode, n: int, sampling: SamplingParams) -> list[Group]: ...


class LocalRolloutWorker:
    """Samples with an ``Engine`` over a model in this process (typically the learner's own module). ``tools``
    (a ``slowthink.tools.ToolSet``, or an ``env.stats.ToolSpec`` to build one) makes every episode a ``ToolEnv``
    with ``limits``; ``tools_prompt`` as in ``ToolEnv``."""

    def __init__(self, model, tok, task, reward_fn: RewardFn, max_batch: int = 256, tools=None,
                 limits: Limits | None = None, tools_prompt: str = "full"):
        # guarded: a verifier crash on one completion counts it malformed instead of ending the run (tasks.guard)
        self.model, self.tok, self.task, self.reward_fn = model, tok, guard(task), reward_fn
        # a ToolSpec (plain data, e.g. sent to a Ray actor) is built into its ToolSet here, in this process
        self.tools = tools.build() if hasattr(tools, "build") else tools
        self.limits, self.tools_prompt = limits or Limits(), tools_prompt
        self.engine = Engine(model, tok, max_batch=max_batch)
        self.version = -1
        self.pool = None  # the tools' threads, made on first use

    def load_weights(self, state_dict: dict[str, torch.Tensor] | None, version: int) -> None:
        """Copy ``state_dict`` into the model, unless it is the model's own tensors (shared module:
        nothing to copy; the engine notices in-place updates itself). Versions must not go back."""
        if version < self.version:
            raise ValueError(f"weights version {version} is older than the loaded version {self.version}")
        if state_dict is not None:
            own = self.model.state_dict()
            shared = own.keys() == state_dict.keys() and all(
                own[k].data_ptr() == v.data_ptr() for k, v in state_dict.items())
            if not shared:
                self.model.load_state_dict(state_dict)
        self.version = version

    def make_env(self, mode: Mode):
        """A fresh environment for one episode."""
        if self.tools is None:
            return TaskEnv(self.task, mode, self.reward_fn)
        return ToolEnv(self.task, self.tools, self.limits, mode, self.reward_fn, self.tools_prompt)

    def episodes(self, problems: list[Problem], mode: Mode, n: int, sampling: SamplingParams,
                 first: int = 0) -> list[list[Episode]]:
        """n episodes per problem, sampled together on the engine (tools on a thread pool). ``first``: the
        position of ``problems[0]`` in the step's whole batch, which seeds it (a batch split between workers)."""
        if self.tools is not None and self.pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(8, thread_name_prefix="tools")
        return run_episodes(self.engine, self.tok, lambda: self.make_env(mode), problems, mode, n, sampling,
                            self.pool, first)

    def rollout(self, problems: list[Problem], mode: Mode, n: int, sampling: SamplingParams,
                first: int = 0) -> list[Group]:
        if self.version < 0:
            raise RuntimeError("load_weights() before rollout(): the worker does not know its policy version")
        return [Group(p, mode, eps[0].prompt_ids, [e.completion() for e in eps], [e.reward for e in eps],
                      self.version, episodes=eps)
                for p, eps in zip(problems, self.episodes(problems, mode, n, sampling, first))]
