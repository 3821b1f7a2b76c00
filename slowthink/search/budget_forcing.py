"""Budget forcing (s1, Muennighoff et al. 2025): control how long the model thinks (System-2 only).

* ``max_thinking``: cap on the tokens generated inside the think block. When the cap is hit before the
  model closes it, ``</think>`` is forced (on a new line, followed by the blank line of the output
  format) and the model writes its answer from there. (Whether it then answers or keeps reasoning,
  which makes the completion malformed, is up to the model.)
* ``min_thinking`` + ``max_waits``: when the model closes the think block (or ends its turn) after fewer
  than ``min_thinking`` thinking tokens, the close is suppressed and ``wait`` ("Wait") is appended to
  the thinking instead, at the start of a line, so the model keeps thinking; at most ``max_waits`` times.
  The cue and its layout are reflect-and-revise's (``slowthink.search.reflect.with_cue``, ``REVISE_CUE``)
  minus the line break after the cue, which the model writes: a model trained with ``slowthink train
  revise`` writes it and continues with a revision, exactly the sequence it was trained on.

Thinking is generated with ``</think>`` as a stop string, so the model's own close is seen (and can be
suppressed) before anything follows it. Generated thinking tokens (``extra["thinking_tokens"]``, the
suppressed closes included) never exceed ``max_thinking``; the inserted text (closes, "Wait") is
reported as ``extra["forced_text"]`` and is not counted as policy tokens. With a ``budget``,
``answer_reserve`` tokens of it are kept for the answer.
"""

from __future__ import annotations

from ..chat import Mode, THINK_CLOSE
from .base import BudgetExhausted, Policy, Solution
from .reflect import REVISE_CUE, with_cue


def solve(problem, policy: Policy, verifier=None, budget: int | None = None, *, max_thinking: int | None = None,
          min_thinking: int = 0, max_waits: int = 1, wait: str = REVISE_CUE, answer_reserve: int = 16) -> Solution:
    if policy.mode != Mode.SYSTEM2:
        raise ValueError("budget forcing controls the think block: use mode system2")
    if max_thinking is not None and max_thinking < 1:
        raise ValueError(f"max_thinking must be >= 1 or None, got {max_thinking}")
    meter = policy.new_meter(problem, budget, "budget_forcing")
    cap = min(max_thinking or policy.max_tokens, policy.max_tokens)
    if budget is not None:
        cap = min(cap, max(1, budget - answer_reserve))
    thinking, thinking_tokens, waits, forced = "", 0, 0, []
    closed_by_model = False
    while True:
        left = cap - thinking_tokens
        if left < 1:
            break
        try:
            [c] = policy.continue_from(problem, thinking, 1, meter, max_tokens=left, stop=(THINK_CLOSE,))
        except BudgetExhausted:
            break
        thinking_tokens += len(c.token_ids)
        thinking += c.text
        if c.finish_reason != "stop":  # hit the cap (or the budget): force the close below
            break
        if thinking_tokens < min_thinking and waits < max_waits:
            cued = with_cue(thinking, wait, end_line=False)
            forced.append(cued[len(thinking):])
            thinking = cued
            waits += 1
            continue
        closed_by_model = not policy.ended_turn(c)
        break
    if closed_by_model:  # the model's own close, put back as it wrote it
        close = THINK_CLOSE
    else:
        # The whole separator of the output format, so the model stands where the answer begins.
        close = ("" if not thinking or thinking.endswith("\n") else "\n") + THINK_CLOSE + "\n\n"
        forced.append(close)
    prefix = thinking + close
    answer_text, answer_tokens = "", 0
    try:
        [a] = policy.continue_from(problem, prefix, 1, meter,
                                   max_tokens=max(1, policy.max_tokens - thinking_tokens))
        answer_text, answer_tokens = a.text, len(a.token_ids)
    except BudgetExhausted:
        pass
    return policy.solution(problem, prefix + answer_text, meter, thinking_tokens=thinking_tokens,
                           answer_tokens=answer_tokens, waits=waits, forced_close=not closed_by_model,
                           forced_text=forced)
