"""Tasks: generators, references, verifiers, step labels, held-out split, registry and plugins."""

from __future__ import annotations

import copy
import random
import re
import textwrap
from pathlib import Path

import pytest

from slowthink.chat import MODES, split_completion
from slowthink.tasks import (Arithmetic, Countdown, Doubling, Problem, Reference, Task, TaskError, get_task,
    list_tasks, parse_task_args)
from slowthink.tasks.base import heldout_bucket
from slowthink.tasks.countdown import ParseError, evaluate, leaves, parse_expression, reachable

REPO_ROOT = Path(__file__).resolve().parent.parent
PLUGINS = REPO_ROOT / "tests" / "plugins"

TASK_FACTORIES = {
    "arithmetic-mul": lambda: Arithmetic(op="mul", max_level=4),
    "arithmetic-add": lambda: Arithmetic(op="add", max_level=4),
    "arithmetic-mixed": lambda: Arithmetic(op="mixed", max_level=3),
    "countdown": lambda: Countdown(),
    "doubling": lambda: Doubling(width=6, max_doublings=4),
    "example-sort-letters": lambda: get_task(str(REPO_ROOT / "examples" / "my_task.py") + ":SortLetters",
                                             max_level=6),
}


@pytest.fixture(params=sorted(TASK_FACTORIES))
def task(request):
    return TASK_FACTORIES[request.param]()


def problems(task, per_level=8, seed=0):
    rng = random.Random(seed)
    return [task.sample(rng, level) for level in task.levels for _ in range(per_level)]


def corrupt(line: str) -> str:
    """Change the last letter or digit of a line so that it no longer matches the derivation."""
    for i in range(len(line) - 1, -1, -1):
        ch = line[i]
        if ch.isdigit():
            return line[:i] + str((int(ch) + 1) % 10) + line[i + 1:]
        if ch.isalpha():
            return line[:i] + ("a" if ch != "a" else "b") + line[i + 1:]
    return line + "?"


# -- every task -------------------------------------------------------------------------------------
def test_protocol_and_levels(task):
    assert isinstance(task, Task)
    assert isinstance(task.levels, tuple) and task.levels
    with pytest.raises(ValueError):
        task.sample(random.Random(0), max(task.levels) + 1)


def test_generator_is_deterministic(task):
    a, b = problems(task, seed=7), problems(task, seed=7)
    assert [(p.key, p.question, p.answer, p.level) for p in a] == [(p.key, p.question, p.answer, p.level) for p in b]
    c = problems(task, seed=8)
    assert [p.key for p in a] != [p.key for p in c]


def test_references_score_correct_in_both_modes(task):
    for p in problems(task):
        assert isinstance(p, Problem)
        for mode in MODES:
            assert task.prompt(p, mode) == [{"role": "user", "content": p.question}]
            ref = task.reference(p, mode)
            assert isinstance(ref, Reference)
            assert (ref.reasoning is None) == (mode == "system1")
            s = task.score(p, ref.completion(), mode)
            assert s.correct and s.reward == 1.0 and s.well_formed, (p, mode, s)
            # an end-of-turn token and surrounding whitespace are tolerated
            assert task.score(p, ref.completion() + "  \n<|im_end|>", mode).correct


def test_step_labels_of_references_and_corruptions(task):
    for p in problems(task, per_level=4):
        reasoning = task.reference(p, "system2").reasoning
        lines = task.steps(reasoning)
        assert task.step_labels(p, reasoning) == [True] * len(lines)
        for k in range(len(lines)):
            broken = "\n".join(lines[:k] + [corrupt(lines[k])] + lines[k + 1:])
            assert task.step_labels(p, broken) == [True] * k + [False] * (len(lines) - k), (p, broken)
        assert task.step_labels(p, reasoning + "\ngarbage line") == [True] * len(lines) + [False]


def test_heldout_split_is_disjoint(task):
    for level in task.levels[-2:]:
        rng = random.Random(level)
        train = [task.sample_split(rng, level, "train") for _ in range(200)]
        assert all(heldout_bucket(p.key) != 0 for p in train)
        held = task.heldout_set(per_level=15, levels=(level,))
        keys = [p.key for p in held]
        assert len(keys) == 15 and len(set(keys)) == 15
        assert all(heldout_bucket(k) == 0 and p.level == level for k, p in zip(keys, held))
        assert not set(keys) & {p.key for p in train}
        assert [p.key for p in task.heldout_set(per_level=15, levels=(level,))] == keys  # fixed set


