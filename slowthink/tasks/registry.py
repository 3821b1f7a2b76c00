"""Finding tasks by name, and loading a user's own task from a Python file.

``get_task`` takes a built-in name (``list_tasks()``), a file and class (``path/to/file.py:MyTask``;
the class may be left out when the file defines exactly one task class) or an importable module and
class (``package.module:MyTask``). Keyword arguments go to the class; ``parse_task_args`` turns the
command-line form ``op=mul,max_level=5`` into them.

Every task is checked before it is returned (``validate_task``): required methods and attributes,
``levels``, and a smoke run that samples one problem at the lowest level, renders both prompts and
scores the reference completion, which must be correct, then completions a model writes on a bad day
(``garbage_completions``: random characters, the reference cut in half, its answer replaced by words, very
long text), which the verifier must score without crashing. Problems raise ``TaskError`` with a message
that says what to fix. A crash no check foresaw, on a model's completion mid-run, is the job of
``tasks.guard``.
"""

from __future__ import annotations

import importlib
import inspect
import random
import string
import traceback
import warnings
from difflib import get_close_matches
from pathlib import Path
from typing import Any

from .arithmetic import Arithmetic
from .code import CodeTask
from ..chat import MODES, THINK_CLOSE, Mode
from .base import OPTIONAL_METHODS, REQUIRED_ATTRIBUTES, REQUIRED_METHODS, Problem, Reference, Score
from .countdown import Countdown
from .dataset import DatasetTask
from .doubling import Doubling
from .gsm8k import GSM8K
from .math_task import MATH
from .reasoning_gym import ReasoningGym
from .recall import Recall

BUILTIN_TASKS: dict[str, type] = {"arithmetic": Arithmetic, "countdown": Countdown, "doubling": Doubling}
BUILTIN_TASKS["reasoning_gym"] = ReasoningGym  # any reasoning-gym data set or mix: --task-args name=...
BUILTIN_TASKS["code"] = CodeTask  # HumanEval / MBPP tests run in the sandbox: --task-args path=...
BUILTIN_TASKS["jsonl"] = DatasetTask  # any data set of questions and answers: --task-args path=...,question=...
BUILTIN_TASKS["gsm8k"] = GSM8K  # GSM8K word problems (default path: ../shared/data/gsm8k)
BUILTIN_TASKS["math"] = MATH  # MATH competition problems, checked by math-verify: --task-args path=...
BUILTIN_TASKS["recall"] = Recall  # facts recalled long after they were given (the memory tool's task)


class TaskError(ValueError):
    """A task could not be found, loaded or validated. The message says what to fix."""


def list_tasks() -> list[str]:
    """Names of the built-in tasks."""
    return sorted(BUILTIN_TASKS)


def parse_task_args(text: str | None) -> dict[str, Any]:
    """``"op=mul,max_level=5,scale=0.5,verbose=true"`` -> ``{'op': 'mul', 'max_level': 5, ...}``."""
    from ..config import ConfigError, parse_mapping

    try:
        return parse_mapping(text)
    except ConfigError as e:
        raise TaskError(f"task {e}") from None


def get_task(spec: str, **kwargs: Any):
    """A validated task instance from a built-in name, ``file.py[:Class]`` or ``module:Class``."""
    if not isinstance(spec, str) or not spec.strip():
        raise TaskError(f"task must be a name ({', '.join(list_tasks())}) or 'path/to/file.py:ClassName', "
                        f"got {spec!r}")
    spec = spec.strip()
    if spec in BUILTIN_TASKS:
        cls, origin = BUILTIN_TASKS[spec], spec
    elif spec.endswith(".py") or ".py:" in spec:
        cls, origin = _class_from_file(spec)
    elif ":" in spec:
        cls, origin = _class_from_module(spec)
    else:
        raise TaskError(f"unknown task {spec!r}. Built-in tasks: {', '.join(list_tasks())}. "
                        "For your own task give 'path/to/file.py:ClassName' (see examples/my_task.py).")
    return validate_task(_instantiate(cls, origin, kwargs), origin)


