"""Answer checkers (slowthink/tasks/checkers/): each on right, equivalent, wrong, hedged, empty and adversarial
answers; and completions whose special tokens sit inside the answer."""

from __future__ import annotations

import threading
import time

import pytest

from slowthink.chat import split_completion
from slowthink.tasks import Arithmetic
from slowthink.tasks.checkers import CHECKERS, CheckResult, get_checker
from slowthink.tasks.checkers import base, choice, exact, number
from slowthink.tasks.checkers import math as math_checker
from slowthink.tokenizer import IM_END, PAD


def correct(name: str, gold: str, text: str) -> bool:
    result = CHECKERS[name](gold, text)
    assert isinstance(result, CheckResult)
    return result.correct


# -- shared extraction --------------------------------------------------------------------------------------------

def test_stated_answers_by_kind_and_balanced_boxes():
    assert base.boxed_contents(r"so \boxed{\frac{1}{2}} and \fbox{x^{2}}") == [r"\frac{1}{2}", "x^{2}"]
    assert base.boxed_contents(r"\boxed{unclosed {") == []
    assert base.stated_answers("work\n#### 1,000\n") == ["1,000"]
    assert base.stated_answers("The answer is 3.5. Then more.") == ["3.5"]
    assert base.stated_answers(r"the answer is 4, i.e. \boxed{5}") == ["5"]  # boxes win over statements
    assert base.alternatives("either 3 or 4") == ["3", "4"] and base.alternatives(r"3 \text{ or } 4") == ["3", "4"]


def test_registry_names_every_checker():
    assert set(CHECKERS) >= {"number", "math", "exact", "choice"}
    with pytest.raises(ValueError, match="checker must be one of number, math"):
        get_checker("numbers")


# -- number -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("gold, text", [
    ("Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 72", "72"),
    ("#### 1000", "$1,000"),
    ("42", "The answer is 42.0"),
    ("12", "She has 12 apples."),
    ("5", "5 km"),
    ("25", "25%"),
    ("-5", "-$5"),
    ("-3", "It drops to −3 degrees"),
    ("0.5", "1/2"),
    ("3.75", "#### 3.75"),
    ("42", r"so the total is \boxed{42}"),
    ("12", "The answer is 5 + 7 = 12."),
    ("72", "48 + 24 = 72"),
    ("42", "#### 42\n#### 42.00"),  # the same answer twice is not a hedge
])
def test_number_right_and_equivalent(gold, text):
    assert correct("number", gold, text)


@pytest.mark.parametrize("gold, text", [
    ("72", "71"), ("72", "72 and then 73"), ("1000", "100"), ("-5", "5"), ("42", "x42"), ("7", "v1.7"),
])
def test_number_wrong(gold, text):
    assert not correct("number", gold, text)


@pytest.mark.parametrize("gold, text", [
    ("3", "the answer is 3 or 4"), ("4", "The answer is either 3 or 4."), ("42", r"\boxed{42} or maybe \boxed{41}"),
    ("42", "#### 42\n#### 43"), ("3", "Answer: 3\nAnswer: 4"), ("4", "3 or 4"),
])
def test_number_hedged(gold, text):
    result = number.check(gold, text)
    assert not result.correct and result.reason.startswith("hedged")


def test_number_empty_and_adversarial():
    assert number.check("3", "").reason == "no answer" and number.check("3", None).reason == "no answer"
    assert number.check("3", "three").reason == "no number"
    huge = "1" + "0" * 5000  # 10**5000: Python refuses int() of a string that long; the checker must not
    assert number.check(huge, huge).correct and not number.check(huge, huge[:-1] + "1").correct
    assert number.check("3", "9" * 100_000).reason == "no number"  # past MAX_DIGITS: noise
    assert not number.check("3", "3/0").correct
    assert not number.check("3", "x" * 200_000).correct
    with pytest.raises(ValueError, match="holds no number"):
        number.check("no gold here", "3")


# -- math ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("gold, text", [
    (r"\frac{1}{2}", "0.5"), (r"\frac{1}{2}", r"\boxed{1/2}"), (r"\frac12", r"The answer is $\frac{1}{2}$."),
    ("x+1", r"\boxed{1+x}"), ("(1,2]", r"$(1, 2]$"), ("(1, 2)", r"\boxed{(1,2)}"),
    (r"\{1,2\}", r"\boxed{\{2,1\}}"), (r"2\sqrt{2}", r"\boxed{\sqrt{8}}"), ("1000", "1,000"),
    (r"Then the sum is \boxed{\frac{3}{4}}.", r"\boxed{0.75}"), (r"1 \text{ or } 2", r"\boxed{1 \text{ or } 2}"),
    (r"[0,\infty)", r"\boxed{[0, \infty)}"), ("5", "so x = 5"), (r"\frac{1}{2}", "We get 1/2 in the end."),
])
def test_math_right_and_equivalent(gold, text):
    assert math_checker.verify_math(gold, text).correct


@pytest.mark.parametrize("gold, text", [
    (r"\frac{1}{2}", r"\boxed{\frac{1}{3}}"), ("(2, 3)", r"\boxed{(3, 2)}"), ("(1,2]", "[1, 2]"), ("x+1", "x-1"),
])
def test_math_wrong(gold, text):
    assert not math_checker.verify_math(gold, text).correct


@pytest.mark.parametrize("text", [r"\boxed{3} or \boxed{4}", "the answer is 3 or 4", r"\boxed{4}, no wait, \boxed{3}"])
def test_math_hedged(text):
    # math-verify alone reads "\boxed{3} or \boxed{4}" as the set {3, 4}; every stated answer must be right
    result = math_checker.verify_math("3", text)
    assert not result.correct and result.reason.startswith("hedged")


