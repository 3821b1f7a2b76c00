"""Step-recomputing verifier: a second model redoes the small computations each step relies on.

A worked multiplication is a chain of facts a much weaker solver can check: ``347*2 = 694``, ``694 + 20760
= 21454``. The task lists them per step (``task.step_claims``); this verifier asks its *checker* model every
claim's question, greedily, and a step scores 1.0 when the checker's answers agree with every claim it
makes, 0.0 when one disagrees or the step is wrong on its face (``None`` from the task). As an outcome
verifier (``score``), a finished sample scores 1.0 only when every step checks out, the derivation is
complete and the answer is the one it computed.

Why it can work where learned PRMs and ORMs failed here (dev/LOG.md): a critic that reads a
solution has to *be* a multiplier to judge its last row, while the checker only ever answers the
sub-problems (``n``-digit times one digit, ``n``-digit plus ``n``-digit), which a small model learns to
near-perfect accuracy (``slowthink train sft --task-args op=mixed,operands=steps``). Verification is easier
than generation, and the checker cannot solve the original problems itself: reports state its accuracy on
them beside every number it helps.

This is a learned verifier, not the task's answer check: the checker is a model and can be wrong, and the
task only parses steps into claims (it never compares them with the right derivation). ``tokens`` counts
every token the checker reads and writes (prompt + generated) for the questions it was actually asked: within
one call, and across consecutive calls about the same problem, a claim is asked once (greedy answers do not
change); ``item_tokens`` still charges each item every distinct claim it makes, as if checked alone.
"""

from __future__ import annotations

from ..engine import Engine, SamplingParams
from ..tasks.arithmetic import parse_integer_answer
from ..tasks.base import Claim, Problem
from ..chat import Mode, check_mode, split_completion
from ..tokenizer import render_prompt

PREFIX = "check:"  # --verifier check:MODEL_DIR  (System-2 checker) or check:MODEL_DIR@system1


def parse_spec(spec: str) -> tuple[str, str]:
    """``MODEL_DIR`` or ``MODEL_DIR@system1|system2`` -> (model dir, checker mode; System-2 by default)."""
    path, _, mode = spec.rpartition("@") if "@" in spec else (spec, "", Mode.SYSTEM2)
    if not path:
        raise ValueError(f"check verifier needs a model folder: check:MODEL_DIR[@system1|system2], got {spec!r}")
    return path, check_mode(mode)


class RecomputeVerifier:
    kind = "recompute"

    def __init__(self, engine: Engine, task, checker_mode: str = Mode.SYSTEM2, max_tokens: int = 64):
        if not callable(getattr(task, "step_claims", None)):
            raise ValueError(f"task {getattr(task, 'name', task)!r} has no step_claims(problem, steps): "
                             "a step-recomputing verifier needs the claims each step makes")
        self.engine, self.task, self.checker_mode = engine, task, check_mode(checker_mode)
        self.max_tokens = max_tokens
        self.tokens = 0
        self.item_questions: list[set[str]] = []  # last call: each item's distinct claim questions,
        self.question_tokens: dict[str, int] = {}  # what each question cost the checker,
        self.item_tokens: list[int] = []  # and each item's claims together
        self._memo: dict[str, tuple[int | None, int]] = {}  # question -> (answer, tokens it cost)
        self._memo_problem: str | None = None  # the one problem the memo is about (None: a batch of several)

    @classmethod
    def load(cls, spec: str, task, device: str = "cpu") -> RecomputeVerifier:
        from ..models import load_model

        path, mode = parse_spec(spec)
        model, tok = load_model(path, device=device)
        return cls(Engine(model, tok), task, mode)

    def answer(self, questions: list[str]) -> tuple[dict[str, int | None], dict[str, int]]:
        """The checker's greedy answer to each distinct question (None if it gave no integer), and the
        tokens each costs (prompt + generated). Greedy answers never change, so a question asked before about
        the same problem (``_scope``) is not asked again and adds nothing to ``tokens``; ``cost`` still gives
        what asking it costs."""
        new = [q for q in dict.fromkeys(questions) if q not in self._memo]
        if new:
            tok = self.engine.tokenizer
            prompts = [render_prompt(tok, [{"role": "user", "content": q}], self.checker_mode) for q in new]
            outs = self.engine.generate(prompts, n=1,
                                        sampling=SamplingParams(max_tokens=self.max_tokens, temperature=0.0))
            for q, prompt, (c,) in zip(new, prompts, outs):
                parts = split_completion(c.text, self.checker_mode)
                value = parse_integer_answer(parts.answer_text) if parts.well_formed else None
                self._memo[q] = (value, len(prompt) + len(c.token_ids))
            self.tokens += sum(self._memo[q][1] for q in new)
        answers = {q: self._memo[q][0] for q in questions}
        cost = {q: self._memo[q][1] for q in questions}
        return answers, cost

    def _check(self, claims: list[list[list[Claim] | None]]) -> list[list[float]]:
        """Step scores from per-item, per-step claims. Records what the call cost: ``question_tokens`` (each
        distinct question's tokens), ``item_questions`` (each item's distinct questions) and ``item_tokens``
        (each item charged its own questions, as if checked alone)."""
        self.item_questions = [{c.question for step in per if step for c in step} for per in claims]
        answers, self.question_tokens = self.answer([q for qs in self.item_questions for q in qs])
        self.item_tokens = [sum(self.question_tokens[q] for q in qs) for qs in self.item_questions]
        return [[float(step is not None and all(confirmed(c, answers[c.question]) for c in step)) for step in per]
                for per in claims]

    def _scope(self, problems: list[Problem]) -> None:
        """Keep remembered answers only across calls about one and the same problem (a search re-scoring its
        prefixes, a vote scoring its samples one by one), so every problem pays for its own claims whatever
        was checked before it."""
        keys = {p.key for p in problems}
        key = next(iter(keys)) if len(keys) == 1 else None
        if key is None or key != self._memo_problem:
            self._memo.clear()
        self._memo_problem = key

    def score_steps_batch(self, items: list[tuple[Problem, list[str]]]) -> list[list[float]]:
        """Step scores of reasoning prefixes (1.0: every claim of the step confirmed; 0.0 otherwise)."""
        self._scope([p for p, _ in items])
        return self._check([self.task.step_claims(p, steps) for p, steps in items])

    def score_steps(self, problem: Problem, steps: list[str]) -> list[float]:
        return self.score_steps_batch([(problem, steps)])[0]

    def score_batch(self, items: list[tuple[Problem, str]]) -> list[float]:
        """Outcome scores of finished System-2 completions: 1.0 when every step checks out, the derivation is
        complete and the answer is what it computed; else 0.0 (malformed completions: 0.0)."""
        self._scope([p for p, _ in items])
        claims = []
        for p, text in items:
            parts = split_completion(text, Mode.SYSTEM2)
            steps = self.task.steps(parts.reasoning or "") if parts.well_formed else []
            claims.append(self.task.step_claims(p, steps, answer=parts.answer_text) if steps else [None])
        return [min(scores) for scores in self._check(claims)]

    def score(self, problem: Problem, completion: str) -> float:
        return self.score_batch([(problem, completion)])[0]


def confirmed(claim: Claim, answer: int | None) -> bool:
    """The checker's answer agrees with the claimed value."""
    value = parse_integer_answer(claim.value)
    return answer is not None and value is not None and answer == value