# -- loading --------------------------------------------------------------------------------------
def _class_from_file(spec: str) -> tuple[type, str]:
    path_text, _, class_name = spec.partition(".py:")
    path = Path(path_text + ".py" if class_name else spec)
    if not path.is_file():
        raise TaskError(f"task file {str(path)!r} not found (looked in {Path.cwd()}). "
                        "Give the path to a .py file, e.g. 'path/to/my_task.py:MyTask'.")
    from ..tools.user_tools import UserFileError, import_user_file

    try:
        module = import_user_file(path, "slowthink_user_task")
    except UserFileError as e:
        cause = e.__cause__
        raise TaskError(f"{path}: {e}" + (f"\n{_short_traceback(cause)}" if cause else "")) from cause
    return _pick_class(module, class_name, str(path)), f"{path}:{class_name}" if class_name else str(path)


def _class_from_module(spec: str) -> tuple[type, str]:
    module_name, _, class_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise TaskError(f"task {spec!r}: no module {module_name!r} ({e}). Built-in tasks: "
                        f"{', '.join(list_tasks())}; a file is given as 'path/to/file.py:ClassName'.") from e
    except Exception as e:  # noqa: BLE001
        raise TaskError(f"task {spec!r}: importing {module_name!r} failed with {type(e).__name__}: {e}\n"
                        f"{_short_traceback(e)}") from e
    return _pick_class(module, class_name, module_name), spec


def _pick_class(module, class_name: str, where: str) -> type:
    classes = {n: c for n, c in vars(module).items() if inspect.isclass(c) and c.__module__ == module.__name__}
    if class_name:
        if class_name not in vars(module):
            listed = ", ".join(sorted(classes)) or "none"
            raise TaskError(f"{where}: no class {class_name!r} in the file. Classes defined there: {listed}.")
        cls = getattr(module, class_name)
        if not inspect.isclass(cls):
            raise TaskError(f"{where}: {class_name!r} is a {type(cls).__name__}, not a class")
        return cls
    candidates = [c for c in classes.values() if all(hasattr(c, m) for m in REQUIRED_METHODS)]
    if len(candidates) != 1:
        listed = ", ".join(sorted(classes)) or "none"
        raise TaskError(f"{where}: name the task class as '{where}:ClassName' "
                        f"({len(candidates)} task classes found; classes defined there: {listed}).")
    return candidates[0]


def _instantiate(cls: type, origin: str, kwargs: dict[str, Any]):
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        params = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [k for k in kwargs if k not in params] if params and not takes_any else []
    if unknown:
        accepted = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        raise TaskError(f"task {origin!r}: unknown argument(s) {', '.join(unknown)}; "
                        f"it accepts: {', '.join(accepted) or 'no arguments'}")
    try:
        return cls(**kwargs)
    except Exception as e:  # noqa: BLE001
        raise TaskError(f"task {origin!r}: creating {cls.__name__}({_fmt_kwargs(kwargs)}) failed with "
                        f"{type(e).__name__}: {e}") from e


