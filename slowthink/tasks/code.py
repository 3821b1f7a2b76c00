"""The ``code`` task: write a Python function that passes its tests (HumanEval and MBPP formats).

``--task code --task-args path=../shared/data/humaneval/HumanEval.jsonl``. Each JSONL line is one problem:

- HumanEval: ``task_id``, ``prompt`` (imports, the signature and docstring), ``test`` (a ``check(candidate)``
  function of asserts), ``entry_point`` and ``canonical_solution`` (the body);
- MBPP: ``task_id``, ``text`` (the description), ``test_list`` (assert lines), optional ``test_setup_code``
  and ``code`` (a full solution).

The model sees the prompt and answers with code: a ```python block (or the raw code) in the answer part of its
completion (after ``</think>`` in System-2). Either the function's body, HumanEval style, appended to the prompt,
or a full definition of the entry point, which replaces the prompt's (the prompt's imports and helpers stay).
The program run is that code, then the tests, then ``check(entry_point)``, in the sandbox
(``slowthink.tools.sandbox``, never in this process). Reward 1.0 when every test passes; with
``partial=true``, the fraction of assert executions that pass (each assert is run on its own, and reported as
it runs, so a crash or a timeout mid-way keeps what passed before it).

A pass is read from a random marker the harness prints after the tests, so code that exits early
(``sys.exit(0)``) does not pass. A program can still fool tests written as ``assert f(x) == y`` (an object equal
to everything); the reward is only as strong as the tests.

One level (the data sets have no difficulty scale); the held-out split is by ``task_id`` as for every task.
References: System-1 is the canonical solution as a full function; System-2 has none (no worked solutions).
"""

from __future__ import annotations

import ast
import math
import re
import secrets
from pathlib import Path
from typing import Any

from ..chat import Mode, check_mode, split_completion
from ..tools.jsonl import json_objects
from ..tools.sandbox import SandboxUnavailable, run_python, sandbox_problem, unsafe_allowed
from .base import BaseTask, Problem, Reference, Score

MAX_CODE_CHARS = 50_000  # a longer answer is not run
INSTRUCTION = ("Complete the following Python function. Answer with the complete function (with any imports "
               "it needs) in a ```python code block.")
_BLOCK = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


class CodeTask(BaseTask):
    """Python functions checked by their tests in the sandbox (HumanEval / MBPP JSONL; path=...)."""

    name = "code"
    levels = (1,)

    def __init__(self, path: str | None = None, partial: bool = False, timeout_s: float = 10.0, memory_mb: int = 512,
                 allow_unsandboxed: bool = False):
        for field_name, flag in (("partial", partial), ("allow_unsandboxed", allow_unsandboxed)):
            if not isinstance(flag, bool):
                raise ValueError(f"code task: {field_name} must be true or false, got {flag!r}")
        if path is None or not str(path).strip():
            raise ValueError("code task: path= is required: a HumanEval or MBPP .jsonl file, e.g. "
                             "path=../shared/data/humaneval/HumanEval.jsonl")
        self.path = str(path)
        self.partial = partial
        self.timeout_s = positive("timeout_s", timeout_s, float)
        self.memory_mb = positive("memory_mb", memory_mb, int)
        self.allow_unsandboxed = bool(allow_unsandboxed) or unsafe_allowed(None)
        self.records = load_problems(self.path)
        problem = sandbox_problem()
        if problem is not None and not self.allow_unsandboxed:
            raise SandboxUnavailable(f"the code task runs model-written code only in the sandbox: {problem}. "
                                     "allow_unsandboxed=true (or SLOWTHINK_UNSAFE_NO_SANDBOX=1) runs it without")

    def sample(self, rng, level: int) -> Problem:
        self.check_level(level)
        return as_problem(self.records[rng.randrange(len(self.records))])

    def parse_question(self, question: str) -> Problem:
        """A typed question (``slowthink solve --question``): one of the file's problems, by its task_id
        (``HumanEval/0``) or its whole question text. Anything else is refused: code is scored by a problem's
        tests, and a new question has none."""
        typed = question.strip()
        for record in self.records:
            if typed in (record["task_id"], question_text(record).strip()):
                return as_problem(record)
        raise ValueError(f"code task: a typed question must be a task_id of {self.path!r} (e.g. "
                         f"{self.records[0]['task_id']!r}) or one of its questions: code is scored by the tests of "
                         "the problem")

    def reference(self, problem: Problem, mode: Mode) -> Reference | None:
        check_mode(mode)
        if mode != Mode.SYSTEM1 or not problem.answer:
            return None
        return Reference(answer=f"```python\n{problem.answer.strip(chr(10)).rstrip()}\n```")

    def score(self, problem: Problem, completion: str, mode: Mode = Mode.SYSTEM2) -> Score:
        split = split_completion(completion, check_mode(mode))
        code = extract_code(split.answer_text or "", problem.data["entry_point"]) if split.well_formed else None
        if not code:
            return Score(reward=0.0, answer=None, well_formed=False)
        program = build_program(problem.data, code)
        if program is None:  # does not compile, in any of the readings tried
            return Score(reward=0.0, answer=code, well_formed=False)
        marker = secrets.token_hex(16)
        result = run_python(program + harness(problem.data, marker, self.partial), timeout_s=self.timeout_s,
                            memory_mb=self.memory_mb, allow_unsandboxed=self.allow_unsandboxed)
        reward = reward_from_output(result.stdout, marker, self.partial, count_asserts(problem.data))
        return Score(reward=reward, answer=code, well_formed=True, correct=reward == 1.0)


