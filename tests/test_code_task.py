"""The code task on real HumanEval problems (../shared/data/humaneval): tests run in the sandbox."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from slowthink.chat import Mode
from slowthink.tasks import get_task
from slowthink.tasks.code import CodeTask, build_program, load_problems
from slowthink.tasks.registry import TaskError
from slowthink.tools.sandbox import sandbox_problem

ROOT = Path(__file__).resolve().parents[1]
HUMANEVAL = ROOT.parent / "shared" / "data" / "humaneval" / "HumanEval.jsonl"
pytestmark = [
    pytest.mark.skipif(not HUMANEVAL.is_file(), reason=f"HumanEval not found at {HUMANEVAL}"),
    pytest.mark.skipif(sandbox_problem() is not None, reason=f"bubblewrap cannot run here: {sandbox_problem()}"),
]
S1, S2 = Mode.SYSTEM1, Mode.SYSTEM2


@pytest.fixture(scope="module")
def task():
    return get_task("code", path=str(HUMANEVAL))


def problems(task, n: int, seed: int = 0):
    """``n`` distinct problems spread over the file."""
    records = random.Random(seed).sample(task.records, n)
    return [task.sample(_Fixed(task.records.index(r)), 1) for r in records]


class _Fixed(random.Random):
    """An rng whose randrange returns one index: picks a given record through the task's own sample()."""

    def __init__(self, index: int):
        super().__init__(0)
        self.index = index

    def randrange(self, *args, **kwargs):
        return self.index


def body(problem) -> str:
    return problem.data["solution"][len(problem.data["prompt"]):]


def s2(answer: str) -> str:
    return f"I will write the function.\n</think>\n\n{answer}"


def score_all(task, pairs):
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda pc: task.score(pc[0], pc[1][0], pc[1][1]), pairs))


def test_loads_all_of_humaneval(task):
    assert len(task.records) == 164 and all(r["style"] == "humaneval" for r in task.records)


def test_canonical_solutions_pass_and_broken_ones_fail(task):
    chosen = problems(task, 24)
    full = [(p, (task.reference(p, S1).answer, S1)) for p in chosen]  # the full function in a block
    bodies = [(p, (s2(body(p)), S2)) for p in chosen]  # HumanEval style: the body alone, stripped by the split
    nones = [(p, (s2("```python\n    return None\n```"), S2)) for p in chosen]
    scores = score_all(task, full + bodies + nones)
    good, by_body, broken = scores[:24], scores[24:48], scores[48:]
    assert all(s.correct and s.reward == 1.0 for s in good), [p.key for p, s in zip(chosen, good) if not s.correct]
    assert all(s.correct for s in by_body), [p.key for p, s in zip(chosen, by_body) if not s.correct]
    assert not any(s.correct for s in broken) and all(s.well_formed for s in broken)


def test_off_by_one_mutation_fails(task):
    record = next(r for r in task.records if r["task_id"] == "HumanEval/0")  # has_close_elements
    problem = task.sample(_Fixed(task.records.index(record)), 1)
    mutated = body(problem).replace("distance < threshold", "distance <= threshold + 1")
    assert mutated != body(problem)
    assert task.score(problem, s2(body(problem)), S2).correct
    assert task.score(problem, s2(mutated), S2).reward == 0.0


def test_partial_credit_counts_asserts(task):
    partial = CodeTask(str(HUMANEVAL), partial=True, timeout_s=4)  # short: one answer below hangs
    record = next(r for r in task.records if r["task_id"] == "HumanEval/0")
    problem = partial.sample(_Fixed(task.records.index(record)), 1)
    # Its 7 asserts expect True, False, True, False, True, True, False: "always True" passes 4 of 7.
    assert partial.score(problem, s2("    return True"), S2).reward == pytest.approx(4 / 7)
    assert partial.score(problem, s2(body(problem)), S2).reward == 1.0
    assert task.score(problem, s2("    return True"), S2).reward == 0.0  # all-or-nothing by default
    # A timeout part-way keeps what passed before it.
    hang = "    if threshold == 0.05:\n        while True: pass\n    return True"
    assert partial.score(problem, s2(hang), S2).reward == pytest.approx(1 / 7)


def test_exiting_early_does_not_pass(task):
    problem = problems(task, 1, seed=3)[0]
    for trick in ("import sys; sys.exit(0)", "import os; os._exit(0)", "raise SystemExit"):
        assert task.score(problem, s2(f"```python\n{trick}\n```"), S2).reward == 0.0, trick


def test_malformed_completions_score_zero(task):
    problem = problems(task, 1, seed=4)[0]
    assert not task.score(problem, body(problem), S2).well_formed  # System-2 without </think>
    assert not task.score(problem, s2(""), S2).well_formed
    assert not task.score(problem, s2("```python\ndef (:\n```"), S2).well_formed  # does not compile