# -- validation -----------------------------------------------------------------------------------
def validate_task(task, origin: str | None = None):
    """Check a task instance against the Task interface and smoke-test it; returns the task."""
    where = f"task {origin or type(task).__name__!r}"
    missing_methods = [m for m in REQUIRED_METHODS if not callable(getattr(task, m, None))]
    missing_attrs = [a for a in REQUIRED_ATTRIBUTES if not hasattr(task, a)]
    if missing_methods or missing_attrs:
        parts = []
        if missing_methods:
            parts.append(f"method(s) {', '.join(missing_methods)}")
        if missing_attrs:
            parts.append(f"attribute(s) {', '.join(missing_attrs)}")
        raise TaskError(f"{where}: missing required {' and '.join(parts)}. A task needs methods "
                        f"{', '.join(REQUIRED_METHODS)} and attributes {', '.join(REQUIRED_ATTRIBUTES)}; "
                        "subclass slowthink.tasks.BaseTask and see examples/my_task.py.")
    if not isinstance(task.name, str) or not task.name:
        raise TaskError(f"{where}: 'name' must be a non-empty string, got {task.name!r}")
    levels = task.levels
    if not (isinstance(levels, tuple) and levels
            and all(isinstance(x, int) and not isinstance(x, bool) for x in levels)):
        raise TaskError(f"{where}: 'levels' must be a non-empty tuple of ints, e.g. levels = (1, 2, 3); "
                        f"got {levels!r}")
    warn_misspelt_methods(task, where)
    level = min(levels)
    problem = _call(where, f"sample(random.Random(0), level={level})", task.sample, random.Random(0), level)
    if not isinstance(problem, Problem):
        raise TaskError(f"{where}: sample() must return a slowthink.tasks.Problem, got {type(problem).__name__}")
    for mode in MODES:
        messages = _call(where, f"prompt(problem, {str(mode)!r})", task.prompt, problem, mode)
        if not (isinstance(messages, list) and messages and all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in messages)):
            raise TaskError(f"{where}: prompt(problem, {str(mode)!r}) must return a non-empty list of "
                            f"{{'role': str, 'content': str}} messages, got {messages!r:.200}")
        _check_score(where, task, problem, "", mode, must_be_correct=False)
        ref = _call(where, f"reference(problem, {str(mode)!r})", task.reference, problem, mode)
        if ref is not None:
            _check_reference(where, task, problem, ref, mode)
        _check_garbage(where, task, problem, ref, mode)
    if callable(getattr(task, "parse_question", None)):
        _check_parse_question(where, task, problem)
    return task


def _check_parse_question(where: str, task, problem: Problem) -> None:
    """parse_question() reads the task's own question back: the sampled problem's answer is correct for the
    problem it returns (unless that one has no answer)."""
    parsed = _call(where, f"parse_question({problem.question!r:.60})", task.parse_question, problem.question)
    if not isinstance(parsed, Problem):
        raise TaskError(f"{where}: parse_question() must return a slowthink.tasks.Problem, got {type(parsed).__name__}")
    ref = task.reference(problem, Mode.SYSTEM1)
    if parsed.answer is None or ref is None:
        return
    score = _call(where, "score(parse_question(question), reference)", task.score, parsed, ref.completion(),
                  Mode.SYSTEM1)
    if not score.correct:
        raise TaskError(f"{where}: parse_question() does not read the task's own questions back: for "
                        f"{problem.question!r:.80} it returns {parsed!r:.200}, for which the answer "
                        f"{problem.answer!r:.60} is not correct")


def _check_reference(where: str, task, problem: Problem, ref, mode: str) -> None:
    """The reference completion is scored correct, and each of its steps labelled correct."""
    if not isinstance(ref, Reference):
        raise TaskError(f"{where}: reference() must return a slowthink.tasks.Reference or None, "
                        f"got {type(ref).__name__}")
    _check_score(where, task, problem, ref.completion(), mode, must_be_correct=True)
    if ref.reasoning is not None and callable(getattr(task, "step_labels", None)):
        labels = _call(where, "step_labels(problem, reference.reasoning)", task.step_labels, problem,
                       ref.reasoning)
        if labels is not None and not (isinstance(labels, list) and all(x is True for x in labels)):
            raise TaskError(f"{where}: step_labels() on the reference reasoning must return None or a "
                            f"list of True (every reference step is correct), got {labels!r:.200}")


