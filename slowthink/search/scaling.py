"""Test-time scaling curves from one pool of samples per problem: accuracy and policy tokens at N = 1, 2, 4, ...

Running majority@N, best-of-N, ... afresh for every N costs ``sum(N)`` samples per problem; drawing one pool
of ``N_max`` samples and scoring every N on the pool's first N samples costs ``N_max`` and gives every N the
same samples (so the curves are smoother and directly comparable). Each rule here picks one sample of a
prefix by the same rule as the strategy module it stands for:

* ``majority`` (``search/majority.py``): the most common well-formed answer (``slowthink.evaluate.majority``,
  ties: seen first); the first sample with that answer.
* ``confidence_majority``: a confidence-weighted majority that needs no trained verifier (after DeepConf,
  Fu et al. 2025, "Deep Think with Confidence"): each well-formed sample votes with its own confidence, the
  geometric mean of its token probabilities ``exp(mean logprob)`` under the sampling distribution (the
  engine's ``Completion.logprobs``); ``weighted_vote`` of ``search/weighted_majority.py``; the most confident
  sample with the winning answer.
* ``best_of_n_<key>`` / ``weighted_majority_<key>`` (``search/best_of_n.py``, ``search/weighted_majority.py``):
  with a verifier score stored in every well-formed sample under ``key`` (``score_pool`` adds ``prm`` and
  ``orm``); best-of-N takes the well-formed sample with the highest score (ties: earlier).
* ``pass_at_n_ceiling``: right if any of the N samples is right (what a perfect picker would get; not a
  strategy, a ceiling).

Tokens are exact: the policy tokens of N are the sum of the first N samples' generated tokens (eos included,
as ``Meter`` counts them); verifier tokens are the tokens the critic reads for the scored samples among them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from ..evaluate import majority
from .base import Meter, Policy, reasoning_steps
from .weighted_majority import weighted_vote

Sample = dict  # text, tokens, answer (None if malformed), well_formed, correct, confidence [, prm, orm, ...]
Pool = list[Sample]

CEILING = "pass_at_n_ceiling"
DEFAULT_RULES = ("majority", "confidence_majority", CEILING)


def doubling(n_max: int) -> list[int]:
    """1, 2, 4, ... up to ``n_max`` (``n_max`` itself included when it is not a power of two)."""
    if n_max < 1:
        raise ValueError(f"n_max must be >= 1, got {n_max}")
    ns = [1 << i for i in range(n_max.bit_length()) if 1 << i <= n_max]
    return ns if ns[-1] == n_max else ns + [n_max]


def confidence(logprobs: Sequence[float]) -> float:
    """A sample's confidence: the geometric mean of its token probabilities, ``exp(mean logprob)``, in (0, 1];
    0.0 for an empty completion."""
    return math.exp(sum(logprobs) / len(logprobs)) if len(logprobs) else 0.0


def draw_pool(policy: Policy, problems, n: int, chunk: int = 16) -> list[Pool]:
    """``n`` samples of every problem (``chunk`` problems per batched engine run): text, generated tokens, parsed
    answer, well-formed, correct, confidence."""
    pools = []
    for i in range(0, len(problems), chunk):
        batch = problems[i:i + chunk]
        comps = policy.sample_many([policy.prompt_ids(p) for p in batch], n, Meter(tag=f"pool{i}"))
        for p, cs in zip(batch, comps):
            pool = []
            for c in cs:
                s = policy.task.score(p, c.text, policy.mode)
                pool.append({"text": c.text, "tokens": len(c.token_ids), "answer": s.answer if s.well_formed else None,
                             "well_formed": s.well_formed, "correct": s.correct, "confidence": confidence(c.logprobs)})
            pools.append(pool)
    return pools


def score_pool(policy: Policy, problems, pools: list[Pool], prm=None, orm=None, **verifiers) -> None:
    """Adds to each well-formed sample its PRM score (step scores of the reasoning, ``min``-aggregated, the
    strategies' default; 0.0 with no step) as ``prm`` and/or its ORM score as ``orm``, and the tokens each
    critic reads for it (``prm_tokens``, ``orm_tokens``). Critics: ``slowthink.critics`` models (batched).
    Further verifiers are scored under the keyword they are passed with (``gen=...`` -> ``gen``, ``gen_tokens``):
    by their outcome score when they have ``score_batch`` (``RecomputeVerifier``), else like the PRM
    (``score_steps_batch``, e.g. ``GenerativeVerifier``); tokens are the critic's ``item_tokens`` of the call
    when it reports them, else the length of its ``encode_sample``."""
    items_p, items_o, where = [], [], []
    for p, pool in zip(problems, pools):
        for s in pool:
            if s["well_formed"]:
                items_p.append((p, reasoning_steps(policy, s["text"])))
                items_o.append((p, s["text"]))
                where.append(s)
    steps_critics = ({"prm": prm} if prm is not None else {}) | verifiers
    for key, critic in steps_critics.items():
        if key != "prm" and callable(getattr(critic, "score_batch", None)):  # an outcome verifier
            scores = [[x] for x in critic.score_batch(items_o)]
        else:
            scores = critic.score_steps_batch(items_p)
        # a checker (critics/recompute.py) reports what each item cost it; readers cost their encoding
        cost = getattr(critic, "item_tokens", None) or [len(critic.encode_sample(p, st)[0]) if st else 0
                                                        for p, st in items_p]
        for s, ps, c in zip(where, scores, cost):
            s[key] = min(ps) if ps else 0.0
            s[f"{key}_tokens"] = c
    if orm is not None:
        for s, (p, text), osc in zip(where, items_o, orm.score_batch(items_o)):
            s["orm"] = float(osc)
            s["orm_tokens"] = len(orm.encode_sample(p, text)[0])


# -- selection rules: a prefix of a pool -> the index of the chosen sample ----------------------------------

def pick_majority(sub: Pool) -> int:
    answers = [s["answer"] for s in sub]
    w = majority(answers)
    return answers.index(w) if w is not None else 0


def pick_best(sub: Pool, key: str) -> int:
    ranked = [i for i, s in enumerate(sub) if s["well_formed"]]
    return max(ranked, key=lambda i: (sub[i][key], -i)) if ranked else 0


def pick_weighted(sub: Pool, key: str) -> int:
    answers = [s["answer"] for s in sub]
    w = weighted_vote(answers, [s.get(key) for s in sub])
    if w is None:
        return 0
    return max((i for i, a in enumerate(answers) if a == w), key=lambda i: (sub[i][key], -i))


def pick_ceiling(sub: Pool) -> int:
    return next((i for i, s in enumerate(sub) if s["correct"]), 0)


def rule(name: str) -> tuple[Callable[[Pool], int], str | None]:
    """The selection rule called ``name`` and the critic whose tokens it costs (None: no critic)."""
    if name == "majority":
        return pick_majority, None
    if name == "confidence_majority":
        return (lambda sub: pick_weighted(sub, "confidence")), None
    if name == CEILING:
        return pick_ceiling, None
    for prefix, pick in (("best_of_n_", pick_best), ("weighted_majority_", pick_weighted)):
        if name.startswith(prefix) and name[len(prefix):]:
            key = name[len(prefix):]
            return (lambda sub, key=key, pick=pick: pick(sub, key)), key
    raise ValueError(f"unknown pool rule {name!r}: majority, confidence_majority, {CEILING}, best_of_n_KEY or "
                     "weighted_majority_KEY")


def pool_curves(pools: list[Pool], n_values: Sequence[int], rules: Sequence[str] = DEFAULT_RULES) -> dict:
    """``{rule: [{n, n_problems, accuracy, mean_policy_tokens, mean_verifier_tokens}, ...]}``: each rule on the
    first n samples of every pool, for each n (every pool must hold at least ``max(n_values)`` samples)."""
    if not pools:
        raise ValueError("no pools")
    short = min(map(len, pools))
    if max(n_values) > short:
        raise ValueError(f"n up to {max(n_values)} needs pools of that many samples; the smallest has {short}")
    out = {}
    for name in rules:
        pick, critic = rule(name)
        pts = []
        for n in n_values:
            right = tok = vtok = 0
            for pool in pools:
                sub = pool[:n]
                right += sub[pick(sub)]["correct"]
                tok += sum(s["tokens"] for s in sub)
                vtok += sum(s.get(f"{critic}_tokens", 0) for s in sub) if critic else 0
            k = len(pools)
            pts.append({"n": n, "n_problems": k, "accuracy": right / k, "mean_policy_tokens": tok / k,
                        "mean_verifier_tokens": vtok / k})
        out[name] = pts
    return out


def best_point(curves: dict, exclude: Sequence[str] = (CEILING,)) -> dict:
    """The most accurate (strategy, n) of the curves (ties: fewer policy tokens, then the earlier rule)."""
    cands = [{**p, "strategy": name} for name, pts in curves.items() if name not in exclude for p in pts]
    if not cands:
        raise ValueError("no strategy points")
    return min(cands, key=lambda c: (-c["accuracy"], c["mean_policy_tokens"]))


def interp_log(points: list[dict], tokens: float) -> float | None:
    """Accuracy of a curve at ``tokens`` (linear in log tokens); None outside the measured range."""
    pts = sorted(points, key=lambda r: r["mean_policy_tokens"])
    for a, b in zip(pts, pts[1:]):
        if a["mean_policy_tokens"] <= tokens <= b["mean_policy_tokens"]:
            la, lb = math.log(a["mean_policy_tokens"]), math.log(b["mean_policy_tokens"])
            f = 0.0 if lb == la else (math.log(tokens) - la) / (lb - la)
            return a["accuracy"] + f * (b["accuracy"] - a["accuracy"])
    return None