def test_math_empty_and_adversarial():
    assert math_checker.verify_math("3", "").reason == "no answer"
    assert math_checker.verify_math("3", r"\boxed{" + "x" * 5000 + "}").reason == "answer too long"
    huge = "1" + "0" * 900  # a huge number within the length limit is compared, not refused
    assert math_checker.verify_math(huge, r"\boxed{10^{900}}").correct


def test_math_deadline_holds_on_a_pathological_answer_and_the_checker_recovers():
    # 10^{10^{7}} makes sympy build a ten-million-digit integer (seconds, inside C: no signal can stop it), and
    # 400 nested braces take math-verify's LaTeX parser seconds too
    for text in (r"\boxed{10^{10^{7}}}", "{" * 400 + "1" + "}" * 400):
        start = time.monotonic()
        result = math_checker.check("1", text, timeout=0.5)
        assert not result.correct and result.reason.startswith("timeout")
        assert time.monotonic() - start < 10  # within the deadline, up to process overhead on a loaded machine
    assert math_checker.check(r"\frac{1}{2}", r"\boxed{0.5}", timeout=30).correct  # a fresh child answers


def test_math_checks_from_worker_threads():
    # math-verify's own signal-based timeouts raise ValueError outside the main thread; the child process does not
    results = {}

    def run(i: int, text: str) -> None:
        results[i] = math_checker.check(r"\frac{1}{2}", text, timeout=30)

    def signal_timeout_in_a_thread() -> None:  # why the checker does not use math-verify's own timeouts
        from math_verify import parse

        try:
            parse("$1$", parsing_timeout=1)
            results["signal"] = "ran"
        except ValueError as e:
            results["signal"] = str(e)

    threads = [threading.Thread(target=run, args=(i, t)) for i, t in enumerate([r"\boxed{0.5}", "2/4", r"\boxed{3}"])]
    threads.append(threading.Thread(target=signal_timeout_in_a_thread))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i].correct for i in range(3)] == [True, True, False]
    assert "threaded environment" in results["signal"]


# -- exact and choice ---------------------------------------------------------------------------------------------

def test_exact():
    assert exact.check("New  York", "new york.").correct
    assert exact.check("Paris", "The answer is Paris").correct and exact.check("#### Paris", r"\boxed{paris}").correct
    assert not exact.check("Paris", "Rome").correct and not exact.check("Paris", "").correct
    assert exact.check("Paris", r"\boxed{Paris} \boxed{Rome}").reason.startswith("hedged")
    assert exact.check_strict("Paris", " Paris ").correct and not exact.check_strict("Paris", "paris").correct
    assert not exact.check("Paris", "Paris" * 1000).correct


@pytest.mark.parametrize("gold, text", [
    ("B", "(B)"), ("(B)", "answer: b"), ("B) 42", "B) because 42 is even"), ("B", "b."), ("C", r"\boxed{C}"),
    ("B", "The answer is B because A is wrong."), ("B", "The answer is option b"), ("E", "#### E"),
])
def test_choice_right(gold, text):
    assert choice.check(gold, text).correct


@pytest.mark.parametrize("gold, text, reason", [
    ("B", "The answer is (B) or (C).", "hedged"), ("B", "Answer: B\nAnswer: C", "hedged"), ("B", "a cat", "no choice"),
    ("B", "I think it is B", "no choice"), ("B", "(C)", "wrong"), ("B", "", "no answer"), ("B", "F", "no choice"),
])
def test_choice_wrong_hedged_empty(gold, text, reason):
    result = choice.check(gold, text)
    assert not result.correct and result.reason.startswith(reason)


def test_choice_gold_must_be_a_letter():
    with pytest.raises(ValueError, match="not a letter A-E"):
        choice.check("the second one", "B")


# -- special tokens inside an answer -----------------------------------------------------------------------------

@pytest.mark.parametrize("completion, gold", [(f"1{PAD}4", "14"), (f"1{PAD}14", "114")])
def test_a_special_token_inside_an_answer_is_not_deleted(completion, gold):
    task = Arithmetic(op="add", max_level=3)
    problem = task.parse_question("7+7" if gold == "14" else "100+14")
    assert problem.answer == gold
    assert split_completion(completion, "system1").answer_text == completion
    assert not task.score(problem, completion, "system1").correct
    assert not number.check(gold, split_completion(completion, "system1").answer_text).correct
    # trailing end-of-turn and padding markers are still dropped
    assert task.score(problem, f"{gold}{IM_END}{PAD}{PAD}", "system1").correct
    assert split_completion(f"r\n</think>\n\n{gold}{IM_END}\n{PAD}", "system2").answer_text == gold


def test_a_long_run_of_spaces_after_an_answer_statement_is_read_not_stuck():
    # A degenerate completion (a model repeating white-space tokens): the statement pattern once took time
    # quadratic in the run (about 10 s for 20,000 spaces; days for this one). It must simply be read.
    text = "The answer is 42" + " " * 300_000 + "and more"
    done: list = []
    worker = threading.Thread(target=lambda: done.append(number.check("42", text)), daemon=True)
    worker.start()
    worker.join(timeout=60)  # a deadline far above the milliseconds it takes, far below the quadratic time
    assert done and done[0].correct and done[0].extracted == "42"
    assert base.answer_statements("The answer is 42   .") == ["42"]  # the statement is still stripped