def positive(name: str, value: Any, kind: type) -> float | int:
    """``value`` as a positive ``kind`` (int or float), or a ValueError naming the argument."""
    try:
        number = kind(value)
        if isinstance(value, bool) or not 0 < number < math.inf or (kind is int and number != float(value)):
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"code task: {name} must be a positive {'whole ' if kind is int else ''}number, "
                         f"got {value!r}") from None
    return number


# -- data ------------------------------------------------------------------------------------------------
def load_problems(path: str) -> list[dict[str, Any]]:
    """The problems of a HumanEval or MBPP JSONL file (or a folder holding one), in one shape: task_id,
    prompt, entry_point, test (code defining the checks), call (what runs them), solution (or None)."""
    file = Path(path)
    if file.is_dir():
        found = sorted(file.glob("*.jsonl"))
        if len(found) != 1:
            raise ValueError(f"code task: path {path!r} is a folder with {len(found)} .jsonl files; name one")
        file = found[0]
    if not file.is_file():
        raise ValueError(f"code task: path {path!r} not found; give a HumanEval or MBPP .jsonl file, e.g. "
                         "path=../shared/data/humaneval/HumanEval.jsonl")
    try:
        lines = list(json_objects(file))
    except ValueError as e:
        raise ValueError(f"code task: {e}") from None
    records = [_normalize(record, f"{file}:{number}") for number, record in lines]
    if not records:
        raise ValueError(f"code task: {file} holds no problems")
    return records


def _normalize(r: dict, where: str) -> dict[str, Any]:
    if {"prompt", "test", "entry_point"} <= r.keys():  # HumanEval
        body = r.get("canonical_solution")
        return {"task_id": str(r.get("task_id", where)), "prompt": r["prompt"], "entry_point": r["entry_point"],
                "test": r["test"], "call": f"check({r['entry_point']})",
                "solution": r["prompt"] + body if body else None, "style": "humaneval"}
    if {"text", "test_list"} <= r.keys():  # MBPP
        tests = list(r["test_list"])
        called = re.search(r"assert\s+(?:not\s+)?\(?\s*(?:set\()?\s*([A-Za-z_]\w*)\s*\(", tests[0] if tests else "")
        if not called:
            raise ValueError(f"code task: {where}: cannot find the function the first test calls")
        shown = "\n".join(tests[:3])
        return {"task_id": str(r.get("task_id", where)), "prompt": "", "entry_point": called.group(1),
                "description": f"{r['text']}\nYour code should pass these tests:\n{shown}",
                "test": (r.get("test_setup_code") or "") + "\n" + "\n".join(tests), "call": "",
                "solution": r.get("code"), "style": "mbpp"}
    raise ValueError(f"code task: {where} is neither HumanEval (prompt, test, entry_point) nor MBPP "
                     f"(text, test_list); its fields: {', '.join(sorted(r))}")


def as_problem(record: dict) -> Problem:
    return Problem(key=record["task_id"], level=1, question=question_text(record), answer=record.get("solution"),
                   data=record)


