"""Recall: facts given long before the question that needs them, a task for the ``memory`` tool.

Level n gives n facts ``key=value`` (distinct two-letter keys, three-digit values) and then asks for the value
of one of the facts in the first half: the answer is written far before the question. In one context the
question lists the facts and ends with the query::

    ab=123;cd=456;ef=789;?ab                ->  123

The worked solution copies the fact it found (``ab=123``); the direct answer is the value. A model whose
context window holds fewer facts than the problem gives can only answer if what fell out of the window was kept
elsewhere: :meth:`Recall.sessions` splits the same problem into n + 1 sessions, one per fact and then the
query, each its own episode with a fresh context (``benchmarks/memory_tool.py``). A fact session is answered
``ok`` once the fact is stored; the query session with the value. With the ``memory`` tool
(``slowthink.tools.memory``, ``long_term`` scope, kept across episodes) the model writes each fact in its
session and reads it back in the last one.
"""

from __future__ import annotations

import random
import re
import string

from .base import BaseTask, Problem, Score
from ..chat import Mode, check_mode, split_completion

KEY_LETTERS = string.ascii_lowercase
FACT = re.compile(r"([a-z]{2})=([0-9]{3})")
STORED = "ok"  # the answer of a fact session


def fact_text(key: str, value: str) -> str:
    return f"{key}={value}"


class Recall(BaseTask):
    name = "recall"

    def __init__(self, max_facts: int = 64):
        if isinstance(max_facts, bool) or not isinstance(max_facts, int) or not 2 <= max_facts <= 200:
            raise ValueError(f"recall: max_facts must be an integer in 2..200, got {max_facts!r}")
        self.levels = tuple(range(2, max_facts + 1))

    def sample(self, rng: random.Random, level: int) -> Problem:
        n = self.check_level(level)
        keys = rng.sample([a + b for a in KEY_LETTERS for b in KEY_LETTERS], n)
        facts = [(k, str(rng.randint(100, 999))) for k in keys]
        query = rng.randrange(n // 2)  # a fact in the first half: far from the question
        key, value = facts[query]
        question = ";".join(fact_text(k, v) for k, v in facts) + f";?{key}"
        return Problem(key=question, level=n, question=question, answer=value,
                       data={"facts": [list(f) for f in facts], "query": query})

    def solution_lines(self, problem: Problem) -> list[str]:
        key, value = problem.data["facts"][problem.data["query"]]
        return [fact_text(key, value)]

    def window(self, problem: Problem, keep: int) -> Problem:
        """The problem as a context window of ``keep`` facts sees it: the oldest facts dropped (a sliding window
        over the conversation), the query kept. The answer is unchanged; it may no longer be in the question."""
        facts = problem.data["facts"]
        if keep < 0:
            raise ValueError(f"recall: keep must be >= 0, got {keep}")
        kept = facts[max(0, len(facts) - keep):]
        key = facts[problem.data["query"]][0]
        question = ";".join(fact_text(k, v) for k, v in kept) + f";?{key}"
        return Problem(key=problem.key, level=problem.level, question=question, answer=problem.answer,
                       data={**problem.data, "window": len(kept)})

    def sessions(self, problem: Problem) -> list[Problem]:
        """The problem as n + 1 sessions: each fact alone (answer ``ok``), then the query alone (answer: the
        value). ``data``: the chain (the whole problem's key) and the session's index."""
        facts, key = problem.data["facts"], problem.data["facts"][problem.data["query"]][0]
        out = [Problem(key=f"{problem.key}#{i}", level=problem.level, question=fact_text(k, v), answer=STORED,
                       data={"chain": problem.key, "index": i, "fact": [k, v]})
               for i, (k, v) in enumerate(facts)]
        out.append(Problem(key=f"{problem.key}#query", level=problem.level, question=f"?{key}",
                           answer=problem.answer, data={"chain": problem.key, "index": len(facts), "query": key}))
        return out

    def score(self, problem: Problem, completion: str, mode: Mode = Mode.SYSTEM2) -> Score:
        parts = split_completion(completion, check_mode(mode))
        answer = parts.answer_text
        well_formed = parts.well_formed and bool(answer) and (answer == STORED or answer.isdigit())
        correct = well_formed and answer == problem.answer
        return Score(reward=1.0 if correct else 0.0, answer=answer if well_formed else None,
                     well_formed=well_formed, correct=correct)