def test_escape_attempt_scores_zero_and_harms_nothing(task, tmp_path, monkeypatch):
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("keep")
    monkeypatch.setenv("SLOWTHINK_CODE_SECRET", "code-secret-31337")
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    marker = uuid.uuid4().hex
    record = next(r for r in task.records if r["task_id"] == "HumanEval/0")
    problem = task.sample(_Fixed(task.records.index(record)), 1)
    attack = (f"```python\nimport os, signal, subprocess, sys, shutil\n"
              f"def has_close_elements(numbers, threshold):\n"
              f"    for f in (lambda: os.remove({str(sentinel)!r}), lambda: shutil.rmtree({str(ROOT)!r}),\n"
              f"              lambda: os.kill({victim.pid}, 9), lambda: os.kill({os.getpid()}, 9),\n"
              f"              lambda: os.kill(-1, 9)):\n"
              f"        try: f()\n        except OSError: pass\n"
              f"    subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)', '{marker}'],\n"
              f"                     start_new_session=True)\n"
              f"    print(os.environ.get('SLOWTHINK_CODE_SECRET'))\n"
              f"    return None\n```")
    try:
        score = task.score(problem, s2(attack), S2)
        assert score.reward == 0.0 and score.well_formed
        assert sentinel.read_text() == "keep" and (ROOT / "pyproject.toml").is_file()
        assert victim.poll() is None
        alive = [p for p in os.listdir("/proc") if p.isdigit() and _cmdline_has(p, marker)]
        assert alive == []
    finally:
        victim.kill()
        victim.wait()


def _cmdline_has(pid: str, marker: str) -> bool:
    try:
        return marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def test_full_definition_keeps_the_prompts_helpers(task):
    record = next(r for r in task.records if r["task_id"] == "HumanEval/10")  # make_palindrome uses is_palindrome
    problem = task.sample(_Fixed(task.records.index(record)), 1)
    assert "def is_palindrome" in record["prompt"]
    own = "```python\ndef make_palindrome(string: str) -> str:\n" + body(problem) + "```"
    assert task.score(problem, s2(own), S2).correct


def test_mbpp_format(tmp_path):
    path = tmp_path / "mbpp.jsonl"
    rows = [{"task_id": 1, "text": "Write a function to add two numbers.", "code": "def add(a, b):\n    return a + b",
             "test_list": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"], "test_setup_code": ""}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    mbpp = get_task("code", path=str(path))
    problem = mbpp.sample(random.Random(0), 1)
    assert "add(1, 2) == 3" in problem.question
    assert mbpp.score(problem, mbpp.reference(problem, S1).answer, S1).correct
    assert not mbpp.score(problem, "```python\ndef add(a, b):\n    return a - b\n```", S1).correct
    assert CodeTask(str(path), partial=True).score(
        problem, "```python\ndef add(a, b):\n    return abs(a) + b\n```", S1).reward == 0.5


def test_bad_path_and_bad_records_are_named(tmp_path):
    with pytest.raises(TaskError, match="not found"):
        get_task("code", path=str(tmp_path / "missing.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "x"}\n')
    with pytest.raises(ValueError, match="neither HumanEval"):
        load_problems(str(bad))


def test_body_indentation_is_restored(task):
    problem = problems(task, 1, seed=5)[0]
    stripped = body(problem).strip()  # what a split answer looks like: first line's indentation lost
    assert build_program(problem.data, stripped + "\n") is not None
    assert task.score(problem, s2(stripped), S2).correct


@pytest.mark.parametrize("args, words", [
    ({}, "path= is required"),
    ({"timeout_s": 0}, "timeout_s must be a positive number, got 0"),
    ({"timeout_s": float("inf")}, "timeout_s must be a positive number"),
    ({"memory_mb": "abc"}, "memory_mb must be a positive whole number, got 'abc'"),
    ({"memory_mb": 1.5}, "memory_mb must be a positive whole number"),
    ({"partial": "maybe"}, "partial must be true or false"),
])
def test_bad_task_arguments_are_named(args, words):
    args = {"path": str(HUMANEVAL), **args} if args else {}
    with pytest.raises(TaskError, match=words):
        get_task("code", **args)


def test_a_lone_surrogate_in_the_answer_scores_zero_instead_of_raising(task):
    # JSON (a served completion, a tool call) may carry "\ud800", which has no UTF-8 form.
    problem = problems(task, 1, seed=3)[0]
    answer = f"```python\n{problem.data['solution']}\n# \ud800\n```"
    assert task.score(problem, answer, S1).reward == 0.0


def test_a_typed_question_is_a_problem_of_the_file(task):
    by_id = task.parse_question(" HumanEval/0\n")
    assert by_id.key == "HumanEval/0" and task.score(by_id, task.reference(by_id, S1).answer, S1).correct
    by_text = task.parse_question(by_id.question)
    assert by_text.key == "HumanEval/0"
    with pytest.raises(ValueError, match=r"task_id of .* \(e.g. 'HumanEval/0'\)"):
        task.parse_question("Write a function that adds two numbers.")
