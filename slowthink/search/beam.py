"""Step-level beam search guided by a process verifier (System-2 only).

A step is one line of reasoning (``STEP_DELIMITER`` = "\\n"). Each round samples ``n`` candidate next steps,
split evenly over the live beams (all ``n`` from the root in the first round), as continuations that stop
at the next "\\n" (an engine stop string); each
candidate prefix is scored with ``verifier.score_steps`` aggregated by ``agg`` (min, prod or last) and
the ``beam_width`` best (ties: higher policy log-probability) survive. A surviving beam whose line closed
the think block (``</think>``) gets its answer sampled in one go (no stop string) and is finished; a beam
whose sample ended the turn (eos) or reached ``policy.max_tokens`` is finished too. The best finished
beam wins: well-formed first, then the verifier's outcome score when it has ``score``, else the
aggregated step score, then log-probability. When the budget runs out first, the best beam so far is
returned, finished or not.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..chat import Mode, STEP_DELIMITER, THINK_CLOSE
from .base import (
    BudgetExhausted,
    Policy,
    Solution,
    reasoning_steps,
    require_verifier,
    score_steps,
    verifier_tokens,
)


@dataclass
class Beam:
    text: str = ""  # completion text so far
    tokens: int = 0  # tokens generated along this beam (for policy.max_tokens)
    logp: float = 0.0  # sum of the policy's log-probs of those tokens
    score: float = 0.0  # aggregated verifier step score of the reasoning so far
    done: bool = False


def solve(problem, policy: Policy, verifier=None, budget: int | None = None, *, n: int = 8, beam_width: int = 2,
          agg: str = "last", max_steps: int = 64, step_tokens: int | None = None) -> Solution:
    require_verifier(verifier, "beam")
    if not callable(getattr(verifier, "score_steps", None)):
        raise ValueError(f"beam search needs a step verifier (score_steps); {type(verifier).__name__} has none")
    if policy.mode != Mode.SYSTEM2:
        raise ValueError("beam search works on reasoning steps: use mode system2")
    if beam_width < 1 or n < beam_width:
        raise ValueError(f"need 1 <= beam_width <= n, got beam_width={beam_width}, n={n}")
    step_tokens = step_tokens or policy.max_tokens
    meter = policy.new_meter(problem, budget, "beam")
    v0 = verifier_tokens(verifier)
    prompt = policy.prompt_ids(problem)
    beams, finished, rounds = [Beam()], [], []
    exhausted = False
    for _ in range(max_steps):
        if not beams:
            break
        try:
            comps = policy.sample_many([prompt + policy.encode(b.text) for b in beams], max(1, n // len(beams)), meter,
                                       max_tokens=[min(step_tokens, policy.max_tokens - b.tokens) for b in beams],
                                       stop=(STEP_DELIMITER,))
        except BudgetExhausted:
            exhausted = True
            break
        cands, seen = [], set()
        for b, cs in zip(beams, comps):
            for c in cs:
                eos = policy.ended_turn(c)
                text = b.text + c.text + (STEP_DELIMITER if c.finish_reason == "stop" and not eos else "")
                if text in seen:  # identical prefixes: keep one (diversity), its tokens still count
                    continue
                seen.add(text)
                tokens = b.tokens + len(c.token_ids)
                cands.append(Beam(text, tokens, b.logp + sum(c.logprobs),
                                  score_steps(verifier, problem, reasoning_steps(policy, text), agg),
                                  done=eos or tokens >= policy.max_tokens))
        order = sorted(range(len(cands)), key=lambda i: (-cands[i].score, -cands[i].logp, i))
        kept = [cands[i] for i in order[:beam_width]]
        rounds.append([{"text": c.text, "score": c.score, "kept": any(c is k for k in kept)} for c in cands])
        closing = [b for b in kept if not b.done and THINK_CLOSE in b.text]
        if closing:  # the think block is closed: sample each answer to the end of the turn
            try:
                answers = policy.sample_many([prompt + policy.encode(b.text) for b in closing], 1, meter,
                                             max_tokens=[policy.max_tokens - b.tokens for b in closing])
            except BudgetExhausted:
                exhausted = True
                answers = [[] for _ in closing]
            for b, cs in zip(closing, answers):
                if cs:
                    b.text, b.tokens, b.logp = b.text + cs[0].text, b.tokens + len(cs[0].token_ids), b.logp + sum(
                        cs[0].logprobs)
                    b.done = True
        finished += [b for b in kept if b.done]
        beams = [b for b in kept if not b.done]
        if exhausted:
            break
    pool = finished or beams or [Beam()]

    def final(b: Beam) -> tuple:
        wf = policy.task.score(problem, b.text, policy.mode).well_formed
        outcome = float(verifier.score(problem, b.text)) if callable(getattr(verifier, "score", None)) and wf \
            else b.score
        return (wf, outcome, b.logp)

    best = max(pool, key=final)
    return policy.solution(problem, best.text, meter, verifier, v0, rounds=rounds, finished=best.done,
                           budget_exhausted=exhausted, step_score=best.score)
