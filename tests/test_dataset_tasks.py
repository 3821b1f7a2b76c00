"""Dataset tasks (slowthink/tasks/dataset.py, gsm8k.py, math_task.py): any data set of questions and answers as a
task: loading (JSONL, CSV, Parquet, save_to_disk), field mapping and its errors, splits and the held-out set,
references and scoring, GSM8K and MATH; the real CLI on GSM8K and a short SFT run on worked solutions."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from slowthink.chat import Mode
from slowthink.tasks import TaskError, get_task, parse_task_args
from slowthink.tasks.base import heldout_bucket
from slowthink.tasks.dataset import level_numbers
from slowthink.tasks.gsm8k import strip_calculations

ROOT = Path(__file__).resolve().parents[1]
GSM8K = ROOT.parent / "shared" / "data" / "gsm8k"
needs_gsm8k = pytest.mark.skipif(not (GSM8K / "test.jsonl").is_file(),
                                 reason=f"GSM8K is not in the shared data folder ({GSM8K})")

ROWS = [  # small worked problems; levels as MATH writes them, and a row per split
    {"problem": "Tom has 3 apples and buys 4 more. How many?", "answer": "7", "split": "train",
     "solution": "He has 3 apples.\nHe buys 4: 3+4 = 7.", "level": "Level 1"},
    {"problem": "A pen costs $2. What do 5 pens cost?", "answer": "10", "split": "train",
     "solution": "5 pens at $2 each.\n5*2 = 10.", "level": "Level 1"},
    {"problem": "What is 12 halved, then doubled, then tripled?", "answer": "36", "split": "test",
     "solution": "12/2 = 6.\n6*2 = 12.\n12*3 = 36.", "level": "Level 2"},
    {"problem": "Sam runs 5 km a day for 6 days. How far?", "answer": "30", "split": "train",
     "solution": "5*6 = 30.", "level": "Level 2"},
]
MAPPING = {"question": "problem", "answer": "answer", "solution": "solution"}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def data(tmp_path) -> Path:
    return write_jsonl(tmp_path / "data.jsonl", ROWS)


# -- loading and field mapping ------------------------------------------------------------------------------------

def test_jsonl_rows_become_problems_in_file_order(data):
    task = get_task("jsonl", path=str(data), level="level", split="split", **MAPPING)
    problems = task.problems()
    assert [p.question for p in problems] == [r["problem"] for r in ROWS]
    assert [p.answer for p in problems] == ["7", "10", "36", "30"]
    assert task.levels == (1, 2) and [p.level for p in problems] == [1, 1, 2, 2]
    assert [p.data["split"] for p in problems] == ["train", "train", "heldout", "train"]


def test_task_args_from_the_command_line_form(data):
    args = parse_task_args(f"path={data},question=problem,answer=answer,checker=number,checker_timeout=2")
    assert args == {"path": str(data), "question": "problem", "answer": "answer", "checker": "number",
                    "checker_timeout": 2}
    assert len(get_task("jsonl", **args).problems()) == 4


def test_without_a_split_field_rows_are_held_out_by_the_hash_of_their_question(data):
    task = get_task("jsonl", path=str(data), **MAPPING)
    assert task.levels == (1,)
    for p in task.problems():
        assert p.data["split"] == ("heldout" if heldout_bucket(p.question) == 0 else "train")


@pytest.mark.parametrize("mapping, words", [
    ({"question": "question"}, r"field 'question' \(question=\) is not in .*its fields are problem, answer"),
    ({"question": "problem", "answer": "gold"}, r"field 'gold' \(answer=\)"),
    ({"question": "problem", "solution": "worked"}, r"field 'worked' \(solution=\)"),
    ({"question": "problem", "checker": "numeric"}, "checker must be one of"),
])
def test_a_mapped_field_that_is_not_in_the_data_is_named(data, mapping, words):
    with pytest.raises(TaskError, match=words):
        get_task("jsonl", path=str(data), **mapping)


@pytest.mark.parametrize("bad, field, row", [
    ({"answer": ""}, "answer", 3), ({"answer": None}, "answer", 3), ({"problem": "  "}, "problem", 3),
    ({"solution": None}, "solution", 3), ({"level": ""}, "level", 3),
])
def test_a_missing_or_empty_value_names_the_field_and_the_first_bad_row(tmp_path, bad, field, row):
    rows = [dict(r) for r in ROWS]
    rows[row - 1].update(bad)
    rows[row].update(bad)  # a later bad row too: the first one is named
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(TaskError, match=rf"field '{field}' \(\w+=\) is missing or empty in row {row} of"):
        get_task("jsonl", path=str(path), level="level", **MAPPING)


def test_other_bad_inputs_say_what_to_fix(tmp_path, data):
    with pytest.raises(TaskError, match="path= is required"):
        get_task("jsonl")
    with pytest.raises(TaskError, match="does not exist"):
        get_task("jsonl", path=str(tmp_path / "nope.jsonl"))
    (tmp_path / "data.txt").write_text("x")
    with pytest.raises(TaskError, match="is not a data set slowthink reads"):
        get_task("jsonl", path=str(tmp_path / "data.txt"))
    path = write_jsonl(tmp_path / "words.jsonl", [dict(ROWS[0]), {**ROWS[1], "answer": "ten"}])
    with pytest.raises(TaskError, match=r"field 'answer' \(answer=\) in row 2 .*holds no number"):
        get_task("jsonl", path=str(path), **MAPPING)
    path = write_jsonl(tmp_path / "split.jsonl", [{**r, "split": "later"} for r in ROWS])
    with pytest.raises(TaskError, match=r"field 'split' \(split=\) is 'later' in row 1 .*use one of train"):
        get_task("jsonl", path=str(path), split="split", **MAPPING)


def test_csv_parquet_and_save_to_disk(tmp_path):
    import datasets

    table = datasets.Dataset.from_list(ROWS)
    table.to_csv(str(tmp_path / "data.csv"), index=False)
    table.to_parquet(str(tmp_path / "data.parquet"))
    table.save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"train": table.select([0, 1, 3]), "test": table.select([2])}).save_to_disk(
        str(tmp_path / "saved_dict"))
    for path in ("data.csv", "data.parquet", "saved"):
        task = get_task("jsonl", path=str(tmp_path / path), level="level", split="split", **MAPPING)
        assert [p.answer for p in task.problems()] == ["7", "10", "36", "30"], path
        assert [p.data["split"] for p in task.problems()] == ["train", "train", "heldout", "train"], path
    # a saved DatasetDict: its test split is held out, no split field needed
    task = get_task("jsonl", path=str(tmp_path / "saved_dict"), **MAPPING)
    assert {p.answer: p.data["split"] for p in task.problems()} == {"7": "train", "10": "train", "30": "train",
                                                                     "36": "heldout"}


def test_level_values():
    assert level_numbers(["Level 3", "Level 1", "Level ?"]) == {"Level 3": 3, "Level 1": 1, "Level ?": 4}
    assert level_numbers(["easy", "hard", "medium", "easy"]) == {"easy": 1, "hard": 2, "medium": 3}


# -- splits and the held-out set ----------------------------------------------------------------------------------

def test_held_out_set_is_deterministic_distinct_and_finite(tmp_path):
    # 60 rows over two levels; one question appears twice; level 2 has a single held-out row
    rows = [{"q": f"What is {i} plus {i}?", "a": str(2 * i), "lv": 1, "sp": "test" if i % 3 == 0 else "train"}
            for i in range(50)]
    rows += [{"q": "What is 0 plus 0?", "a": "0", "lv": 1, "sp": "test"}]
    rows += [{"q": f"What is {i} times 3?", "a": str(3 * i), "lv": 2, "sp": "test" if i == 0 else "train"}
             for i in range(9)]
    path = write_jsonl(tmp_path / "many.jsonl", rows)
    task = get_task("jsonl", path=str(path), question="q", answer="a", level="lv", split="sp")
    held = task.heldout_set(100)
    assert len(held) == 17 + 1 and len({p.key for p in held}) == len(held)  # every held-out row once, then it ends
    assert all(p.data["split"] == "heldout" for p in held)
    assert task.heldout_set(100) == held  # deterministic
    assert task.heldout_set(5, levels=(1,)) == held[:5]  # a smaller set is a prefix of a larger one
    assert [p.data["row"] for p in held[:17]] != sorted(p.data["row"] for p in held[:17])  # shuffled, not file order
    assert task.heldout_set(5, seed=1) != task.heldout_set(5)
    rng = random.Random(0)
    train = [task.sample_split(rng, 2, "train") for _ in range(50)]
    assert all(p.data["split"] == "train" and p.level == 2 for p in train)
    assert {task.sample(rng, 2).level for _ in range(20)} == {2}


def test_a_level_without_rows_of_a_split_says_so(tmp_path):
    path = write_jsonl(tmp_path / "train_only.jsonl", [{**r, "split": "train"} for r in ROWS])
    task = get_task("jsonl", path=str(path), split="split", **MAPPING)
    assert task.heldout_set(10) == []
    with pytest.raises(ValueError, match="has no heldout rows at level 1"):
        task.sample_split(random.Random(0), 1, "heldout")


# -- references and scoring ---------------------------------------------------------------------------------------

def test_references_and_scoring_in_both_modes(data):
    task = get_task("jsonl", path=str(data), **MAPPING)
    p = task.problems()[2]
    s2 = task.reference(p, Mode.SYSTEM2)
    assert s2.reasoning == ROWS[2]["solution"] and s2.answer == "36"
    assert task.score(p, s2.completion(), Mode.SYSTEM2).correct
    assert task.score(p, "36", Mode.SYSTEM1).correct
    assert task.score(p, "The answer is $36.", Mode.SYSTEM1).correct
    # System-2: only the part after </think> is the answer
    assert not task.score(p, "so 36\n</think>\n\n35", Mode.SYSTEM2).correct
    assert not task.score(p, "36", Mode.SYSTEM2).well_formed  # no think block closed
    assert task.score(p, "x\n</think>\n\n36 or 37", Mode.SYSTEM2).correct is False
    assert task.step_labels(p, s2.reasoning) is None  # one right solution of many: steps are not labelled by it
    no_solution = get_task("jsonl", path=str(data), question="problem")
    assert no_solution.reference(no_solution.problems()[0], Mode.SYSTEM2) is None


def test_math_checker_task_scores_equivalent_answers(tmp_path):
    rows = [{"q": "Half of one?", "a": r"\frac{1}{2}"}, {"q": "Solve x^2 = 4.", "a": r"\{-2, 2\}"}]
    task = get_task("jsonl", path=str(write_jsonl(tmp_path / "m.jsonl", rows)), question="q", answer="a",
                    checker="math")
    half, roots = task.problems()
    assert task.score(half, r"so \boxed{0.5}", Mode.SYSTEM1).correct
    assert task.score(roots, r"\boxed{\{2, -2\}}", Mode.SYSTEM1).correct
    assert not task.score(half, r"\boxed{0.5} or \boxed{1}", Mode.SYSTEM1).correct


def test_typed_questions(data):
    task = get_task("jsonl", path=str(data), **MAPPING)
    own = task.parse_question(ROWS[0]["problem"])
    assert own.answer == "7" and task.score(own, "7", Mode.SYSTEM1).correct
    typed = task.parse_question("How many legs do 3 cats have?")
    assert typed.answer is None and not task.score(typed, "12", Mode.SYSTEM1).correct
    pasted = task.parse_question(f"  {ROWS[0]['problem']}\n")  # pasted with white space around it: still scored
    assert pasted.answer == "7"


# -- GSM8K and MATH -----------------------------------------------------------------------------------------------

def test_gsm8k_rows(tmp_path):
    row = {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in "
                       "May. How many clips did Natalia sell altogether in April and May?",
           "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips "
                     "altogether in April and May.\n#### 72"}
    task = get_task("gsm8k", path=str(write_jsonl(tmp_path / "g.jsonl", [row])))
    p = task.problems()[0]
    assert p.answer == "72"
    ref = task.reference(p, Mode.SYSTEM2)
    assert ref.reasoning == ("Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in "
                             "April and May.")
    assert task.score(p, ref.completion(), Mode.SYSTEM2).correct
    assert strip_calculations("a <<1+1=2>>2") == "a 2"
    assert task.parse_question("What is 2 + 2?").answer is None
    bad = write_jsonl(tmp_path / "bad.jsonl", [row, {**row, "answer": "72"}])
    with pytest.raises(TaskError, match="has no '#### N' final answer in row 2"):
        get_task("gsm8k", path=str(bad))


@needs_gsm8k
def test_gsm8k_default_path_reads_the_shared_copy_with_test_held_out():
    task = get_task("gsm8k")
    splits = [p.data["split"] for p in task.problems()]
    assert splits.count("heldout") == 1319 and splits.count("train") == 7473


def test_math_rows(tmp_path):
    rows = [{"problem": "What is $\\frac{1}{2}+\\frac{1}{4}$?", "level": "Level 2", "type": "Algebra",
             "solution": "We add: $\\frac{2}{4}+\\frac{1}{4} = \\boxed{\\frac{3}{4}}$."},
            {"problem": "Solve $x^2=9$ for $x>0$.", "level": "Level ?", "type": "Algebra",
             "solution": "Then $x = \\boxed{3}$."}]
    task = get_task("math", path=str(write_jsonl(tmp_path / "math.jsonl", rows)))
    first, second = task.problems()
    assert (first.answer, first.level, second.answer, second.level) == ("\\frac{3}{4}", 2, "3", 3)
    assert task.score(first, task.reference(first, Mode.SYSTEM2).completion(), Mode.SYSTEM2).correct
    assert task.score(first, "0.75", Mode.SYSTEM1).correct and not task.score(first, "0.7", Mode.SYSTEM1).correct
    unboxed = write_jsonl(tmp_path / "unboxed.jsonl", [rows[0], {**rows[1], "solution": "x is 3"}])
    with pytest.raises(TaskError, match=r"no \\boxed\{\} answer in row 2"):
        get_task("math", path=str(unboxed))


# -- end to end through the command line --------------------------------------------------------------------------

@needs_gsm8k
def test_gsm8k_eval_through_the_cli(tmp_path, tok, monkeypatch, capsys):
    from slowthink.cli import main
    from slowthink.models import build_model, save

    save(build_model("tiny", tok, seed=0), tok, tmp_path / "m")
    out = tmp_path / "eval.json"
    monkeypatch.chdir(ROOT)  # the path as a user in the project folder types it
    assert main(["eval", "--model", str(tmp_path / "m"), "--task", "gsm8k",
                 "--task-args", "path=../shared/data/gsm8k/test.jsonl", "--per-level", "3", "--max-new-tokens", "8",
                 "--json-out", str(out)]) == 0, capsys.readouterr().err[-3000:]
    assert "gsm8k held-out set" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["task"] == "gsm8k" and result["problems"] == 3 and result["verifier_crashes"] == {}
    for mode in ("system1", "system2"):
        assert result["results"][mode]["overall"]["n"] == 3  # an untrained model scores ~0, but every row is scored


def test_sft_on_worked_solutions_of_a_jsonl_data_set(tmp_path, tok, capsys):
    from slowthink.cli import main
    from slowthink.train.data import sample_examples

    rows = ROWS * 4  # a tiny data set; System-2 references are its solutions
    path = write_jsonl(tmp_path / "tiny.jsonl", [{**r, "problem": f"{r['problem']} ({i})"} for i, r in enumerate(rows)])
    task = get_task("jsonl", path=str(path), split="split", **MAPPING)
    examples = sample_examples(task, tok, seed=0, step=0, batch_size=8, levels=[1], system2_fraction=1.0)
    texts = [tok.decode(e.rendered.ids) for e in examples]
    assert all(e.problem.data["split"] == "train" for e in examples)
    assert all(e.problem.data["solution"] in text for e, text in zip(examples, texts))
    run = tmp_path / "run"
    assert main(["train", "sft", "--model", "tiny", "--task", "jsonl", "--task-args",
                 json.dumps({"path": str(path), "split": "split", **MAPPING}), "--steps", "2", "--batch-size", "4",
                 "--system2-fraction", "1", "--eval-per-level", "2", "--threads", "1", "--progress", "false",
                 "--out", str(run)]) == 0, capsys.readouterr().err[-3000:]
    record = json.loads((run / "model" / "task.json").read_text())
    assert record["task"] == "jsonl" and record["task_args"]["solution"] == "solution"
    assert record["modes"] == ["system2"]


# -- files the reader cannot read: the message names the file and the line --------------------------------------

@pytest.mark.parametrize("lines, words", [
    (["{}", "{}", "{}", '{"problem": "x", "answer": "1'], r"line 4 of .*bad\.jsonl' is not valid JSON"),
    (['{"problem": "x", "answer": "1"}', "", "[1, 2]"], r"line 3 of .*bad\.jsonl' is a JSON list, not an object"),
    ([], r"bad\.jsonl' is empty"),
    (["", "  "], r"bad\.jsonl' (is empty|holds no rows)"),
])
def test_a_bad_jsonl_line_is_named_by_its_line_number(tmp_path, lines, words):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(line + "\n" for line in lines))
    with pytest.raises(TaskError, match=words):
        get_task("jsonl", path=str(bad), question="problem")


def test_a_bad_line_deep_in_a_large_file_is_named_by_its_line_number(tmp_path):
    lines = [json.dumps(ROWS[i % len(ROWS)]) for i in range(5000)]
    lines[4321] = lines[4321][:-3]  # the reader's own message counts rows within a block, not the file
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(TaskError, match=r"line 4322 of"):
        get_task("jsonl", path=str(bad), **MAPPING)


def test_a_bad_file_in_a_folder_of_splits_is_named(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", ROWS)
    (tmp_path / "test.jsonl").write_text(json.dumps(ROWS[0]) + "\n" + "{oops\n")
    with pytest.raises(TaskError, match=r"line 2 of .*test\.jsonl' is not valid JSON"):
        get_task("jsonl", path=str(tmp_path), **MAPPING)


def test_an_unreadable_parquet_or_csv_is_a_clear_error(tmp_path):
    (tmp_path / "data.parquet").write_text("not parquet")
    with pytest.raises(TaskError, match=r"data\.parquet' cannot be read as parquet"):
        get_task("jsonl", path=str(tmp_path / "data.parquet"), **MAPPING)
    (tmp_path / "data.csv").write_text("")
    with pytest.raises(TaskError, match=r"data\.csv' is empty"):
        get_task("jsonl", path=str(tmp_path / "data.csv"), **MAPPING)


def test_a_missing_relative_path_says_where_it_looked_and_how_to_fix_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TaskError, match=r"does not exist \(looked in .*path=ABSOLUTE"):
        get_task("jsonl", path="data.jsonl", **MAPPING)


@pytest.mark.parametrize("timeout", ["abc", 0, -1, float("inf"), True])
def test_a_bad_checker_timeout_is_named(data, timeout):
    with pytest.raises(TaskError, match=r"checker_timeout must be a positive number of seconds"):
        get_task("jsonl", path=str(data), checker="math", checker_timeout=timeout, **MAPPING)


def test_the_same_question_with_two_answers_is_named_with_both_rows(tmp_path):
    rows = ROWS + [{**ROWS[1], "answer": "12"}]
    with pytest.raises(TaskError, match=r"same question has different answers, '10' in row 2 .* '12' in row 5"):
        get_task("jsonl", path=str(write_jsonl(tmp_path / "d.jsonl", rows)), **MAPPING)
    same = ROWS + [{**ROWS[1], "answer": "10.0"}]  # the same answer, written otherwise: fine
    assert len(get_task("jsonl", path=str(write_jsonl(tmp_path / "s.jsonl", same)), **MAPPING).problems()) == 5


@pytest.mark.parametrize("suffix, sep", [(".csv", ","), (".tsv", "\t")])
def test_csv_cells_are_read_as_the_text_they_hold(tmp_path, suffix, sep):
    # A column of numbers would otherwise come back as numbers: "007" as 7.0, a 20-digit gold rounded.
    rows = [("What is the code?", "007"), ("What is the price?", "1.50"), ("How many?", "12345678901234567891")]
    path = tmp_path / f"data{suffix}"
    path.write_text("q" + sep + "a\n" + "".join(f"{q}{sep}{a}\n" for q, a in rows))
    task = get_task("jsonl", path=str(path), question="q", answer="a", checker="exact_strict")
    assert [p.answer for p in task.problems()] == [a for _, a in rows]
    by_value = get_task("jsonl", path=str(path), question="q", answer="a")  # checker number: the exact value
    big = by_value.problems()[2]
    assert by_value.score(big, "12345678901234567891", Mode.SYSTEM1).correct
    assert not by_value.score(big, "12345678901234567890", Mode.SYSTEM1).correct


def test_a_data_set_with_one_split_only_says_so_at_load(tmp_path, caplog):
    rows = [{**r, "split": "train"} for r in ROWS]
    with caplog.at_level("WARNING", logger="slowthink.tasks.dataset"):
        get_task("jsonl", path=str(write_jsonl(tmp_path / "d.jsonl", rows)), split="split", **MAPPING)
    assert "has no heldout rows, only train (field 'split' (split=) puts every row in it)" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="slowthink.tasks.dataset"):
        get_task("jsonl", path=str(write_jsonl(tmp_path / "both.jsonl", ROWS)), split="split", **MAPPING)
    assert "has no" not in caplog.text


def test_sft_without_a_solution_field_says_how_to_map_one_before_writing_a_run(tmp_path, capsys):
    from slowthink.cli import main

    mapping = {k: v for k, v in MAPPING.items() if k != "solution"}
    run = tmp_path / "run"
    assert main(["train", "sft", "--model", "tiny", "--task", "jsonl", "--task-args",
                 json.dumps({"path": str(write_jsonl(tmp_path / "d.jsonl", ROWS)), **mapping}), "--steps", "1",
                 "--system2-fraction", "0.5", "--progress", "false", "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert "mode 'system2'" in err and "--task-args solution=FIELD" in err and "--system2-fraction 0" in err
    assert not run.exists()  # nothing written for a run that cannot start


def test_a_served_model_verifies_against_its_own_data_set(tmp_path):
    """``metadata.task`` naming the served model's data-set task is verified with the data set's recorded path and
    checker; a server without that data says which data it can verify instead of failing inside the task."""
    from slowthink.serve.app import own_task
    from slowthink.serve.traces import TaskResolver, verification_from_metadata

    rows = [{"q": f"What is {i} plus 9?", "a": str(i + 9)} for i in range(40)]
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "task.json").write_text(json.dumps({
        "task": "jsonl", "task_args": {"path": str(write_jsonl(tmp_path / "d.jsonl", rows)), "question": "q",
                                       "answer": "a"}, "levels": [1], "modes": ["system1"]}))
    messages = [{"role": "user", "content": "What is 49 plus 9?"}]
    verification = verification_from_metadata({"task": "jsonl", "answer": "58"}, messages, "system1",
                                              TaskResolver(own_task(str(tmp_path / "model"))))
    assert verification.task.score(verification.problem, "58", Mode.SYSTEM1).correct
    assert not verification.task.score(verification.problem, "57", Mode.SYSTEM1).correct
    with pytest.raises(ValueError, match="only for the data the served model was trained on"):
        verification_from_metadata({"task": "jsonl", "answer": "58"}, messages, "system1", TaskResolver({}))