def garbage_completions(reference: str, answer: str) -> dict[str, str]:
    """Completions a model writes on a bad day, which a verifier must score (as anything) without crashing:
    what each one is, and its text, built from the reference completion and the expected answer."""
    rng = random.Random(0)
    noise = "".join(rng.choice(string.printable) for _ in range(64))
    at = reference.rfind(answer) if answer else -1
    in_words = (reference[:at] + "forty-two, I think" + reference[at + len(answer):] if at >= 0
                else reference + " forty-two, I think")
    return {"random characters": noise,
            "random characters around a closed think block": f"{noise}\n{THINK_CLOSE}\n\n{noise}",
            "the reference cut in half": reference[: len(reference) // 2],
            "the reference with its answer replaced by words": in_words,
            "very long text": (noise + "\n") * 200}


def _check_garbage(where: str, task, problem: Problem, ref, mode: str) -> None:
    """score() (and step_labels()) survive :func:`garbage_completions`."""
    reference = ref.completion() if isinstance(ref, Reference) else problem.answer
    garbage = garbage_completions(reference, problem.answer)
    for what, text in garbage.items():
        try:
            _check_score(where, task, problem, text, mode, must_be_correct=None, shown=f"<{what}>")
        except TaskError as e:
            raise TaskError(f"{e}\nA model can write any text: score what the verifier cannot read as "
                            "Score(reward=0.0, answer=None, well_formed=False).") from e.__cause__
    if mode == Mode.SYSTEM2 and callable(getattr(task, "step_labels", None)):
        for what in ("random characters", "the reference cut in half"):
            labels = _call(where, f"step_labels(problem, <{what}>)", task.step_labels, problem, garbage[what])
            if labels is not None and not (isinstance(labels, list) and all(isinstance(x, bool) for x in labels)):
                raise TaskError(f"{where}: step_labels(problem, <{what}>) must return None or a list of bools, "
                                f"got {labels!r:.200}")


def warn_misspelt_methods(task, where: str) -> None:
    """A warning for each public method that looks like a misspelling of an optional one the task lacks
    (``solution_line`` for ``solution_lines``): slowthink would silently do without it."""
    known = set(OPTIONAL_METHODS) | set(REQUIRED_METHODS)
    for name in dir(task):
        if name.startswith("_") or name in known or not callable(getattr(task, name, None)):
            continue
        meant = get_close_matches(name, OPTIONAL_METHODS, n=1, cutoff=0.8)
        if meant and not callable(getattr(task, meant[0], None)):
            warnings.warn(f"{where}: it defines {name}(), which looks like a misspelling of {meant[0]}(): the task "
                          f"has no {meant[0]}(), which slowthink uses for {OPTIONAL_METHODS[meant[0]]}",
                          UserWarning, stacklevel=2)


def _check_score(where: str, task, problem: Problem, completion: str, mode: str, must_be_correct: bool | None,
                 shown: str | None = None) -> None:
    """score() returns a Score, correct for the reference (``must_be_correct``), not for an empty completion
    (False); None: any verdict. ``shown`` stands for the completion in messages."""
    what = f"score(problem, {shown or repr(completion)[:60]}, {str(mode)!r})"
    score = _call(where, what, task.score, problem, completion, mode)
    if not isinstance(score, Score):
        raise TaskError(f"{where}: {what} must return a slowthink.tasks.Score, got {type(score).__name__}")
    if must_be_correct and not score.correct:
        raise TaskError(f"{where}: the reference completion is scored as not correct in {mode} "
                        f"({score}). Check that score() extracts the answer the way reference() writes it "
                        "and returns Score(reward=1.0, answer=..., well_formed=True, correct=True).\n"
                        f"question: {problem.question!r:.200}\ncompletion: {completion!r:.300}")
    if must_be_correct is False and score.correct:
        raise TaskError(f"{where}: an empty completion is scored as correct in {mode} ({score})")


def _call(where: str, what: str, fn, *args):
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001
        raise TaskError(f"{where}: {what} raised {type(e).__name__}: {e}\n{_short_traceback(e)}") from e


def _short_traceback(e: BaseException, frames: int = 3) -> str:
    return "".join(traceback.format_exception(type(e), e, e.__traceback__, limit=-frames)).rstrip()


def _fmt_kwargs(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
