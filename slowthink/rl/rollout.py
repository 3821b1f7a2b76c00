"""Rollout workers: sample n completions per problem with the current policy and score them.

Generation, scoring and learning are kept apart so that a later backend (Ray actors, one engine per
GPU) can stand in for ``LocalRolloutWorker`` without touching a trainer. A worker:

- ``load_weights(state_dict, version)``: receives the learner's weights before each rollout and
  records which policy version it now samples from;
- ``rollout(problems, mode, n, sampling) -> list[Group]``: one ``Group`` per problem, holding its n
  completions (token ids, the engine's log-probs, text, finish reason), their rewards and the
  version of the weights that produced them (so a learner can check it trains on-policy data).

Everything in a ``Group`` is plain data (picklable) so it can cross a process boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

import torch

from ..engine import Completion, Engine, SamplingParams, derive_seed
from ..chat import Mode
from ..tasks.base import Problem, Score
from ..tasks.guard import guard
from ..tokenizer import render_prompt
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
    """Samples with an ``Engine`` over a model in this process (typically the learner's own module)."""

    def __init__(self, model, tok, task, reward_fn: RewardFn, max_batch: int = 256):
        # guarded: a verifier crash on one completion counts it malformed instead of ending the run (tasks.guard)
        self.model, self.tok, self.task, self.reward_fn = model, tok, guard(task), reward_fn
        self.engine = Engine(model, tok, max_batch=max_batch)
        self.version = -1

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

    def rollout(self, problems: list[Problem], mode: Mode, n: int, sampling: SamplingParams) -> list[Group]:
        if self.version < 0:
            raise RuntimeError("load_weights() before rollout(): the worker does not know its policy version")
        prompts = [render_prompt(self.tok, self.task.prompt(p, mode), mode) for p in problems]
        requests = []
        for i, ids in enumerate(prompts):
            params = sampling if sampling.seed is None else replace(sampling, seed=derive_seed(sampling.seed, i))
            requests.append(self.engine.add(ids, n, params))
        while not all(r.done for r in requests):
            if not self.engine.has_unfinished():
                raise RuntimeError("engine went idle with requests unfinished")
            self.engine.step()
        groups = []
        for p, ids, req in zip(problems, prompts, requests):
            comps = req.completions
            rewards = [self.reward_fn(self.task, p, c.text, len(c.token_ids), mode) for c in comps]
            groups.append(Group(p, mode, ids, comps, rewards, self.version))
        return groups
