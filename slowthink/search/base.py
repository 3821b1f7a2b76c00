"""What every test-time strategy shares: the ``solve`` signature, the ``Solution`` it returns, the
``Policy`` it samples from, the token ``Meter`` that enforces its budget, and the verifier protocol.

Every strategy is one function with the same signature::

    solve(problem, policy, verifier=None, budget=None, **options) -> Solution

* ``policy`` (:class:`Policy`): an ``Engine`` + its tokenizer + a task + a mode + sampling defaults.
  Strategies sample only through it, and every call is charged to a :class:`Meter`.
* ``verifier``: None for strategies that need none (greedy, majority, budget forcing), else any object
  with ``score_steps(problem, steps) -> list[float]`` (a process verifier: one score per reasoning step
  of a possibly unfinished solution) and/or ``score(problem, completion) -> float`` (an outcome
  verifier: one score for a whole completion). Higher is better; scores are expected in [0, 1] (``prod``
  aggregation assumes it). A verifier that runs a model may expose a cumulative ``tokens`` counter (tokens
  it processed); strategies report its increase as ``Solution.verifier_tokens``.
* ``budget``: the most policy tokens the strategy may generate for this problem (None: no limit beyond
  ``policy.max_tokens`` per completion). A hard cap: before each engine call the per-sample
  ``max_tokens`` is cut to ``remaining // samples``, so the sum can never exceed it.

Token accounting is exact: ``Solution.policy_tokens`` is the sum of ``len(Completion.token_ids)`` over
every completion the engine returned for this problem (discarded samples, pruned beams and end-of-turn
tokens included). Text the strategy inserts itself (a forced ``</think>``, "Wait") is not generated
and not counted there; strategies that insert text report it in ``extra``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..engine import Completion, Engine, SamplingParams, derive_seed
from ..chat import Mode, THINK_CLOSE, check_mode, split_completion
from ..tasks.base import Problem
from ..tasks.guard import guard
from ..tokenizer import render_prompt


@dataclass
class Solution:
    answer: str | None  # extracted final answer (None when the chosen completion is malformed)
    reasoning: str | None  # text of the think block (None in System-1 or when malformed)
    completion: str  # the chosen completion, as the task scores it (reasoning</think>\n\nanswer)
    policy_tokens: int  # tokens the policy generated for this problem, every sample counted
    verifier_tokens: int = 0  # tokens the verifier processed (0 for ground-truth oracles)
    well_formed: bool = False  # the chosen completion follows the task's output format
    extra: dict[str, Any] = field(default_factory=dict)  # strategy-specific details (votes, scores, ...)


@runtime_checkable
class StepVerifier(Protocol):
    """Process verifier: one score per step of a (possibly partial) reasoning, higher is better."""

    def score_steps(self, problem: Problem, steps: list[str]) -> list[float]: ...


@runtime_checkable
class OutcomeVerifier(Protocol):
    """Outcome verifier: one score for a whole completion, higher is better."""

    def score(self, problem: Problem, completion: str) -> float: ...


SolveFn = Callable[..., Solution]


class BudgetExhausted(Exception):
    """Raised by ``Policy.sample`` when not even one token per sample fits in the remaining budget."""


class Meter:
    """Policy tokens spent on one problem, against an optional budget. Also numbers the engine calls,
    so that seeded sampling gives each call its own noise and a problem's result is reproducible."""

    def __init__(self, budget: int | None = None, tag: str = ""):
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
            raise ValueError(f"budget must be a positive integer (policy tokens) or None, got {budget!r}")
        self.budget, self.tag = budget, tag
        self.spent = 0
        self.calls = 0
        self.samples = 0

    @property
    def remaining(self) -> float:
        return math.inf if self.budget is None else self.budget - self.spent

    def fit(self, samples: int, max_tokens: int) -> int:
        """Tokens each of ``samples`` parallel samples may generate so that all of them fit."""
        if self.budget is None:
            return max_tokens
        return int(min(max_tokens, self.remaining // max(samples, 1)))

    def charge(self, completions: list[Completion]) -> int:
        used = sum(len(c.token_ids) for c in completions)
        self.spent += used
        self.samples += len(completions)
        if self.budget is not None and self.spent > self.budget:  # cannot happen: fit() bounds every call
            raise AssertionError(f"spent {self.spent} policy tokens with a budget of {self.budget}")
        return used


@dataclass
class Policy:
    """The model side of a search: samples completions of a problem's prompt, or continuations of a
    partial completion, always through ``engine`` and always charged to a :class:`Meter`."""

    engine: Engine
    task: Any
    mode: Mode = Mode.SYSTEM2
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256  # longest single completion (generated tokens)
    seed: int | None = None  # reproducible sampling when set (per problem, strategy and call)

    def __post_init__(self):
        check_mode(self.mode)
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        self.task = guard(self.task)  # a verifier crash on one sample counts it malformed (tasks.guard)

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    def prompt_ids(self, problem: Problem) -> list[int]:
        return render_prompt(self.tokenizer, self.task.prompt(problem, self.mode), self.mode)

    def encode(self, text: str) -> list[int]:
        """Token ids of completion text (a prefix the model continues). For the character tokenizer this
        is exactly what the model generated; a BPE tokenizer may segment it differently."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    def ended_turn(self, completion: Completion) -> bool:
        """The completion ended with an end-of-turn (eos) token, not a stop string or the length limit."""
        return (completion.finish_reason == "stop" and bool(completion.token_ids)
                and completion.token_ids[-1] in self.engine.eos_ids)

    def sample_many(self, prompts: list[list[int]], n: int | list[int], meter: Meter, *,
                    max_tokens: int | list[int] | None = None, stop: tuple[str, ...] = (),
                    temperature: float | None = None) -> list[list[Completion]]:
        """``n`` completions of each prompt in one batched run of the engine. Each prompt's ``max_tokens``
        is cut so that all samples together fit the meter's remaining budget."""
        ns = [n] * len(prompts) if isinstance(n, int) else list(n)
        caps = [max_tokens or self.max_tokens] * len(prompts) if not isinstance(max_tokens, list) else max_tokens
        total = sum(ns)
        caps = [meter.fit(total, c) for c in caps]
        if total == 0:
            return [[] for _ in prompts]
        if min(caps) < 1:
            raise BudgetExhausted(f"{meter.remaining} policy tokens left for {total} samples")
        temp = self.temperature if temperature is None else temperature
        call = meter.calls
        meter.calls += 1
        reqs = []
        for i, (ids, k, cap) in enumerate(zip(prompts, ns, caps)):
            seed = None if self.seed is None else derive_seed(self.seed, meter.tag, call, i)
            params = SamplingParams(max_tokens=cap, temperature=temp, top_p=self.top_p, stop=stop, seed=seed)
            reqs.append(self.engine.add(ids, k, params) if k > 0 else None)
        while not all(r is None or r.done for r in reqs):
            if not self.engine.has_unfinished():
                raise RuntimeError("engine went idle with requests unfinished")
            self.engine.step()
        out = [[] if r is None else r.completions for r in reqs]
        meter.charge([c for cs in out for c in cs])
        return out

    def sample(self, problem: Problem, n: int, meter: Meter, **kw) -> list[Completion]:
        """``n`` completions of the problem's prompt."""
        return self.sample_many([self.prompt_ids(problem)], n, meter, **kw)[0]

    def continue_from(self, problem: Problem, prefix_text: str, n: int, meter: Meter, **kw) -> list[Completion]:
        """``n`` continuations of a partial completion (text after the generation prompt)."""
        return self.sample_many([self.prompt_ids(problem) + self.encode(prefix_text)], n, meter, **kw)[0]

    def new_meter(self, problem: Problem, budget: int | None, strategy: str) -> Meter:
        return Meter(budget, tag=f"{strategy}|{problem.key}")

    def solution(self, problem: Problem, completion: str, meter: Meter, verifier=None, verifier_start: int = 0,
                 **extra) -> Solution:
        """A Solution for the chosen completion, parsed by the task."""
        s = self.task.score(problem, completion, self.mode)
        split = split_completion(completion, self.mode)
        return Solution(answer=s.answer if s.well_formed else None, reasoning=split.reasoning, completion=completion,
                        policy_tokens=meter.spent, verifier_tokens=verifier_tokens(verifier) - verifier_start,
                        well_formed=s.well_formed, extra={"samples": meter.samples, **extra})


# -- verifier helpers -------------------------------------------------------------------------------

def verifier_tokens(verifier) -> int:
    """Cumulative tokens a verifier reports having processed (0 when it does not count any)."""
    return int(getattr(verifier, "tokens", 0) or 0) if verifier is not None else 0


def agg_min(scores: list[float]) -> float:
    """A solution is as good as its weakest step."""
    return float(min(_nonempty(scores)))


def agg_prod(scores: list[float]) -> float:
    """Probability that every step is right, if step scores are independent probabilities."""
    return float(math.prod(_nonempty(scores)))


def agg_last(scores: list[float]) -> float:
    """The score of the last step (a PRM's view of the whole prefix)."""
    return float(_nonempty(scores)[-1])


AGGREGATIONS: dict[str, Callable[[list[float]], float]] = {"min": agg_min, "prod": agg_prod, "last": agg_last}


def aggregate(scores: list[float], how: str = "min") -> float:
    if how not in AGGREGATIONS:
        raise ValueError(f"step-score aggregation must be one of {sorted(AGGREGATIONS)}, got {how!r}")
    return AGGREGATIONS[how](scores)


def _nonempty(scores: list[float]) -> list[float]:
    scores = list(scores)
    if not scores:
        raise ValueError("cannot aggregate an empty list of step scores")
    return scores


def reasoning_steps(policy: Policy, text: str) -> list[str]:
    """Steps of the reasoning in a (possibly partial) System-2 completion: the text before ``</think>``."""
    return policy.task.steps(text.split(THINK_CLOSE)[0])


def score_steps(verifier, problem: Problem, steps: list[str], agg: str) -> float:
    """Aggregated step score of a reasoning prefix; 0.0 when there is no step yet."""
    if not steps:
        return 0.0
    scores = verifier.score_steps(problem, steps)
    if len(scores) != len(steps):
        raise ValueError(f"verifier returned {len(scores)} step scores for {len(steps)} steps")
    return aggregate(scores, agg)


def score_completion(verifier, policy: Policy, problem: Problem, completion: str, agg: str = "min",
                     use: str = "auto") -> float:
    """One score for a finished completion: the outcome score (``verifier.score``) when the verifier has
    one and ``use`` is "auto" or "outcome", else the aggregated step scores of its reasoning."""
    if use not in ("auto", "outcome", "steps"):
        raise ValueError(f"use must be 'auto', 'outcome' or 'steps', got {use!r}")
    has_outcome = callable(getattr(verifier, "score", None))
    has_steps = callable(getattr(verifier, "score_steps", None))
    if use == "outcome" or (use == "auto" and has_outcome):
        if not has_outcome:
            raise ValueError(f"{type(verifier).__name__} has no score(problem, completion)")
        return float(verifier.score(problem, completion))
    if not has_steps:
        raise ValueError(f"{type(verifier).__name__} has no score_steps(problem, steps)")
    return score_steps(verifier, problem, reasoning_steps(policy, completion), agg)


def require_verifier(verifier, name: str) -> None:
    if verifier is None:
        raise ValueError(f"strategy {name!r} needs a verifier (score_steps and/or score); e.g. the ground-truth "
                         "TaskStepOracle until a learned ORM/PRM is available")
