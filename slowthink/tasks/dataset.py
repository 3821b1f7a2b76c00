"""Dataset tasks: any data set of questions and answers as a task, scored by an answer checker.

``jsonl`` reads a JSONL (or JSON, Parquet, CSV, TSV) file, a folder of such files named by split
(``train.jsonl``, ``test.jsonl``), or a folder written by ``datasets``' ``save_to_disk``, through the
``datasets`` library, and maps its fields::

    --task jsonl --task-args path=data.jsonl,question=problem,answer=answer,solution=solution,checker=math

- ``question``, ``answer`` (required): the user message and the gold answer. A gold written GSM8K-style
  (``... #### 42``) is its part after the last ``####``.
- ``solution``: a worked solution, the System-2 reference reasoning (so ``train sft`` has worked solutions to
  learn); its final ``#### ...`` line, if any, is left out (the answer follows ``</think>``).
- ``level``: a field of difficulty levels: a value holding a number is that number (``"Level 3"`` is 3), other
  values get the levels after the largest number, in order of first appearance. Without it, one level, 1.
- ``split``: a field naming each row's split (``train``; ``test``, ``validation``, ``heldout``, ...: held out).
  Without it, a data set read with named splits (a folder of ``train``/``test`` files, a saved DatasetDict)
  holds out its test splits; otherwise a row is held out when its question's stable hash falls in bucket 0
  (``heldout_bucket``), as for every generated task.
- ``checker``: ``number`` (default), ``math``, ``exact``, ``exact_strict`` or ``choice``
  (``slowthink.tasks.checkers``); ``checker_timeout``: seconds per ``math`` check.

``gsm8k`` and ``math`` (``slowthink.tasks.gsm8k``, ``slowthink.tasks.math_task``) are this task with GSM8K's and
MATH's fields and checkers. A problem's ``key`` is its question (identical questions share a split);
``problems()`` lists every row in file order. docs/data.md has the details.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import logging
import math
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..chat import Mode, check_mode, split_completion
from ..tools.jsonl import json_objects
from .base import HELDOUT_SET, BaseTask, Problem, Reference, Score, heldout_bucket
from .checkers import get_checker
from .checkers.base import hash_answers
from .checkers.math import DEFAULT_TIMEOUT

log = logging.getLogger(__name__)
SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"  # the project's shared copies, when present
FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".tsv": "csv"}
TRAIN, HELDOUT = "train", "heldout"
SPLIT_NAMES = {"train": TRAIN, "training": TRAIN, "test": HELDOUT, "heldout": HELDOUT, "held-out": HELDOUT,
               "held_out": HELDOUT, "validation": HELDOUT, "valid": HELDOUT, "val": HELDOUT, "dev": HELDOUT,
               "eval": HELDOUT}
_LEVEL_NUMBER = re.compile(r"-?\d+")


# -- reading a data set ---------------------------------------------------------------------------
def load_rows(path: str | Path) -> list[tuple[dict[str, Any], str | None]]:
    """Every row of the data set at ``path``, in order, with the name of the split it came from (None when the
    data set has a single unnamed one). Files are streamed (no cache written); saved folders memory-mapped."""
    import datasets

    path = Path(path)
    if not path.exists():
        hint = "" if path.is_absolute() else (" (a relative path is read from the current folder, also when it "
                                              "comes from a model's task.json: give --task-args path=ABSOLUTE)")
        raise ValueError(f"path: {str(path)!r} does not exist (looked in {Path.cwd()}){hint}")
    if path.is_dir() and any((path / f).is_file() for f in ("dataset_dict.json", "state.json", "dataset_info.json")):
        data = datasets.load_from_disk(str(path))
    elif path.is_dir():
        return read_folder(path)
    elif path.suffix.lower() in FORMATS:
        return [(row, None) for row in read_file(path)]
    else:
        raise ValueError(f"path: {str(path)!r} is not a data set slowthink reads: give a "
                         f"{'/'.join(FORMATS)} file, a folder of them named by split, or a save_to_disk folder")
    if isinstance(data, datasets.DatasetDict):
        named = len(data) > 1 or set(data) != {"train"}
        return [(row, name if named else None) for name, part in data.items() for row in part]
    return [(row, None) for row in data]


def read_folder(path: Path) -> list[tuple[dict[str, Any], str | None]]:
    """The rows of a folder of data files named by split, each with its split's name (None for a lone
    ``train``); a file that cannot be read is a ValueError naming it (and its first bad line)."""
    import datasets

    try:
        with _quiet_datasets():
            data = datasets.load_dataset(str(path), streaming=True)
            named = len(data) > 1 or set(data) != {"train"}
            return [(row, name if named else None) for name, part in data.items() for row in part]
    except Exception as e:  # noqa: BLE001 - any reader failure is bad input, said with its file
        for file in sorted(f for f in path.rglob("*") if f.suffix.lower() in FORMATS):
            if (found := jsonl_problem(file)) is not None:
                raise ValueError(found) from None
        raise ValueError(f"path: folder {str(path)!r} cannot be read: {str(e).strip() or type(e).__name__}") from None


@contextlib.contextmanager
def _quiet_datasets():
    """``datasets`` logs a reader failure it then raises: one message, ours, is enough."""
    logger = logging.getLogger("datasets")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def read_file(path: Path) -> list[dict[str, Any]]:
    """The rows of one data file, streamed by ``datasets``; a file it cannot read is a ValueError that names the
    file and, for JSON Lines, the first bad line (the reader's own "row N" counts within a block)."""
    import datasets

    fmt = FORMATS[path.suffix.lower()]
    extra = csv_as_text(path, "\t" if path.suffix.lower() == ".tsv" else ",") if fmt == "csv" else {}
    try:
        with _quiet_datasets():
            return list(datasets.load_dataset(fmt, data_files=str(path), split="train", streaming=True, **extra))
    except Exception as e:  # noqa: BLE001 - any reader failure is bad input, said with its file
        found = jsonl_problem(path)
        raise ValueError(found or f"path: {str(path)!r} cannot be read as {fmt}: "
                                  f"{str(e).strip() or type(e).__name__}") from None


def csv_as_text(path: Path, delimiter: str) -> dict[str, Any]:
    """``load_dataset`` arguments that read every CSV cell as the text it holds: left to itself, pandas reads a
    column of numbers as numbers (``007`` -> 7, ``1.50`` -> 1.5, a 20-digit integer -> a rounded float)."""
    import datasets

    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        header = next(csv.reader(f, delimiter=delimiter), None)
    if not header or not all(header) or len(set(header)) != len(header):  # pandas renames these: its own names
        return {"delimiter": delimiter}
    return {"delimiter": delimiter, "features": datasets.Features({name: datasets.Value("string") for name in header})}


def jsonl_problem(path: Path) -> str | None:
    """What is wrong with a file that holds no rows, or with the first line of a JSON Lines file that is not a
    JSON object; None when neither is found."""
    if path.stat().st_size == 0:
        return f"path: {str(path)!r} is empty (no rows)"
    if path.suffix.lower() != ".jsonl":
        return None
    try:
        if not list(json_objects(path)):  # every line, to the first bad one
            return f"path: {str(path)!r} is empty (no rows)"
    except ValueError as e:
        return f"path: {e}"
    return None


def missing(value: Any) -> bool:
    """No value: absent, None, NaN (how CSV and Parquet write an empty cell) or blank text."""
    return value is None or (isinstance(value, float) and math.isnan(value)) or not str(value).strip()


def seconds(value: Any) -> float:
    """``checker_timeout`` as a positive, finite number of seconds, or a ValueError naming it."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not 0 < number < math.inf:
        raise ValueError(f"checker_timeout must be a positive number of seconds, got {value!r}")
    return number


def level_numbers(values: list[str]) -> dict[str, int]:
    """Each level value's level: the number it holds (``"Level 3"`` -> 3); values without one get the levels
    after the largest number, in order of first appearance (``easy, medium, hard`` -> 1, 2, 3)."""
    numeric = {v: int(m.group()) for v in values if (m := _LEVEL_NUMBER.search(v))}
    others = [v for v in dict.fromkeys(values) if v not in numeric]
    top = max(numeric.values(), default=0)
    return {**numeric, **{v: top + i + 1 for i, v in enumerate(others)}}


class DatasetTask(BaseTask):
    """Any data set of questions and answers (JSONL, JSON, Parquet, CSV, save_to_disk), scored by a checker."""

    name = "jsonl"

    def __init__(self, path: str | None = None, question: str = "question", answer: str = "answer",
                 solution: str | None = None, level: str | None = None, split: str | None = None,
                 checker: str = "number", checker_timeout: float = DEFAULT_TIMEOUT):
        if path is None or not str(path).strip():
            raise ValueError(f"{self.name}: path= is required: a JSONL/JSON/Parquet/CSV file, a folder of them, or a "
                             "folder saved with datasets' save_to_disk")
        self.path = str(path)
        self.fields = {"question": question, "answer": answer, "solution": solution, "level": level, "split": split}
        self.checker_name = checker
        check, timeout = get_checker(checker), seconds(checker_timeout)
        self.checker = functools.partial(check, timeout=timeout) if checker == "math" else check
        self._load(load_rows(self.path))

    # -- rows -> problems ---------------------------------------------------------------------------
    def _load(self, rows: list[tuple[dict[str, Any], str | None]]) -> None:
        if not rows:
            raise ValueError(f"{self.name}: {self.path!r} holds no rows")
        self._check_fields(rows[0][0])
        wheres = self._wheres(rows)
        levels = self._levels(rows, wheres)
        problems = []
        for i, ((row, split_name), where) in enumerate(zip(rows, wheres)):
            question = self._text(row, "question", where)
            gold = self.row_answer(row, where)
            self._check_gold(gold, where)
            problems.append(Problem(key=question, level=levels[i], question=question, answer=gold,
                                    data={"row": i, "solution": self.row_solution(row, where),
                                          "split": self._split(row, split_name, question, where)}))
        self._problems = problems
        self._by_question = {}
        self._pools: dict[tuple[int, str], list[Problem]] = {}
        self._by_level: dict[int, list[Problem]] = {}
        for p in problems:
            first = self._by_question.setdefault(p.question, p)
            self._check_same_answer(first, p, wheres)
            self._pools.setdefault((p.level, p.data["split"]), []).append(p)
            self._by_level.setdefault(p.level, []).append(p)
        self.levels = tuple(sorted({p.level for p in problems}))
        self._warn_without_a_split(problems)

    def _warn_without_a_split(self, problems: list[Problem]) -> None:
        """Say so at load when every row is in one split: training or evaluating will find no problems."""
        splits = {p.data["split"] for p in problems}
        if len(splits) == 1:
            (only,) = splits
            why = f"field {self.fields['split']!r} (split=) puts every row in it" if self.fields["split"] else \
                "every row fell in it"
            log.warning("%s: %r has no %s rows, only %s (%s): %s will find no problems", self.name, self.path,
                        HELDOUT if only == TRAIN else TRAIN, only, why,
                        "eval and held-out checks" if only == TRAIN else "training")

    def _check_same_answer(self, first: Problem, again: Problem, wheres: list[str]) -> None:
        """A question asked twice has one answer (one key, one split; ``solve --question`` scores against it)."""
        if again is first or again.answer == first.answer or self.checker(first.answer, again.answer).correct:
            return
        raise ValueError(f"{self.name}: the same question has different answers, {first.answer!r:.60} in "
                         f"{wheres[first.data['row']]} and {again.answer!r:.60} in {wheres[again.data['row']]}")

    def _wheres(self, rows: list[tuple[dict[str, Any], str | None]]) -> list[str]:
        """Where each row is, for messages: its number (from 1) within its split, the split, the path."""
        counts: dict[str | None, int] = {}
        out = []
        for _, split_name in rows:
            counts[split_name] = counts.get(split_name, 0) + 1
            split = f" of split {split_name!r}" if split_name else ""
            out.append(f"row {counts[split_name]}{split} of {self.path!r}")
        return out

    def _check_fields(self, first: dict[str, Any]) -> None:
        """Every mapped field is a column of the data (a typo is named here, not as an empty field per row)."""
        for role, field in self.fields.items():
            if field is not None and str(field) not in first:
                raise ValueError(f"{self.name}: field {str(field)!r} ({role}=) is not in {self.path!r}; its fields are "
                                 f"{', '.join(map(str, first))}. Map it with --task-args {role}=FIELD")

    def _text(self, row: dict[str, Any], role: str, where: str) -> str:
        field = str(self.fields[role])
        value = row.get(field)
        if missing(value):
            raise ValueError(f"{self.name}: field {field!r} ({role}=) is missing or empty in {where}")
        return str(value).strip()

    def row_answer(self, row: dict[str, Any], where: str) -> str:
        """The gold answer of a row: its answer field, the part after the last ``####`` if it has one."""
        text = self._text(row, "answer", where)
        marked = hash_answers(text)
        if marked and not marked[-1]:
            raise ValueError(f"{self.name}: field {self.fields['answer']!r} (answer=) has nothing after '####' in "
                             f"{where}")
        return marked[-1] if marked else text

    def row_solution(self, row: dict[str, Any], where: str) -> str | None:
        """The worked solution of a row (None without a solution field), without a final ``####`` line."""
        if self.fields["solution"] is None:
            return None
        text = self._text(row, "solution", where)
        return text.rsplit("####", 1)[0].rstrip() if "####" in text else text

    def _check_gold(self, gold: str, where: str) -> None:
        """The checker can read the gold (number and choice: cheap to check on every row at load)."""
        from .checkers import choice, number

        reader = {"number": number.gold_value, "choice": choice.gold_letter}.get(self.checker_name)
        if reader is not None:
            try:
                reader(gold)
            except ValueError as e:
                raise ValueError(f"{self.name}: field {self.fields['answer']!r} (answer=) in {where}: {e}") from None

    def _levels(self, rows: list[tuple[dict[str, Any], str | None]], wheres: list[str]) -> list[int]:
        if self.fields["level"] is None:
            return [1] * len(rows)
        values = [self._text(row, "level", where) for (row, _), where in zip(rows, wheres)]
        numbers = level_numbers(values)
        return [numbers[v] for v in values]

    def _split(self, row: dict[str, Any], split_name: str | None, key: str, where: str) -> str:
        if self.fields["split"] is not None:
            value, field = self._text(row, "split", where), f"field {self.fields['split']!r} (split=)"
        elif split_name is not None:
            value, field = split_name, "the data set's split name"
        else:
            return HELDOUT if heldout_bucket(key) == 0 else TRAIN
        try:
            return SPLIT_NAMES[value.casefold()]
        except KeyError:
            raise ValueError(f"{self.name}: {field} is {value!r} in {where}; use one of "
                             f"{', '.join(SPLIT_NAMES)}") from None

    # -- the data set ------------------------------------------------------------------------------
    def problems(self) -> list[Problem]:
        """Every row as a Problem, in file order."""
        return list(self._problems)

    def sample(self, rng: random.Random, level: int) -> Problem:
        self.check_level(level)
        return rng.choice(self._by_level[level])

    def sample_split(self, rng: random.Random, level: int, split: str, max_tries: int = 1000) -> Problem:
        """A row of ``level`` in the train or held-out split, drawn by ``rng``."""
        if split not in (TRAIN, HELDOUT):
            raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
        self.check_level(level)
        pool = self._pools.get((level, split))
        if not pool:
            raise ValueError(f"{self.name}: {self.path!r} has no {split} rows at level {level} (its "
                             f"{len(self._pools.get((level, TRAIN if split == HELDOUT else HELDOUT), []))} rows "
                             "there are all in the other split)")
        return rng.choice(pool)

    def heldout_stream(self, level: int, seed: int | None = None) -> Iterator[Problem]:
        """The distinct held-out rows of ``level``, shuffled by a generator seeded as for generated tasks (the named
        set, or ``seed``): a fixed order, so a smaller held-out set is a prefix of a larger one; it ends with the
        rows."""
        seen: set[str] = set()
        rows = [p for p in self._pools.get((level, HELDOUT), []) if not (p.key in seen or seen.add(p.key))]
        random.Random(f"{HELDOUT_SET}-{level}" if seed is None else f"{seed}-{self.name}-{level}").shuffle(rows)
        yield from rows

    def parse_question(self, question: str) -> Problem:
        """A typed question: the data set's own row when it is one of its questions (scored), else a problem
        with no answer (solved, not scored). White space around it does not count (rows are read stripped)."""
        question = question.strip()
        if question in self._by_question:
            return self._by_question[question]
        if not question:
            raise ValueError(f"{self.name}: the question is empty")
        return Problem(key=question, level=self.levels[0], question=question, answer=None)

    # -- references and scoring --------------------------------------------------------------------
    def reference(self, problem: Problem, mode: Mode) -> Reference | None:
        """System-1: the gold answer. System-2: the row's worked solution, then the gold (None without one)."""
        if check_mode(mode) == Mode.SYSTEM1:
            return None if problem.answer is None else Reference(answer=problem.answer)
        solution = problem.data.get("solution")
        return None if solution is None or problem.answer is None else Reference(problem.answer, solution)

    def solution_lines(self, problem: Problem) -> list[str]:
        """The row's worked solution, one line per step."""
        solution = problem.data.get("solution")
        if solution is None:
            raise ValueError(f"{self.name}: no worked solutions: map a solution field with --task-args solution=FIELD")
        return [line for line in solution.splitlines() if line.strip()]

    def step_labels(self, problem: Problem, reasoning: str) -> None:
        """None: a data set's worked solution is one of many right ones, so steps cannot be labelled against it."""
        return None

    def score(self, problem: Problem, completion: str, mode: Mode = Mode.SYSTEM2) -> Score:
        """The checker on the completion's answer part (System-2: after ``</think>``; System-1: all of it)."""
        parts = split_completion(completion, check_mode(mode))
        if not parts.well_formed:
            return Score(reward=0.0, answer=None, well_formed=False)
        if problem.answer is None:  # a typed question the data set does not hold: solved, not scored
            return Score(reward=0.0, answer=parts.answer_text or None, well_formed=bool(parts.answer_text))
        result = self.checker(problem.answer, parts.answer_text)
        return Score(reward=float(result.correct), answer=result.extracted, well_formed=result.extracted is not None,
                     correct=result.correct)