def test_heldout_set_is_one_named_sequence(task):
    level = task.levels[-1]
    big = task.heldout_set(per_level=20, levels=(level,))
    assert task.heldout_set(per_level=7, levels=(level,)) == big[:7]  # a smaller set is a prefix of a larger one
    renamed = copy.copy(task)
    renamed.name = "renamed"
    assert renamed.heldout_set(per_level=20, levels=(level,)) == big  # the seed does not depend on the task
    assert task.heldout_set(per_level=20, levels=(level,), seed=5) != big  # a seed draws another sequence
    # a level with few held-out problems gives all of them, and a larger request gives no more
    one_digit = Arithmetic(op="mul").heldout_set(per_level=1000, levels=(1,))
    assert 0 < len(one_digit) < 81 and len({p.key for p in one_digit}) == len(one_digit)
    assert Arithmetic(op="mul").heldout_set(per_level=5000, levels=(1,)) == one_digit


def test_malformed_answers_are_not_correct(task):
    p = problems(task, per_level=1)[-1]
    ans = p.answer
    reasoning = task.reference(p, "system2").reasoning
    cases = {
        "system1": ["", "   \n\t ", f"{ans} {ans}", f"{ans}\n{ans}", f"{ans}, {ans}",
                    f"<think>\n{reasoning}\n</think>\n\n{ans}", f"<think>\n\n</think>\n\n{ans}", f"{ans}</think>",
                    "9" * 1000, "-" + ans, "+" + ans, "\x00" + ans],
        "system2": ["", "  \n ", f"{reasoning}\n\n{ans}", f"{reasoning}\n</think>\n\n</think>\n\n{ans}",
                    f"{reasoning}\n</think>\n\n{ans}</think>", f"<think>\n{reasoning}\n</think>\n\n{ans}",
                    f"{reasoning}\n</think>\n\n", f"{reasoning}\n</think>\n\n{ans} {ans}",
                    f"{reasoning}\n</think>\n\n{ans}\n{ans}", f"{reasoning}\n</think>\n\n" + "9" * 1000],
    }
    for mode, completions in cases.items():
        for completion in completions:
            s = task.score(p, completion, mode)
            assert not s.correct and s.reward == 0.0, (mode, completion, s)
    assert not task.score(p, "", "system2").well_formed
    assert not task.score(p, f"{reasoning}\n\n{ans}", "system2").well_formed  # missing </think>


def test_very_long_input_is_rejected(task):
    p = problems(task, per_level=1)[0]
    for completion in ("1+" * 50_000 + "1", "(" * 100_000, "x" * 100_000, "9" * 100_000):
        assert not task.score(p, completion, "system1").correct


def test_split_completion():
    assert split_completion("a\nb\n</think>\n\n42<|im_end|>", "system2") == split_completion("a\nb\n</think>\n\n42",
                                                                                          "system2")
    s = split_completion("a\nb\n</think>\n\n 42 ", "system2")
    assert (s.reasoning, s.answer_text, s.well_formed) == ("a\nb", "42", True)
    assert not split_completion("42", "system2").well_formed
    assert not split_completion("<think>42", "system1").well_formed


# -- arithmetic -------------------------------------------------------------------------------------
def test_arithmetic_levels_are_digit_counts():
    task = Arithmetic(op="mixed", max_level=5)
    for p in problems(task, per_level=20):
        a, op, b = re.fullmatch(r"(\d+)([+*])(\d+)", p.question).groups()
        assert len(a) == len(b) == p.level
        assert int(p.answer) == (int(a) + int(b) if op == "+" else int(a) * int(b))


def test_arithmetic_worked_solution_matches_docstring():
    p = Problem(key="347*862", level=3, question="347*862", answer="299114", data={"a": 347, "b": 862, "op": "mul"})
    assert Arithmetic(op="mul").reference(p, "system2").completion() == (
        "7,4,3*2,6,8\n2:140906000000 040906000000\n6:004228200200 041115010200\n"
        "8:000056372702 040111090902\n</think>\n\n299114")
    assert Arithmetic(op="mul", cot="compact").reference(p, "system2").completion() == (
        "743*268\n2:496000 496000\n6:028020 415120\n8:006772 411992\n</think>\n\n299114")


def test_arithmetic_cells_carry_digits():
    """Every cell is carry*10 + digit: the sum row's units read back the product, column by column."""
    task = Arithmetic(op="mul")
    for p in problems(task, per_level=5):
        lines = task.solution_lines(p)
        last = lines[-1].split(" ")[1]
        cells = [int(last[i:i + 2]) for i in range(0, len(last), 2)]
        assert int("".join(str(c % 10) for c in reversed(cells))) == int(p.answer)
        assert all(c < 100 for c in cells)


