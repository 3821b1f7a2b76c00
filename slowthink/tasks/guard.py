"""A task's verifier, made safe to run on whatever a model writes.

``score()`` and ``step_labels()`` are a task's own code, run on text nobody controls: a model half-way through
training writes ``7*94`` where a number belongs, cuts a worked solution off at the token limit, or writes pages of
noise. The load-time check (``registry.validate_task``) tries such completions, but no finite check sees every
one, and a crash on one completion must not end an evaluation or lose a training run. :class:`GuardedTask` is the
one wrapper every caller scores through (evaluation, RL rewards, search, STaR/DPO filtering, the server's
verification): a crash there

- counts the completion as malformed (:data:`MALFORMED`: reward 0, no answer, not well formed, not correct;
  step labels all wrong), so the run goes on;
- is reported once per (task, method, site), with the file and line that raised and the completion (truncated);
  later crashes at the same site are only counted (:attr:`GuardedTask.crashes`);
- or, with ``strict``, raises :class:`VerifierError` instead (a trainer then stops, naming its last good
  checkpoint).
"""

from __future__ import annotations

import os
import sys
import sysconfig
import traceback
from collections import Counter
from dataclasses import dataclass

from ..chat import STEP_DELIMITER, Mode
from .base import Problem, Score

MALFORMED = Score(reward=0.0, answer=None, well_formed=False, correct=False)
SHOWN_CHARS = 200  # of an offending completion, in a report


class VerifierError(ValueError):
    """A task's score() or step_labels() raised on a completion, and the run was asked to stop (strict)."""


@dataclass(frozen=True)
class VerifierCrash:
    """One crash of a task's verifier: which task and method, where it raised, on what."""

    task: str
    method: str  # "score" or "step_labels"
    site: str  # file:line that raised (the innermost frame outside Python's own library)
    error: str  # "ValueError: invalid literal ..."
    problem: str  # the problem's question
    completion: str

    @property
    def key(self) -> str:
        """What makes two crashes the same bug: the task, the method and the line that raised."""
        return f"{self.task} {self.method}() at {self.site}"

    def describe(self) -> str:
        return (f"task {self.task!r}: {self.method}() raised {self.error} at {self.site}, on the completion "
                f"{shorten(self.completion)} of the problem {shorten(self.problem, 80)}")


def shorten(text: str, limit: int = SHOWN_CHARS) -> str:
    """``repr(text)``, its middle left out past ``limit`` characters."""
    if len(text) <= limit:
        return repr(text)
    head, tail = text[: limit * 2 // 3], text[-limit // 3:]
    return f"{head!r} ... ({len(text) - len(head) - len(tail)} more characters) ... {tail!r}"


def crash_site(error: BaseException) -> str:
    """``file:line`` of the innermost frame that raised, skipping Python's library (``int()`` is not the bug)
    and this module; a path under the working directory is given relative to it."""
    library = tuple({sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")})
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename != __file__]
    own = [f for f in frames if not f.filename.startswith(library)] or frames
    if not own:
        return "unknown"
    frame = own[-1]
    path = os.path.relpath(frame.filename) if frame.filename.startswith(os.getcwd() + os.sep) else frame.filename
    return f"{path}:{frame.lineno}"


def print_report(message: str) -> None:
    """Under any progress bar, on stderr."""
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)


class GuardedTask:
    """``task``, whose ``score`` and ``step_labels`` never raise on a completion (see the module docstring);
    everything else is the task's own. ``report`` receives each first-of-its-site crash message (default: stderr)."""

    def __init__(self, task, strict: bool = False, report=None):
        self.task, self.strict, self.report = task, strict, report
        self.crashes: Counter = Counter()  # VerifierCrash.key -> completions counted malformed

    def __getattr__(self, name: str):
        task = self.__dict__.get("task")
        if task is None:  # half-built (unpickling): nothing to delegate to yet
            raise AttributeError(name)
        if name == "step_labels":
            getattr(task, name)  # a task without step_labels has none here either
            return self._step_labels
        return getattr(task, name)

    def __repr__(self) -> str:
        return f"GuardedTask({self.task!r}, strict={self.strict})"

    def check(self, problem: Problem, completion: str, mode: Mode = Mode.SYSTEM2) -> tuple[Score, VerifierCrash | None]:
        """The task's score, or :data:`MALFORMED` and the crash (counted, reported, or raised when strict)."""
        return self._call("score", MALFORMED, problem, completion, mode)

    def probe(self, problem: Problem, completion: str, mode: Mode = Mode.SYSTEM2) -> VerifierCrash | None:
        """Whether the verifier reads ``completion`` (None) or crashes on it, and nothing else: no count, no
        report, never raised. For checking a problem before any model output is scored on it."""
        return self._attempt("score", problem, completion, mode)[1]

    def score(self, problem: Problem, completion: str, mode: Mode = Mode.SYSTEM2) -> Score:
        return self.check(problem, completion, mode)[0]

    def _step_labels(self, problem: Problem, reasoning: str) -> list[bool] | None:
        """The task's step labels, or every step wrong when they crash."""
        labels, crash = self._call("step_labels", None, problem, reasoning)
        if crash is None:
            return labels
        steps = self.task.steps(reasoning) if callable(getattr(self.task, "steps", None)) else [
            s for s in reasoning.split(STEP_DELIMITER) if s.strip()]
        return [False] * len(steps)

    def _call(self, method: str, fallback, problem: Problem, text: str, *args):
        result, crash = self._attempt(method, problem, text, *args)
        if crash is None:
            return result, None
        self._record(crash, result)
        return fallback, crash

    def _attempt(self, method: str, problem: Problem, text: str, *args):
        """``(result, None)``, or ``(the exception, the crash)``."""
        try:
            return getattr(self.task, method)(problem, text, *args), None
        except Exception as e:  # noqa: BLE001 - the task's own code on a model's text: any failure is its bug
            return e, VerifierCrash(str(getattr(self.task, "name", type(self.task).__name__)), method, crash_site(e),
                                    f"{type(e).__name__}: {e}", str(problem.question), text)

    def _record(self, crash: VerifierCrash, error: Exception) -> None:
        if self.strict:
            raise VerifierError(f"{crash.describe()} (strict_verifier: stopping; without it the completion counts "
                                "as malformed and the run goes on)") from error
        self.crashes[crash.key] += 1
        if self.crashes[crash.key] == 1:
            (self.report or print_report)(
                f"slowthink: verifier crash: {crash.describe()}. The completion counts as malformed (reward 0, not "
                "correct) and the run goes on; later crashes at this line are counted, not shown "
                "(strict_verifier=true or --strict-verifier stops instead).")


def guard(task, strict: bool | None = None, report=None) -> GuardedTask:
    """``task`` behind a :class:`GuardedTask`; a task already guarded is returned as it is, unless ``strict`` or
    ``report`` asks for something else (then its inner task is guarded anew)."""
    if isinstance(task, GuardedTask):
        if (strict is None or strict == task.strict) and (report is None or report == task.report):
            return task
        return GuardedTask(task.task, task.strict if strict is None else strict, report or task.report)
    return GuardedTask(task, bool(strict), report)


def unguarded(task):
    """The task a :class:`GuardedTask` wraps (``task`` itself when it is not guarded)."""
    return task.task if isinstance(task, GuardedTask) else task
