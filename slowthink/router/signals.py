"""Cheap signals of how hard a question is for the model, computed before (or instead of) thinking.

Each signal set costs something, and the router pays it on every question it routes:

* ``prompt``: the model's final hidden state at the last token of the System-2 prompt (after prefill,
  before any generated token). Costs the prompt's prefill only: 0 generated tokens.
* ``s1``: the System-1 greedy answer's confidence: mean and min per-token log-probability, its length, and
  whether it is an answer at all (task-free: the features need no task, so the server computes them too).
  Costs the System-1 answer's tokens, and the answer is kept: when the router then picks System-1
  greedy it answers with it at no extra cost.
* ``agree``: two System-1 samples at temperature 1: the share of them that agree with the greedy answer
  (needs ``s1``; costs the two samples' tokens).
* ``s2check``: the System-2 greedy solution and whether the step-recomputing checker confirms it
  (``slowthink.critics.recompute``; needs a checker, and the task to read the steps, so the server does
  not offer it): a cascade's first stage. Its features are the verdict and the solution's confidence and
  length; it costs the solution's tokens and the checker's, and, like ``s1``, its answer is kept: when the
  router then picks System-2 greedy it answers with it at no extra cost.

``compute_signals`` returns a feature matrix [Q, F] and the generated tokens each question cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..engine import Completion, SamplingParams
from ..tasks.base import Problem
from ..chat import Mode, split_completion
from ..tokenizer import render_prompt
from .arms import CHECK

SIGNALS = ("prompt", "s1", "agree", "s2check")
SIGNAL_SETS = [("prompt",), ("s1",), ("s1", "agree"), ("prompt", "s1"), ("prompt", "s1", "agree"),  # the valid ones
               ("s2check",), ("s1", "s2check"), ("prompt", "s2check")]


def check_signals(names) -> tuple[str, ...]:
    names = tuple(names)
    unknown = [s for s in names if s not in SIGNALS]
    if unknown or not names:
        raise ValueError(f"signals must be a non-empty subset of {SIGNALS}, got {list(names)}")
    if "agree" in names and "s1" not in names:
        raise ValueError("signal 'agree' compares samples with the System-1 greedy answer: add 's1'")
    return tuple(s for s in SIGNALS if s in names)  # canonical order: the feature layout depends on it


@dataclass
class Signals:
    features: np.ndarray  # [Q, F] float32
    tokens: np.ndarray  # [Q] generated tokens spent on the signals
    s1_answers: list[str | None]  # System-1 greedy answers (None when not computed or malformed)
    s1_correct: np.ndarray  # [Q] bool (False when not computed): lets the router reuse the answer
    s1_texts: list[str]  # System-1 greedy completions ("" when not computed)
    names: list[str]  # one name per feature column
    groups: dict[str, tuple[int, int]]  # signal -> its columns [start, stop)
    tokens_by_signal: dict[str, np.ndarray]  # signal -> [Q] generated tokens it cost
    s2_correct: np.ndarray | None = None  # [Q] bool: the s2check signal's System-2 greedy answer is right
    s2_texts: list[str] | None = None  # its completions ("" when not computed)

    def __post_init__(self):
        q = len(self.tokens)
        self.s2_correct = np.zeros(q, bool) if self.s2_correct is None else self.s2_correct
        self.s2_texts = [""] * q if self.s2_texts is None else self.s2_texts

    def rows(self, idx) -> Signals:
        """The same signals for a subset of the questions (``idx``: integer positions)."""
        idx = np.asarray(idx)
        return Signals(self.features[idx], self.tokens[idx], [self.s1_answers[i] for i in idx], self.s1_correct[idx],
                       [self.s1_texts[i] for i in idx], self.names, self.groups,
                       {k: v[idx] for k, v in self.tokens_by_signal.items()}, self.s2_correct[idx],
                       [self.s2_texts[i] for i in idx])

    def subset(self, signals) -> Signals:
        """The same questions seen through fewer signals (columns and token costs of those only)."""
        signals = check_signals(signals)
        missing = [s for s in signals if s not in self.groups]
        if missing:
            raise ValueError(f"signals {missing} were not computed")
        cols = np.concatenate([np.arange(*self.groups[s]) for s in signals])
        tokens = sum((self.tokens_by_signal[s] for s in signals), np.zeros(len(self.tokens), np.int64))
        starts, groups = 0, {}
        for s in signals:
            a, b = self.groups[s]
            groups[s] = (starts, starts + b - a)
            starts += b - a
        keep_s1, keep_s2 = "s1" in signals, "s2check" in signals
        return Signals(self.features[:, cols], tokens, self.s1_answers if keep_s1 else [None] * len(tokens),
                       self.s1_correct if keep_s1 else np.zeros(len(tokens), bool),
                       self.s1_texts if keep_s1 else [""] * len(tokens), [self.names[i] for i in cols], groups,
                       {s: self.tokens_by_signal[s] for s in signals},
                       self.s2_correct if keep_s2 else None, self.s2_texts if keep_s2 else None)


@torch.inference_mode()
def prompt_hidden(model, prompts: list[list[int]], batch: int = 64) -> np.ndarray:
    """Final-layer hidden state at each prompt's last token. Prompts of one length run together, so no
    padding can leak into the result."""
    device = next(model.parameters()).device
    out: list[np.ndarray | None] = [None] * len(prompts)
    by_len: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_len.setdefault(len(p), []).append(i)
    was_training = model.training
    model.eval()
    try:
        for idx in by_len.values():
            for s in range(0, len(idx), batch):
                chunk = idx[s:s + batch]
                ids = torch.tensor([prompts[i] for i in chunk], device=device)
                h = model(input_ids=ids, output_hidden_states=True).hidden_states[-1][:, -1]
                for i, row in zip(chunk, h.float().cpu().numpy()):
                    out[i] = row
    finally:
        model.train(was_training)
    return np.stack(out).astype(np.float32)  # type: ignore[arg-type]


def direct_answer(text: str) -> str | None:
    """A System-1 completion's answer as the signals compare it: the stripped text, None when empty or
    when it opens a think block. Task-free, so a server that knows no task computes the same features."""
    split = split_completion(text, Mode.SYSTEM1)
    answer = (split.answer_text or "").strip()
    return answer if split.well_formed and answer else None


def s1_features(greedy: Completion) -> list[float]:
    """mean and min per-token log-probability, length, and whether it is an answer at all."""
    lp = np.asarray(greedy.logprobs or [0.0], np.float64)
    return [float(lp.mean()), float(lp.min()), float(len(greedy.token_ids)), float(direct_answer(greedy.text) is not None)]


def agreement(greedy: Completion, samples: list[Completion]) -> float:
    """Share of the samples whose answer equals the greedy answer."""
    ans = direct_answer(greedy.text)
    return float(np.mean([ans is not None and direct_answer(c.text) == ans for c in samples]))


S1_NAMES = ["s1_mean_logprob", "s1_min_logprob", "s1_tokens", "s1_well_formed"]


S2CHECK_NAMES = ["s2_checked", "s2_mean_logprob", "s2_min_logprob", "s2_tokens"]


def s2check_features(verdict: float, solution: Completion) -> list[float]:
    """The checker's verdict on the System-2 greedy solution, the solution's mean and min per-token
    log-probability, and its length."""
    lp = np.asarray(solution.logprobs or [0.0], np.float64)
    return [float(verdict), float(lp.mean()), float(lp.min()), float(len(solution.token_ids))]


def feature_row(signals, hidden: np.ndarray | None, greedy: Completion | None,
                samples: list[Completion] | None, s2check: tuple[float, Completion] | None = None) -> np.ndarray:
    """One question's features in the layout ``compute_signals`` gives (for online routing);
    ``s2check``: the checker's verdict and the System-2 greedy solution it judged."""
    parts: list[np.ndarray] = []
    if "prompt" in signals:
        parts.append(np.asarray(hidden, np.float32).ravel())
    if "s1" in signals:
        parts.append(np.array(s1_features(greedy), np.float32))
    if "agree" in signals:
        parts.append(np.array([agreement(greedy, samples)], np.float32))
    if "s2check" in signals:
        parts.append(np.array(s2check_features(*s2check), np.float32))
    return np.concatenate(parts)