def test_arithmetic_answer_parsing():
    task = Arithmetic(op="add")
    p = Problem(key="5+7", level=1, question="5+7", answer="12", data={"a": 5, "b": 7, "op": "add"})
    assert task.score(p, " 12 ", "system1").correct
    for bad in ["12 13", "12\n13", "12, 13", "+12", "12.0", "1e1", "twelve", "１２", "0x0c", "9" * 1000]:
        s = task.score(p, bad, "system1")
        assert not s.correct and not s.well_formed, bad
    s = task.score(p, "-12", "system1")
    assert s.well_formed and not s.correct and s.answer == "-12"


# -- countdown --------------------------------------------------------------------------------------
@pytest.fixture
def countdown():
    return Countdown()


def test_countdown_levels_and_problem_shape(countdown):
    assert countdown.levels == (2, 3, 4, 5, 6)
    for p in problems(countdown, per_level=30):
        nums, target = p.data["numbers"], p.data["target"]
        assert len(nums) == p.level and nums == sorted(nums) and all(1 <= n <= 99 for n in nums)
        assert p.question == f"Numbers: {' '.join(map(str, nums))}\nTarget: {target}"
        assert 1 <= target <= 999 and target not in nums
        assert max(1, p.level - 2) <= len(p.data["steps"]) <= p.level - 1
        tree = parse_expression(p.answer)
        assert evaluate(tree) == target and not (set(leaves(tree)) - set(nums))
        lines = countdown.reference(p, "system2").reasoning.split("\n")
        assert all(re.fullmatch(r"\d+[-+*/]\d+=\d+", line) for line in lines)
        assert lines[-1].endswith(f"={target}")


@pytest.fixture
def p178(countdown):
    return countdown.make_problem([50, 3, 25, 7], 178)


def test_countdown_make_problem(countdown, p178):
    assert p178.question == "Numbers: 3 7 25 50\nTarget: 178" and p178.level == 4
    for mode in MODES:
        assert countdown.score(p178, countdown.reference(p178, mode).completion(), mode).correct
    with pytest.raises(ValueError, match="cannot be reached"):
        countdown.make_problem([1, 1], 997)
    p = countdown.make_problem([4, 9], 9)  # target already given: an empty worked solution
    assert countdown.score(p, countdown.reference(p, "system2").completion(), "system2").correct


def score1(task, p, answer):
    return task.score(p, answer, "system1")


def test_countdown_answers(countdown, p178):
    for good in ["(50-25)*7+3", " ( 50 - 25 ) * 7 + 3 ", "3+7*(50-25)", "25*7+3", "((25*7))+3"]:
        s = score1(countdown, p178, good)
        assert s.correct and s.well_formed and s.answer == good.replace(" ", ""), good
    # well formed, wrong: reuse beyond the given count (value is right), numbers not given, wrong value
    for wrong in ["50*3+25+3", "178", "100+78", "50+25", "25*7+3+0", "(" * 16 + "3" + ")" * 16,
                  "9*" * 99 + "9"]:
        s = score1(countdown, p178, wrong)
        assert s.well_formed and not s.correct, wrong
    # malformed: syntax, characters, unary signs, nesting, digits, trailing "= target"
    for bad in ["((50-25)*7+3", "(50-25))*7+3", "()", "50-", "*3", "(50-25)(7)", "-3+181", "+178",
                "50**2", "2^3", "__import__('os').system('true')", "(50-25)*7+3=178", "7.0*25+3", "1e2",
                "(" * 17 + "3" + ")" * 17, "3" * 7, "9*" * 150 + "9", "25×7+3", "25*7\n+3", "[25*7]+3", "25\t*7+3"]:
        s = score1(countdown, p178, bad)
        assert not s.well_formed and not s.correct and s.answer is None, bad


def test_countdown_division(countdown):
    p = countdown.make_problem([4, 4, 10, 20], 10)
    s = score1(countdown, p, "20/(4-4)")
    assert s.well_formed and not s.correct  # division by zero: no exception, not correct
    assert not score1(countdown, p, "10+20/(4-4)").correct
    assert score1(countdown, p, "20/4*4-10").correct
    # a non-integer intermediate is fine when the final value is exactly the target (as in TinyZero)
    p14 = countdown.make_problem([2, 4, 7], 14)
    assert score1(countdown, p14, "7/2*4").correct
    assert score1(countdown, p14, "(7/4)*2*4").correct is False  # uses 4 twice
    assert not score1(countdown, p14, "7/4*2").correct  # 3.5