def question_text(record: dict) -> str:
    if record["style"] == "mbpp":
        return f"{record['description']}\n\nAnswer with the complete function in a ```python code block."
    return f"{INSTRUCTION}\n\n```python\n{record['prompt'].rstrip()}\n```"


# -- building the program --------------------------------------------------------------------------------
def extract_code(answer: str, entry_point: str) -> str | None:
    """The code of an answer: the last ```python block that defines the entry point, else the last block,
    else the whole answer; None when empty or too long to run."""
    blocks = _BLOCK.findall(answer)
    defining = [b for b in blocks if _defines(b, entry_point)]
    code = (defining or blocks or [answer])[-1]
    if not code.strip() or len(code) > MAX_CODE_CHARS:
        return None
    return code.rstrip() + "\n"


def _defines(code: str, name: str) -> bool:
    return re.search(rf"^\s*def\s+{re.escape(name)}\s*\(", code, flags=re.MULTILINE) is not None


def build_program(record: dict, code: str) -> str | None:
    """Prompt and code as one program that compiles, or None. A full definition of the entry point replaces the
    prompt's (kept as a stub, for its imports and helpers); anything else is a body, read as written, as an
    indented block, or with its first line's indentation restored (answers arrive stripped)."""
    prompt = record["prompt"]
    if record["style"] == "mbpp" or _defines(code, record["entry_point"]) and not code.startswith((" ", "\t")):
        candidates = [f"{prompt}    pass\n\n{code}" if prompt else code]
    else:
        indented = "".join(f"    {line}" if line.strip() else line for line in code.splitlines(keepends=True))
        first, _, rest = code.partition("\n")
        candidates = [prompt + code, prompt + indented, f"{prompt}    {first}\n{rest}"]
    for program in candidates:
        if _parses(program):
            return program
    return None


def _parses(program: str) -> bool:
    # Compiling only (nothing runs), on bounded input: safe on the host. compile, not ast.parse, since only
    # the compiler refuses a `return` outside a function.
    try:
        compile(program, "<completion>", "exec", dont_inherit=True)
        return True
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False


def harness(record: dict, marker: str, partial: bool) -> str:
    """The tests and the call that runs them, then the marker. With ``partial``, every assert reports."""
    tests = with_reported_asserts(record["test"], marker) if partial else record["test"]
    return f"\n\n{tests}\n\n{record['call']}\nprint({marker!r} + ' done', flush=True)\n"


class _ReportAsserts(ast.NodeTransformer):
    """``assert cond, msg`` -> ``__slowthink_assert(lambda: cond)``: counted, reported, never raising."""

    def visit_Assert(self, node: ast.Assert):
        call = ast.Expr(ast.Call(func=ast.Name("__slowthink_assert", ast.Load()),
                                 args=[ast.Lambda(args=ast.arguments([], [], None, [], [], None, []),
                                                  body=node.test)], keywords=[]))
        return ast.copy_location(call, node)


def with_reported_asserts(test: str, marker: str) -> str:
    tree = _ReportAsserts().visit(ast.parse(test))
    helper = (f"def __slowthink_assert(cond):\n"
              f"    try:\n        ok = bool(cond())\n    except Exception:\n        ok = False\n"
              f"    print({marker!r} + (' pass' if ok else ' fail'), flush=True)\n")
    return helper + ast.unparse(ast.fix_missing_locations(tree))


def count_asserts(record: dict) -> int:
    """Assert statements in the tests (one per statement, however often a loop runs it)."""
    try:
        return sum(isinstance(n, ast.Assert) for n in ast.walk(ast.parse(record["test"])))
    except SyntaxError:
        return 0


def reward_from_output(stdout: str, marker: str, partial: bool, static_asserts: int) -> float:
    """1.0 when the marker's ``done`` line came (the tests ran to the end), else 0.0; with ``partial``, passes
    over assert executions, or over the tests' assert statements when the run stopped before the end."""
    lines = [line[len(marker) + 1:] for line in stdout.splitlines() if line.startswith(marker + " ")]
    done = "done" in lines
    if not partial:
        return 1.0 if done else 0.0
    passed, failed = lines.count("pass"), lines.count("fail")
    executed = passed + failed
    total = executed if done else max(executed, static_asserts)
    if total == 0:
        return 1.0 if done else 0.0
    return passed / total
