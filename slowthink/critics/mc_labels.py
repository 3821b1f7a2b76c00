"""Automatic step labels by Monte-Carlo rollouts (Math-Shepherd, Wang et al. 2023, arXiv:2312.08935).

For a step prefix of a policy sample, roll out ``k`` completions from it with the policy; the *soft* label
is the fraction that reach the right answer (an estimate of the prefix's value under the policy), the
*hard* label whether any does. No human and no ground-truth step check is involved: only the task's
answer check on finished rollouts.

Departures from the paper:
- Identical prefixes (same problem, same steps) are rolled out once: samples of one problem usually
  share their first steps.
- With ``reuse_samples`` the sampled solutions themselves count as rollouts of every prefix they start
  with: each is an independent draw from the policy given that prefix, so the estimate stays unbiased
  and gets ``k`` + (number of samples sharing the prefix) outcomes for the price of ``k``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..tasks.base import Problem
from .segment import completion_steps, prefix_text


@dataclass
class Sample:
    """One policy sample of a problem, scored by the task."""

    problem: Problem
    completion: str
    correct: bool
    well_formed: bool
    steps: list[str]


@dataclass
class StepLabels:
    soft: list[float]  # fraction of rollouts from each step prefix that reach the right answer
    hard: list[bool]  # any rollout from it does
    rollouts: list[int] = field(default_factory=list)  # outcomes behind each label


def soft_hard(outcomes: list[bool]) -> tuple[float, bool]:
    """Math-Shepherd's two estimators from the rollout outcomes of one prefix."""
    if not outcomes:
        raise ValueError("no rollouts to label from")
    return sum(outcomes) / len(outcomes), any(outcomes)


def sample_solutions(policy, problems: list[Problem], n: int, meter) -> list[Sample]:
    """``n`` completions of each problem (one batched engine run), scored by the task."""
    comps = policy.sample_many([policy.prompt_ids(p) for p in problems], n, meter)
    out = []
    for p, cs in zip(problems, comps):
        for c in cs:
            s = policy.task.score(p, c.text, policy.mode)
            out.append(Sample(p, c.text, s.correct, s.well_formed, completion_steps(policy.task, c.text)))
    return out


def prefix_outcomes(samples: list[Sample]) -> dict[tuple[str, str], list[bool]]:
    """For every distinct (problem key, step prefix) of the samples: the outcomes of the samples that
    start with it (each sample is a rollout of its own prefixes)."""
    out: dict[tuple[str, str], list[bool]] = {}
    for s in samples:
        for i in range(1, len(s.steps) + 1):
            out.setdefault((s.problem.key, prefix_text(s.steps, i)), []).append(s.correct)
    return out


def mc_label(policy, samples: list[Sample], k: int, meter, reuse_samples: bool = True,
             temperature: float | None = None, progress: bool = False, chunk: int = 128) -> list[StepLabels]:
    """Per-step soft and hard labels of each sample from ``k`` rollouts per distinct step prefix, batched
    (the engine prefills each prefix once and samples ``k`` from it). ``temperature`` (default: the
    policy's) is the completer's: below the sampling temperature the labels say less about how often the
    policy finishes a prefix and more about whether the prefix can still lead to the right answer."""
    if k < 0 or (k == 0 and not reuse_samples):
        raise ValueError(f"need k >= 1 rollouts per prefix (or k = 0 with reuse_samples), got {k}")
    own = prefix_outcomes(samples)
    problems = {s.problem.key: s.problem for s in samples}
    keys = list(own)
    outcomes = {key: (list(own[key]) if reuse_samples else []) for key in keys}
    if k > 0 and keys:
        from tqdm.auto import tqdm

        with tqdm(total=len(keys) * k, unit="rollout", desc="mc labels", disable=not progress) as bar:
            for lo in range(0, len(keys), chunk):  # chunks only for the progress bar; each is one engine run
                part = keys[lo:lo + chunk]
                prompts = [policy.prompt_ids(problems[pk]) + policy.encode(text) for pk, text in part]
                for (pk, text), comps in zip(part, policy.sample_many(prompts, k, meter, temperature=temperature)):
                    outcomes[(pk, text)] += [policy.task.score(problems[pk], text + c.text, policy.mode).correct
                                             for c in comps]
                bar.update(len(part) * k)
    labels = []
    for s in samples:
        pairs = [soft_hard(outcomes[(s.problem.key, prefix_text(s.steps, i))]) for i in range(1, len(s.steps) + 1)]
        labels.append(StepLabels([p[0] for p in pairs], [p[1] for p in pairs],
                                 [len(outcomes[(s.problem.key, prefix_text(s.steps, i))])
                                  for i in range(1, len(s.steps) + 1)]))
    return labels