def test_countdown_parser_limits():
    with pytest.raises(ParseError):
        parse_expression("1" * 7)
    with pytest.raises(ParseError):
        parse_expression("(" * 17 + "1" + ")" * 17)
    with pytest.raises(ParseError):
        parse_expression("1+" * 200 + "1")
    assert evaluate(parse_expression("(" * 16 + "1" + ")" * 16)) == 1
    assert evaluate(parse_expression("8/4/2")) == 1 and evaluate(parse_expression("8-4-2")) == 2
    assert evaluate(parse_expression("2+3*4")) == 14 and evaluate(parse_expression("1/0")) is None


def test_countdown_step_labels(countdown, p178):
    labels = lambda text: countdown.step_labels(p178, text)  # noqa: E731
    assert labels("50-25=25\n25*7=175\n175+3=178") == [True, True, True]
    assert labels(" 50 - 25 = 25 \n\n25 * 7 = 175\n175+3=178") == [True, True, True]
    assert labels("50-25=25\n25*7=176\n176+2=178") == [True, False, False]  # arithmetic
    assert labels("50-25=25\n25*7=175\n175+3=178\n178+0=178") == [True, True, True, False]  # 0 not given
    assert labels("25*7=175\n50-25=25") == [True, False]  # 25 already consumed (50 unused is fine)
    assert labels("25*7=175\n175+3=178\n3+7=10") == [True, True, False]  # 3 consumed
    assert labels("50/3=16\n16*7=112") == [False, False]  # inexact division
    assert labels("3-7=-4\n50-25=25") == [False, False]  # a negative result cannot be written
    assert labels("hello\n25*7=175") == [False, False]
    # arithmetic right and operands available, but 178 can no longer be reached
    assert not reachable((21, 25, 50), 178)
    assert labels("3*7=21\n50-25=25") == [False, False]
    assert labels("") == []


# -- doubling -------------------------------------------------------------------------------------
def test_doubling_answers_and_worked_lines():
    task = Doubling()
    p = task.sample(random.Random(5), 4)
    x = int(p.question.split("*")[1])
    assert p.question == f"2^4*{x:08d}" and p.answer == f"{x * 16:08d}"
    assert task.reference(p, "system2").reasoning == f"2^1*{x * 2:08d} left3\n2^1*{x * 4:08d} left2\n2^1*{x * 8:08d} left1\n"
    one = task.sample(random.Random(5), 1)  # one doubling: nothing to think
    assert task.reference(one, "system2").completion() == "\n</think>\n\n" + one.answer
    padded = next(q for q in problems(task, per_level=20) if q.answer.startswith("0"))
    assert not task.score(padded, padded.answer.lstrip("0"), "system1").well_formed  # the answer keeps its padding
    for bad in ({"width": 3, "max_doublings": 6}, {"max_doublings": 10}, {"width": "8"}):
        with pytest.raises(ValueError):
            Doubling(**bad)


def test_doubling_step_sits_where_a_level_1_direct_answer_does():
    """Every doubling of a worked solution (each line, and the answer) is width+11 tokens after the digits it
    doubles, with the '1' of 2^1 two tokens before them where a direct answer's question has its k: the layout
    the task's docstring promises, which the zero-start experiment rests on. Checked on rendered token ids,
    so a change to the chat template breaks it here."""
    from slowthink.train.data import reference_example
    from slowthink.tokenizer import build_char_tokenizer

    tok, task = build_char_tokenizer(), Doubling(width=8, max_doublings=5)

    def numbers(p, mode):  # token texts, and where each run of 8 digit tokens starts
        text = [tok.decode([i]) for i in reference_example(task, tok, p, mode).rendered.ids]
        starts = [i for i in range(len(text) - 7) if all(t.isdigit() for t in text[i:i + 8])
                  and not (i and text[i - 1].isdigit())]
        return text, starts

    for p in problems(task, per_level=2):
        text, starts = numbers(p, "system1")
        assert len(starts) == 2 and starts[1] - starts[0] == 19 and text[starts[0] - 2] == str(p.level)
        text, starts = numbers(p, "system2")  # the question, k-1 lines, the answer
        assert len(starts) == p.level + 1
        assert all(b - a == 19 for a, b in zip(starts, starts[1:]))
        assert text[starts[1] - 21] == str(p.level)  # the first doubling reads the question's k; every later
        assert all(text[s - 21] == "1" for s in starts[2:])  # one (lines, answer) reads the 1 of 2^1 there


