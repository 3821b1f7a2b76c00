"""Arms: the fixed (mode, strategy, samples, budget) settings a router chooses between, and the table of
how each arm does on each problem.

An arm is one way to answer a question: System-1 greedy, System-2 greedy, System-2 self-consistency
over ``n`` samples, or (with ``verifier``) a vote of ``n`` samples weighted by a verifier's scores, e.g. the
step-recomputing checker (``slowthink.critics.recompute``; ``search/weighted_majority.py``'s rule). ``model``
names which engine runs it ("main" in the hybrid one-model mode; in the two-model mode, e.g. "fast" for
System-1 and "slow" for System-2); ``verifier`` names an entry of the same dict that holds the verifier.
A verifier arm's tokens are the policy's plus the verifier's (each distinct claim of the problem's first
``n`` samples once).

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
from ..search.weighted_majority import weighted_vote
from ..chat import Mode, check_mode
from ..tasks.base import Problem
from ..tokenizer import render_prompt


@dataclass(frozen=True)
class Arm:
    name: str
    mode: Mode = Mode.SYSTEM2
    n: int = 1  # samples; 1 = greedy, >1 = self-consistency (majority vote) at ``temperature``
    temperature: float = 0.7
    max_tokens: int = 256  # per sample
    model: str = "main"  # which engine runs it
    verifier: str = ""  # which verifier weights the vote ("" = plain majority)

    def __post_init__(self):
        check_mode(self.mode)
        if self.n < 1 or self.max_tokens < 1:
            raise ValueError(f"arm {self.name!r}: n and max_tokens must be >= 1")
        if self.verifier and (self.mode != Mode.SYSTEM2 or self.n < 2):
            raise ValueError(f"arm {self.name!r}: a verifier weighs a System-2 vote of n >= 2 samples")

    @property
    def greedy(self) -> bool:
        return self.n == 1

    def describe(self) -> str:
        how = ("greedy" if self.greedy else f"majority of {self.n} samples at T={self.temperature:g}"
               + (f" weighted by the {self.verifier} verifier" if self.verifier else ""))
        return f"{'System-1' if self.mode == 'system1' else 'System-2'} {how}, <= {self.max_tokens} tokens/sample"

    def to_dict(self) -> dict:
        return asdict(self)


def default_arms(max_tokens: int = 256, ns: tuple[int, ...] = (4, 8, 16), temperature: float = 0.7,
                 fast: str = "main", slow: str = "main", check_ns: tuple[int, ...] = ()) -> list[Arm]:
    """System-1 greedy, System-2 greedy, System-2 majority@n for each n, then a checker-weighted vote of n
    for each of ``check_ns`` (verifier "check"); cheapest first within each kind."""
    arms = [Arm("s1", Mode.SYSTEM1, 1, max_tokens=max_tokens, model=fast),
            Arm("s2", Mode.SYSTEM2, 1, max_tokens=max_tokens, model=slow)]
    arms += [Arm(f"s2_maj{n}", Mode.SYSTEM2, n, temperature, max_tokens, slow) for n in ns]
    arms += [Arm(f"s2_check{n}", Mode.SYSTEM2, n, temperature, max_tokens, slow, CHECK) for n in check_ns]
    return arms


CHECK = "check"  # the engines-dict name of the step-recomputing verifier


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

    def rows(self, idx) -> ArmTable:
        """The same arms on a subset of the problems (``idx``: integer positions)."""
        idx = np.asarray(idx)
        return ArmTable(self.arms, self.correct[idx], self.tokens[idx], [self.answers[i] for i in idx])


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
        weights = {v: verifier_weights(engines, v, problems, outs) for v in {arms[j].verifier for j in members}
                   if v}
        for i, (p, comps) in enumerate(zip(problems, outs)):
            scores = [task.score(p, c.text, mode) for c in comps]
            voted = [s.answer if s.well_formed else None for s in scores]
            for j in members:
                k, v = arms[j].n, arms[j].verifier
                if v:
                    raw, questions, cost = weights[v][i]
                    w = [x if s.well_formed else None for x, s in zip(raw[:k], scores[:k])]  # as the strategies do
                    winner = weighted_vote(voted[:k], w)
                    extra = sum(cost[q] for q in set().union(*questions[:k]))
                else:
                    winner, extra = majority(voted[:k]), 0
                answers[i][j] = winner
                # the vote is right when the winning answer is the one a correct sample gave
                correct[i, j] = winner is not None and any(s.correct and s.answer == winner for s in scores[:k])
                tokens[i, j] = sum(len(c.token_ids) for c in comps[:k]) + extra
    return ArmTable(arms, correct, tokens, answers)


def verifier_weights(engines: dict, name: str, problems: list[Problem], outs) -> list[tuple]:
    """Per problem: the verifier's outcome score of each sample, each sample's claim questions and what each
    question cost (one batched call for all problems)."""
    if name not in engines:
        raise ValueError(f"an arm needs verifier {name!r}; engines given: {sorted(engines)}")
    verifier = engines[name]
    items = [(p, c.text) for p, comps in zip(problems, outs) for c in comps]
    flat = verifier.score_batch(items)
    questions = getattr(verifier, "item_questions", None) or [set() for _ in items]
    cost = getattr(verifier, "question_tokens", {})
    out, at = [], 0
    for comps in outs:
        out.append((flat[at:at + len(comps)], questions[at:at + len(comps)], cost))
        at += len(comps)
    return out


def run_arm(arm: Arm, problem: Problem, engines: dict, task, seed: int | None = 0):
    """Run one arm on one problem through the search strategies; returns a ``search.Solution``."""
    from ..search import Policy, greedy, majority

    if arm.model not in engines:
        raise ValueError(f"arm {arm.name!r} needs model {arm.model!r}; engines given: {sorted(engines)}")
    policy = Policy(engines[arm.model], task, arm.mode, temperature=arm.temperature, max_tokens=arm.max_tokens,
                    seed=seed)
    if arm.greedy:
        return greedy.solve(problem, policy)
    if arm.verifier:
        from ..search import weighted_majority

        if arm.verifier not in engines:
            raise ValueError(f"arm {arm.name!r} needs verifier {arm.verifier!r}; engines given: {sorted(engines)}")
        return weighted_majority.solve(problem, policy, engines[arm.verifier], n=arm.n)
    return majority.solve(problem, policy, n=arm.n)