def compute_signals(engines: dict, task, problems: list[Problem], signals=None, fast: str = "main",
                    slow: str = "main", max_tokens: int = 64, seed: int = 0, s2_max_tokens: int = 256) -> Signals:
    """The signals of every problem (default: all that ``engines`` can compute, ``s2check`` only with a
    checker); ``max_tokens`` limits the System-1 signal samples, ``s2_max_tokens`` the System-2 solution of
    ``s2check`` (the System-2 greedy arm's limit, so that arm can reuse it)."""
    if signals is None:
        signals = tuple(s for s in SIGNALS if s != "s2check" or CHECK in engines)
    signals = check_signals(signals)
    if "s2check" in signals and CHECK not in engines:
        raise ValueError(f"signal 's2check' needs a checker (engines[{CHECK!r}]); engines given: {sorted(engines)}")
    q = len(problems)
    cols: list[np.ndarray] = []
    names: list[str] = []
    by_signal: dict[str, np.ndarray] = {}
    s1_answers: list[str | None] = [None] * q
    s1_correct = np.zeros(q, bool)
    s1_texts = [""] * q
    if "prompt" in signals:
        eng = engines[slow]
        prompts = [render_prompt(eng.tokenizer, task.prompt(p, Mode.SYSTEM2), Mode.SYSTEM2) for p in problems]
        h = prompt_hidden(eng.model, prompts)
        cols.append(h)
        names += [f"hidden_{i}" for i in range(h.shape[1])]
        by_signal["prompt"] = np.zeros(q, np.int64)
    if "s1" in signals:
        eng = engines[fast]
        prompts = [render_prompt(eng.tokenizer, task.prompt(p, Mode.SYSTEM1), Mode.SYSTEM1) for p in problems]
        greedy = [c[0] for c in eng.generate(prompts, 1, SamplingParams(max_tokens=max_tokens, temperature=0.0))]
        scores = [task.score(p, c.text, Mode.SYSTEM1) for p, c in zip(problems, greedy)]
        s1_answers = [s.answer if s.well_formed else None for s in scores]
        s1_correct = np.array([s.correct for s in scores], bool)
        s1_texts = [c.text for c in greedy]
        by_signal["s1"] = np.array([len(c.token_ids) for c in greedy], np.int64)
        cols.append(np.array([s1_features(c) for c in greedy], np.float32))
        names += S1_NAMES
        if "agree" in signals:
            sampled = eng.generate(prompts, 2, SamplingParams(max_tokens=max_tokens, temperature=1.0, seed=seed))
            by_signal["agree"] = np.array([sum(len(c.token_ids) for c in comps) for comps in sampled], np.int64)
            cols.append(np.array([[agreement(g, comps)] for g, comps in zip(greedy, sampled)], np.float32))
            names.append("s1_agreement")
    s2_correct, s2_texts = None, None
    if "s2check" in signals:
        eng = engines[slow]
        prompts = [render_prompt(eng.tokenizer, task.prompt(p, Mode.SYSTEM2), Mode.SYSTEM2) for p in problems]
        greedy = [c[0] for c in eng.generate(prompts, 1, SamplingParams(max_tokens=s2_max_tokens, temperature=0.0))]
        checker = engines[CHECK]
        verdict = checker.score_batch([(p, c.text) for p, c in zip(problems, greedy)])
        s2_correct = np.array([task.score(p, c.text, Mode.SYSTEM2).correct for p, c in zip(problems, greedy)], bool)
        s2_texts = [c.text for c in greedy]
        by_signal["s2check"] = np.array([len(c.token_ids) + t for c, t in zip(greedy, checker.item_tokens)], np.int64)
        cols.append(np.array([s2check_features(v, c) for v, c in zip(verdict, greedy)], np.float32))
        names += S2CHECK_NAMES
    groups, start = {}, 0
    for s, block in zip(signals, cols):
        groups[s] = (start, start + block.shape[1])
        start += block.shape[1]
    tokens = sum(by_signal.values(), np.zeros(q, np.int64))
    return Signals(np.concatenate(cols, 1).astype(np.float32), tokens, s1_answers, s1_correct, s1_texts, names,
                   groups, by_signal, s2_correct, s2_texts)