# -- registry ---------------------------------------------------------------------------------------
def test_list_and_get_builtin_tasks():
    assert {"arithmetic", "countdown"} <= set(list_tasks())
    t = get_task("countdown", max_level=4)
    assert isinstance(t, Countdown) and t.levels == (2, 3, 4)
    a = get_task("arithmetic", **parse_task_args("op=add,max_level=3"))
    assert a.op == "add" and a.levels == (1, 2, 3)
    assert issubclass(TaskError, ValueError)


@pytest.mark.parametrize("spec,kwargs,words", [
    ("nope", {}, ["unknown task", "arithmetic", "countdown", ".py:ClassName"]),
    ("", {}, ["arithmetic"]),
    ("arithmetic", {"opp": "mul"}, ["unknown argument", "opp", "op", "max_level"]),
    ("arithmetic", {"op": "div"}, ["op must be", "div"]),
    ("no/such/file.py:Task", {}, ["not found", "no/such/file.py"]),
    ("no.such.module:Task", {}, ["no module", "no.such.module"]),
])
def test_get_task_errors(spec, kwargs, words):
    with pytest.raises(TaskError) as e:
        get_task(spec, **kwargs)
    for word in words:
        assert word in str(e.value), (word, str(e.value))


def test_parse_task_args():
    assert parse_task_args("op=mul,max_level=5") == {"op": "mul", "max_level": 5}
    assert parse_task_args(" a = 0.5 , b=true, c=False,d=none, e=x=y ,") == {
        "a": 0.5, "b": True, "c": False, "d": None, "e": "x=y"}
    assert parse_task_args("") == {} and parse_task_args(None) == {}
    for bad in ("op", "=3", "max level=3"):
        with pytest.raises(TaskError, match="name=value"):
            parse_task_args(bad)


def test_plugin_task_loads(monkeypatch):
    t = get_task(f"{PLUGINS / 'good.py'}:GoodTask", offset=2)
    assert t.name == "add_one" and t.offset == 2
    p = t.sample(random.Random(0), 2)
    assert t.score(p, t.reference(p, "system2").completion(), "system2").correct
    monkeypatch.chdir(REPO_ROOT)
    assert get_task("tests/plugins/good.py:GoodTask").offset == 1
    assert type(get_task("tests/plugins/good.py")).__name__ == "GoodTask"  # the only task class in the file
    assert get_task("examples/my_task.py:SortLetters").name == "sort_letters"


@pytest.mark.parametrize("target,words", [
    ("good.py:NoSuchTask", ["no class 'NoSuchTask'", "GoodTask", "Helper"]),
    ("broken.py", ["ClassName", "ListLevels", "WrongReference"]),
    ("bad_import.py:ImportFails", ["importing the file failed", "ModuleNotFoundError", "slowthink_no_such_dependency"]),
    ("broken.py:NoScore", ["missing required", "score", "levels"]),
    ("broken.py:ListLevels", ["levels", "non-empty tuple of ints", "[1, 2]"]),
    ("broken.py:EmptyLevels", ["levels", "non-empty tuple"]),
    ("broken.py:StrLevels", ["levels", "tuple of ints"]),
    ("broken.py:SampleReturnsDict", ["sample()", "Problem", "dict"]),
    ("broken.py:SampleRaises", ["sample(", "KeyError", "vocabulary_file"]),
    ("broken.py:ScoreReturnsFloat", ["score(", "Score", "float"]),
    ("broken.py:WrongReference", ["reference completion", "not correct", "system1"]),
    ("broken.py:NeedsArgument", ["NeedsArgument", "path"]),
    ("broken.py:not_a_class", ["not a class"]),
])
def test_plugin_errors_are_actionable(target, words):
    with pytest.raises(TaskError) as e:
        get_task(str(PLUGINS / target))
    for word in words:
        assert word in str(e.value), (word, str(e.value))


def test_plugin_with_syntax_error(tmp_path):
    path = tmp_path / "oops.py"
    path.write_text(textwrap.dedent("""\
        class Oops:
            def sample(self, rng, level)
                return None
        """))
    with pytest.raises(TaskError) as e:
        get_task(f"{path}:Oops")
    assert "SyntaxError" in str(e.value) and "oops.py" in str(e.value)


def test_plugin_arguments_pass_through():
    t = get_task(str(PLUGINS / "broken.py") + ":NeedsArgument", path="data.jsonl")
    assert t.path == "data.jsonl"
