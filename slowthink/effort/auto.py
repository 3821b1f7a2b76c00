"""``reasoning_effort="auto"``: the router's signals, its decision, then the arm it picks.

The signals run concurrently: the System-2 prompt's hidden state, the System-1 greedy answer and two
System-1 samples (``agree``), and the System-2 greedy solution with the checker's verdict (``s2check``,
only where the question carries a checker). When the chosen arm is System-1 greedy (or System-2 greedy
after ``s2check``) the signal's own answer is returned: no more tokens. Under a budget the signals take at
most half of one choice's share (``effort.budget``); a budget that cannot pay for them runs medium instead
and says so.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..chat import Mode
from ..engine import Completion, SamplingParams
from ..router.arms import CHECK
from ..router.signals import feature_row
from .budget import signal_cap
from .fixed import model_for, run_setting
from .question import Answered, Model, Question, generated
from .table import AUTO_FALLBACK, EFFORTS, arm_setting


@dataclass
class SignalRun:
    features: np.ndarray
    tokens: int  # generated
    samples: int
    verifier_tokens: int
    answers: dict[str, tuple[Completion, Mode, list[int]]]  # signal -> the answer it produced, its mode, prompt


async def route(question: Question, router, models: Mapping[str, Model], tradeoff: float | None = None) -> Answered:
    """Route one question: signals, the router's decision, then its arm."""
    sig = await signals(question, router, models)
    if sig is None:
        why = (f"max_completion_tokens {question.budget} cannot pay for the router's signals: auto runs "
               f"{AUTO_FALLBACK}")
        return await run_setting(question, EFFORTS[AUTO_FALLBACK], models, {"arm": AUTO_FALLBACK, "why": why})
    d = router.decide_features(sig.features, sig.tokens, tradeoff)
    arm = router.arms[d.arm]
    said = {"arm": arm.name, "describe": arm.describe(), "why": d.why, "signal_tokens": sig.tokens,
            "predicted_success": dict(zip(router.arm_names, np.round(d.success, 4).tolist())),
            "predicted_tokens": dict(zip(router.arm_names, np.round(d.cost, 1).tolist()))}
    reused = router.reused()[d.arm]
    if reused in sig.answers and question.n == 1:  # the signal already answered with this arm
        completion, mode, ids = sig.answers[reused]
        return Answered(mode, ids, [completion], sig.tokens, sig.samples, sig.verifier_tokens, said)
    left = None if question.budget is None else (question.budget * question.n - sig.tokens) // question.n
    ran = await run_setting(question, arm_setting(arm), models, said, left)
    return dataclasses.replace(ran, generated=ran.generated + sig.tokens, samples=ran.samples + sig.samples,
                               verifier_tokens=ran.verifier_tokens + sig.verifier_tokens)


async def signals(question: Question, router, models: Mapping[str, Model]) -> SignalRun | None:
    """The router's signals for one question (None: the question's budget cannot pay for them)."""
    names = router.signals
    fast = model_for(models, router.signal_model("fast"), Mode.SYSTEM1)
    slow = model_for(models, router.signal_model("slow"), Mode.SYSTEM2)
    if "prompt" in names and slow.hidden is None:
        raise ValueError("the router's 'prompt' signal needs the model's hidden states, which this model does "
                         "not give")
    s1_ids, s2_ids = fast.prompt(question, Mode.SYSTEM1), slow.prompt(question, Mode.SYSTEM2)
    sequences = ("s1" in names) + 2 * ("agree" in names) + ("s2check" in names)
    cap = signal_cap(question.budget, sequences, router.signal_max_tokens)
    s2_cap = signal_cap(question.budget, sequences, router.s2_signal_max_tokens)
    if ("s1" in names and cap < 1) or ("s2check" in names and s2_cap < 1):
        return None
    greedy = SamplingParams(max_tokens=cap, temperature=0.0)
    jobs = {}
    if "s1" in names:
        jobs["s1"] = fast.generate(s1_ids, 1, greedy)
    if "agree" in names:
        jobs["agree"] = fast.generate(s1_ids, 2, dataclasses.replace(greedy, temperature=1.0,
                                                                     seed=question.sampling.seed))
    if "prompt" in names:
        jobs["prompt"] = slow.hidden(s2_ids)
    if "s2check" in names:
        jobs["s2check"] = slow.generate(s2_ids, 1, dataclasses.replace(greedy, max_tokens=s2_cap))
    got = dict(zip(jobs, await asyncio.gather(*jobs.values())))
    return signal_run(question, names, got, s1_ids, s2_ids)


def signal_run(question: Question, names, got: dict, s1_ids: list[int], s2_ids: list[int]) -> SignalRun:
    """The features, cost and reusable answers of the signals' results (``got``: by signal name)."""
    s1, s2 = (got[k][0] if k in got else None for k in ("s1", "s2check"))
    check, checked = None, 0
    if s2 is not None:
        if CHECK not in question.verifiers:
            raise ValueError("the router's 's2check' signal needs a checker, which this question does not carry")
        [verdict], checked = question.verifiers[CHECK]([s2.text])
        check = (verdict, s2)
    completions = [c for k in ("s1", "agree", "s2check") for c in got.get(k, [])]
    answers = {}
    if s1 is not None:
        answers["s1"] = (s1, Mode.SYSTEM1, s1_ids)
    if s2 is not None:
        answers["s2check"] = (s2, Mode.SYSTEM2, s2_ids)
    features = feature_row(names, got.get("prompt"), s1, got.get("agree"), check)
    return SignalRun(features, generated(completions), len(completions), checked, answers)
