"""Reflect-and-revise: the model drafts, is cued to check its draft ("Wait"), and revises (System-2 only).

Self-Refine (Madaan et al. 2023) loops generate → feedback → refine with few-shot prompts to a large
model; s1 (Muennighoff et al. 2025) appends "Wait" where the model wanted to stop thinking, so that it
keeps reasoning. Here one chain of thought carries both: the draft's thinking (its ``</think>`` and
answer dropped), then the cue on its own line (:func:`with_cue`), then the model continues — the
revision — closes the think block and answers. ``rounds`` > 1 cues it again after each revision.
Small models only continue sensibly after the cue if they were trained on that shape
(``slowthink train revise``, ``slowthink.rl.revise``), which builds its traces with the same
:func:`with_cue`, so the trained and the inference format cannot drift apart.

Departures and details:
- Each phase (draft, revision 1, ...) is generated to the end of the turn, so its answer is known and
  reported (``extra["answers"]``: draft first, final last; ``extra["changed"]``: final != draft). With
  ``interim_answers=False`` every phase but the last stops at ``</think>`` and saves the answer tokens.
- ``n`` > 1 runs n independent draft→revise chains (drafts sampled at ``draft_temperature``, default
  the policy's temperature; one chain drafts greedily by default) and majority-votes their final,
  well-formed answers; the chosen completion is the first chain with the winning answer.
- Revisions are greedy by default (``revise_temperature``).
- Budget (a hard cap, see ``slowthink.search.base``): every phase but the last may use at most
  ``budget // (n * (rounds + 1))`` tokens per chain; the last gets what is left. Generated tokens are
  counted exactly; the inserted cue text is not (it is listed in ``extra["inserted_text"]``).
"""

from __future__ import annotations

from collections import Counter

from ..chat import Mode, THINK_CLOSE
from .base import BudgetExhausted, Policy, Solution

REVISE_CUE = "Wait"


def with_cue(thinking: str, cue: str = REVISE_CUE, end_line: bool = True) -> str:
    """The thinking so far followed by the cue on a line of its own (``"...\\nWait\\n"``): the one place
    the revision format is written, for training traces and for inference alike. ``end_line=False``
    leaves the line break after the cue to the model (budget forcing does: a revise-trained model writes
    it, which gives the trained sequence token for token)."""
    if not cue or "\n" in cue or THINK_CLOSE in cue:
        raise ValueError(f"the cue must be one non-empty line without {THINK_CLOSE}, got {cue!r}")
    sep = "" if not thinking or thinking.endswith("\n") else "\n"
    return f"{thinking}{sep}{cue}" + ("\n" if end_line else "")


def thinking_of(text: str) -> str:
    """The think-block part of a (possibly unclosed) System-2 completion: text before ``</think>``."""
    return text.split(THINK_CLOSE)[0]


def solve(problem, policy: Policy, verifier=None, budget: int | None = None, *, rounds: int = 1, n: int = 1,
          draft_temperature: float | None = None, revise_temperature: float = 0.0, cue: str = REVISE_CUE,
          interim_answers: bool = True) -> Solution:
    if policy.mode != Mode.SYSTEM2:
        raise ValueError("reflect-and-revise revises the think block: use mode system2")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be an integer >= 1, got {rounds!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    with_cue("", cue)  # validates the cue before any token is spent
    meter = policy.new_meter(problem, budget, "reflect")
    t_draft = (0.0 if n == 1 else policy.temperature) if draft_temperature is None else float(draft_temperature)
    phases = rounds + 1
    phase_cap = policy.max_tokens if budget is None else max(1, min(policy.max_tokens, budget // (n * phases)))

    prefixes = [""] * n  # per chain: the text the next phase continues (thinking so far + cue)
    texts = [""] * n  # per chain: its latest full completion
    answers: list[list[str | None]] = [[] for _ in range(n)]
    inserted: list[list[str]] = [[] for _ in range(n)]
    done_phases = 0
    prompt = policy.prompt_ids(problem)
    for phase in range(phases):
        last = phase == phases - 1
        stop = () if last or interim_answers else (THINK_CLOSE,)
        try:
            outs = policy.sample_many([prompt + policy.encode(p) for p in prefixes], 1, meter,
                                      max_tokens=policy.max_tokens if last else phase_cap, stop=stop,
                                      temperature=t_draft if phase == 0 else revise_temperature)
        except BudgetExhausted:
            break
        done_phases += 1
        for i, [c] in enumerate(outs):
            closed = THINK_CLOSE if stop and c.finish_reason == "stop" and not policy.ended_turn(c) else ""
            texts[i] = prefixes[i] + c.text + closed
            s = policy.task.score(problem, texts[i], policy.mode)
            answers[i].append(s.answer if s.well_formed else None)
            if not last:  # keep the thinking (close and answer dropped), cue the revision
                nxt = with_cue(prefixes[i] + thinking_of(c.text), cue)
                inserted[i].append(nxt[len(prefixes[i] + thinking_of(c.text)):])
                prefixes[i] = nxt
    if done_phases == 0:
        return policy.solution(problem, "", meter, budget_exhausted=True, rounds_done=0)

    finals = [a[-1] for a in answers]
    votes = Counter(a for a in finals if a is not None)
    pick = finals.index(votes.most_common(1)[0][0]) if votes else 0
    if done_phases < phases:  # the budget ran out after the cue: the chosen completion is the last full one
        inserted[pick] = inserted[pick][:done_phases - 1]
    draft_answer, final_answer = answers[pick][0], answers[pick][-1]
    extra = {"rounds_done": done_phases - 1, "answers": answers[pick], "draft_answer": draft_answer,
             "final_answer": final_answer, "changed": draft_answer != final_answer,
             "inserted_text": inserted[pick], "cue": cue}
    if n > 1:
        extra.update(votes=dict(votes), chains=n)
    return policy.solution(problem, texts[pick], meter, **extra)
