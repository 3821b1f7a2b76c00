"""``reasoning_effort`` high and auto on the local engine: more than one engine job per request.

* ``high``: self-consistency. Each returned choice is the majority answer of ``HIGH.n`` samples (at
  T=0.7 unless the request sets a temperature; temperature 0 samples once, as votes would all agree).
* ``auto``: the router saved beside the model (``MODEL_DIR/router``, ``slowthink train router``). Its
  signals run first (the System-2 prompt's hidden state in a worker thread; the System-1 greedy answer and
  samples as ordinary engine jobs, batched with everyone else's), then the arm it picks runs: the System-1
  answer already in hand, System-2 greedy, or a System-2 vote. With no router saved, auto is medium.

Every generated token is billed: ``usage.completion_tokens`` counts the signals and the samples that lost
the vote too, and ``usage.completion_tokens_details.reasoning_tokens`` counts them as hidden reasoning.
The response's ``route`` field says what ran and why. These requests stream their answer once it is
chosen (the vote needs every sample): the deltas arrive together at the end, in the usual order.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from ..effort import EFFORTS
from ..engine import Completion, SamplingParams
from ..evaluate import majority
from ..router.signals import feature_row, prompt_hidden
from ..tokenizer import render_prompt
from .prepare import Prepared
from ..chat import Mode, THINK_CLOSE, split_output

HIGH = EFFORTS["high"]

Generate = Callable[[list[int], int, SamplingParams], Awaitable[list[Completion]]]


@dataclass
class Planned:
    p: Prepared  # as answered: mode and prompt of the arm that ran
    completions: list[Completion]  # one per choice
    extra_tokens: int  # generated beyond the returned completions (signals, losing samples)
    route: dict


def voted_answer(text: str, mode: str) -> str | None:
    """What a sample votes for: its answer text; nothing when the think block never closed or it is empty."""
    if mode == Mode.SYSTEM2 and THINK_CLOSE not in text:
        return None
    return split_output(text, mode)[1] or None


def vote(samples: list[Completion], k: int, mode: str) -> list[Completion]:
    """Per consecutive group of ``k`` samples, the first sample that gave the most common answer."""
    out = []
    for g in range(0, len(samples), k):
        group = samples[g:g + k]
        answers = [voted_answer(c.text, mode) for c in group]
        winner = majority(answers)
        out.append(group[answers.index(winner)] if winner is not None else group[0])
    return out


def generated(completions: list[Completion]) -> int:
    return sum(len(c.token_ids) for c in completions)


async def run_vote(p: Prepared, generate: Generate, k: int, temperature: float, route: dict,
                   extra: int = 0) -> Planned:
    n = p.req.n
    if p.req.temperature is not None:
        temperature = p.req.temperature
    if temperature == 0:
        k = 1  # greedy samples are identical: one is the vote
    sampling = dataclasses.replace(p.sampling, temperature=temperature)
    samples = await generate(p.prompt_ids, n * k, sampling)
    chosen = vote(samples, k, p.mode)
    return Planned(p, chosen, extra + generated(samples) - generated(chosen),
                   {**route, "samples_per_choice": k, "temperature": temperature})


async def run_high(p: Prepared, generate: Generate) -> Planned:
    return await run_vote(p, generate, HIGH.n, HIGH.temperature, {"arm": "high", "why": HIGH.describe()})


async def run_auto(p: Prepared, generate: Generate, router, model, tok, context: int) -> Planned:
    """Route one request: signals, the router's decision, then its arm."""
    s1_ids = render_prompt(tok, p.messages, Mode.SYSTEM1)
    s2_ids = render_prompt(tok, p.messages, Mode.SYSTEM2)
    signal_sampling = SamplingParams(max_tokens=router.signal_max_tokens, temperature=0.0)
    jobs = {}
    if "s1" in router.signals:
        jobs["greedy"] = generate(s1_ids, 1, signal_sampling)
    if "agree" in router.signals:
        jobs["samples"] = generate(s1_ids, 2, dataclasses.replace(signal_sampling, temperature=1.0, seed=p.req.seed))
    hidden = None
    if "prompt" in router.signals:
        jobs["hidden"] = asyncio.to_thread(prompt_hidden, model, [s2_ids])
    got = dict(zip(jobs, await asyncio.gather(*jobs.values())))
    greedy = got["greedy"][0] if "greedy" in got else None
    samples = got.get("samples")
    hidden = got["hidden"][0] if "hidden" in got else None
    signal_tokens = generated([greedy] if greedy else []) + generated(samples or [])
    d = router.decide_features(feature_row(router.signals, hidden, greedy, samples), signal_tokens)
    arm = router.arms[d.arm]
    route = {"arm": arm.name, "describe": arm.describe(), "why": d.why, "signal_tokens": signal_tokens,
             "predicted_success": dict(zip(router.arm_names, np.round(d.success, 4).tolist()))}
    ids = s1_ids if arm.mode == Mode.SYSTEM1 else s2_ids
    q = dataclasses.replace(p, mode=arm.mode, prompt_ids=ids)
    if router.reuses_s1()[d.arm] and p.req.n == 1 and greedy is not None:
        return Planned(q, [greedy], signal_tokens - len(greedy.token_ids), route)
    asked = p.req.max_completion_tokens or p.req.max_tokens
    room = context - len(ids)
    q = dataclasses.replace(q, sampling=dataclasses.replace(p.sampling, max_tokens=min(asked or arm.max_tokens, room)))
    return await run_vote(q, generate, arm.n, 0.0 if arm.greedy else arm.temperature, route, signal_tokens)
