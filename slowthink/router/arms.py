"""Arms: the fixed (mode, strategy, samples, budget) settings a router chooses between, and the table of
how each arm does on each problem.

An arm is one way to answer a question: System-1 greedy, System-2 greedy, or System-2 self-consistency
over ``n`` samples. ``model`` names which engine runs it ("main" in the hybrid one-model mode; in the
two-model mode, e.g. "fast" for System-1 and "slow" for System-2).

``arm_table`` runs every arm on every problem in batched engine calls. Self-consistency arms with
different ``n`` share their samples: maj@4 votes over the first 4 of the 16 samples maj@16 draws. Each
arm's result is still an honest draw of that arm (the first k of n i.i.d. samples are k i.i.d. samples);
sharing only makes the arms of one table correlated, which sharpens comparisons between them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..engine import SamplingParams
from ..evaluate import majority
from ..tasks.base import Mode, Problem, check_mode
from ..tokenizer import render_prompt


@dataclass(frozen=True)
class Arm:
    name: str
    mode: Mode = "system2"
    n: int = 1  # samples; 1 = greedy, >1 = self-consistency (majority vote) at ``temperature``
    temperature: float = 0.7
    max_tokens: int = 256  # per sample
    model: str = "main"  # which engine runs it

    def __post_init__(self):
        check_mode(self.mode)
        if self.n < 1 or self.max_tokens < 1:
            raise ValueError(f"arm {self.name!r}: n and max_tokens must be >= 1")

    @property
    def greedy(self) -> bool:
        return self.n == 1

    def describe(self) -> str:
        how = "greedy" if self.greedy else f"majority of {self.n} samples at T={self.temperature:g}"
        return f"{'System-1' if self.mode == 'system1' else 'System-2'} {how}, <= {self.max_tokens} tokens/sample"

    def to_dict(self) -> dict:
        return asdict(self)


def default_arms(max_tokens: int = 256, ns: tuple[int, ...] = (4, 8, 16), temperature: float = 0.7,
                 fast: str = "main", slow: str = "main") -> list[Arm]:
    """System-1 greedy, System-2 greedy, System-2 majority@n for each n; cheapest first."""
    arms = [Arm("s1", "system1", 1, max_tokens=max_tokens, model=fast),
            Arm("s2", "system2", 1, max_tokens=max_tokens, model=slow)]
    arms += [Arm(f"s2_maj{n}", "system2", n, temperature, max_tokens, slow) for n in ns]
    return arms


@dataclass
class ArmTable:
    """Per problem and arm: correct (bool) and policy tokens generated (every sample counted)."""

    arms: list[Arm]
    correct: np.ndarray  # [Q, A] bool
    tokens: np.ndarray  # [Q, A] int
    answers: list[list[str | None]]  # [Q][A] the arm's final answer

    def accuracy(self) -> np.ndarray:
        return self.correct.mean(0)

    def mean_tokens(self) -> np.ndarray:
        return self.tokens.mean(0)

    def index(self, name: str) -> int:
        return [a.name for a in self.arms].index(name)


def arm_table(engines: dict, task, problems: list[Problem], arms: list[Arm], seed: int = 0,
              progress: bool = False) -> ArmTable:
    """Run every arm on every problem. Arms with the same (model, mode, temperature, max_tokens) and
    n > 1 share one batch of max(n) samples per problem; greedy arms share one greedy batch."""
    q, a = len(problems), len(arms)
    correct = np.zeros((q, a), bool)
    tokens = np.zeros((q, a), np.int64)
    answers: list[list[str | None]] = [[None] * a for _ in problems]
    groups: dict[tuple, list[int]] = {}
    for j, arm in enumerate(arms):
        key = (arm.model, arm.mode, arm.greedy, 0.0 if arm.greedy else arm.temperature, arm.max_tokens)
        groups.setdefault(key, []).append(j)
    for (model, mode, greedy, temperature, max_tokens), members in groups.items():
        if model not in engines:
            raise ValueError(f"arm(s) {[arms[j].name for j in members]} need model {model!r}; "
                             f"engines given: {sorted(engines)}")
        engine = engines[model]
        n_max = max(arms[j].n for j in members)
        prompts = [render_prompt(engine.tokenizer, task.prompt(p, mode), mode) for p in problems]
        sampling = SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=None if greedy else seed)
        outs = engine.generate(prompts, n=n_max, sampling=sampling, progress=progress)
        for i, (p, comps) in enumerate(zip(problems, outs)):
            scores = [task.score(p, c.text, mode) for c in comps]
            voted = [s.answer if s.well_formed else None for s in scores]
            for j in members:
                k = arms[j].n
                winner = majority(voted[:k])
                answers[i][j] = winner
                # the vote is right when the winning answer is the one a correct sample gave
                correct[i, j] = winner is not None and any(s.correct and s.answer == winner for s in scores[:k])
                tokens[i, j] = sum(len(c.token_ids) for c in comps[:k])
    return ArmTable(arms, correct, tokens, answers)


def run_arm(arm: Arm, problem: Problem, engines: dict, task, seed: int | None = 0):
    """Run one arm on one problem through the search strategies; returns a ``search.Solution``."""
    from ..search import Policy
    from ..search import greedy, majority

    if arm.model not in engines:
        raise ValueError(f"arm {arm.name!r} needs model {arm.model!r}; engines given: {sorted(engines)}")
    policy = Policy(engines[arm.model], task, arm.mode, temperature=arm.temperature, max_tokens=arm.max_tokens,
                    seed=seed)
    if arm.greedy:
        return greedy.solve(problem, policy)
    return majority.solve(problem, policy, n=arm.n)
