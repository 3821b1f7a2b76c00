"""A user's own task end to end: defaults that follow the task and the model's task.json, typed questions for any
task, and the command line's small promises (errors from the right subcommand, no silent no-ops)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from slowthink.config import ConfigError
from slowthink.tasks import get_task
from slowthink.tasks.base import problem_from_question
from slowthink.tasks.record import TaskRecord, read_record, write_record

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}

# A task whose levels do not start at 1 (written to a file, as a user would).
LEVELS_3_TO_6 = '''
from slowthink.tasks import BaseTask, Problem, Score
from slowthink.chat import split_completion


class Repeat(BaseTask):
    name = "repeat"
    levels = (3, 4, 5, 6)

    def sample(self, rng, level):
        self.check_level(level)
        word = "".join(rng.choice("abcdef") for _ in range(level))
        return Problem(key=word, level=level, question=word, answer=word)

    def solution_lines(self, problem):
        return list(problem.answer)

    def score(self, problem, completion, mode="system2"):
        parts = split_completion(completion, mode)
        ok = parts.well_formed and parts.answer_text == problem.answer
        return Score(reward=float(ok), answer=parts.answer_text, well_formed=parts.well_formed, correct=ok)
'''


def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slowthink.cli", *args], env=ENV, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def task_file(tmp_path) -> str:
    path = tmp_path / "repeat.py"
    path.write_text(LEVELS_3_TO_6)
    return f"{path}:Repeat"


@pytest.fixture
def model_dir(tmp_path, tok) -> Path:
    """A tiny untrained model folder (no task.json yet)."""
    from slowthink.models import build_model, save

    save(build_model("tiny", tok, seed=0), tok, tmp_path / "m")
    return tmp_path / "m"


# -- defaults that follow the task and the model ------------------------------------------------------------------

def test_levels_default_to_the_tasks_own_and_a_wrong_one_names_the_field(task_file):
    from slowthink.train.loop import resolve_task
    from slowthink.train.sft import SFTConfig

    cfg, task = resolve_task(SFTConfig(task=task_file))
    assert cfg.levels == [3, 4, 5, 6] and task.name == "repeat"
    with pytest.raises(ConfigError, match="'levels'.*has levels \\[3, 4, 5, 6\\], not \\[1\\]"):
        resolve_task(SFTConfig(task=task_file, levels=[1, 3]))


def test_trainers_from_a_model_take_its_task_args_levels_and_mode(model_dir, task_file):
    from slowthink.rl.grpo import GRPOConfig
    from slowthink.train.loop import resolve_task

    write_record(model_dir, TaskRecord("countdown", {"max_level": 4}, (2, 3), ("system1",)))
    cfg, task = resolve_task(GRPOConfig(init=str(model_dir)))
    assert (cfg.task, cfg.task_args, cfg.levels, cfg.mode) == ("countdown", {"max_level": 4}, [2, 3], "system1")
    assert task.levels == (2, 3, 4)
    # anything given wins; another task drops the model's arguments, levels and mode
    cfg, _ = resolve_task(GRPOConfig(init=str(model_dir), task_args={"max_number": 50}, levels=[4], mode="system2"))
    assert (cfg.task_args, cfg.levels, cfg.mode) == ({"max_level": 4, "max_number": 50}, [4], "system2")
    cfg, _ = resolve_task(GRPOConfig(init=str(model_dir), task=task_file))
    assert (cfg.task, cfg.task_args, cfg.levels, cfg.mode) == (task_file, {}, [3, 4, 5, 6], "system2")


def test_sft_writes_the_task_into_the_model_folder(tmp_path, tok, task_file):
    from slowthink.models import build_model
    from slowthink.train.sft import SFTConfig, train

    cfg = SFTConfig(out=str(tmp_path / "run"), task=task_file, steps=2, batch_size=4, eval_per_level=0,
                    checkpoint_every=10, snapshot_every=2, system2_fraction=1.0, progress=False, threads=1)
    run = train(cfg, model=build_model("tiny", tok, seed=0), tok=tok)
    expected = TaskRecord(task_file, {}, (3, 4, 5, 6), ("system2",))
    assert read_record(run / "model") == read_record(run / "snapshots" / "step_2") == expected
    assert json.loads((run / "config.json").read_text())["levels"] == [3, 4, 5, 6]


def test_a_model_without_task_json_falls_back_to_its_run_config(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "config.json").write_text(json.dumps({"trainer": "grpo", "task": "doubling", "task_args": {},
                                                      "levels": [2], "mode": "system2"}))
    assert read_record(tmp_path / "model") == TaskRecord("doubling", {}, (2,), ("system2",))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))  # a model's config, not a run's
    assert read_record(tmp_path / "model") is None


def test_eval_without_task_evaluates_the_task_the_model_records(model_dir, tmp_path):
    write_record(model_dir, TaskRecord("countdown", {}, (2,), ("system1",)))
    out = tmp_path / "r.json"
    r = cli("eval", "--model", str(model_dir), "--per-level", "2", "--max-new-tokens", "4", "--json-out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(out.read_text())
    assert (result["task"], result["levels"], set(result["results"])) == ("countdown", [2], {"system1"})


def test_sft_defaults_are_the_benchmarked_best_and_the_quickstart_keeps_its_own():
    from slowthink.quickstart import QuickstartConfig
    from slowthink.train.sft import SFTConfig

    assert (SFTConfig().optimizer, SFTConfig().system2_fraction) == ("muon", 0.75)
    default = QuickstartConfig()
    assert (default.task_args, default.levels, default.level_weights) == ({"op": "mul", "cot": "cells"}, [1, 2, 3],
                                                                          [1, 3, 1])
    own = QuickstartConfig(task="examples/my_task.py:SortLetters")
    assert (own.task_args, own.levels, own.level_weights) == ({}, [], [])


# -- solve --question for any task --------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, question, answer", [
    ("arithmetic", "47*86", "4042"), ("arithmetic", "12 + 5", "17"),
    ("countdown", "Numbers: 3 7 25 50\nTarget: 178", None), ("doubling", "2^4*347", "00005552"),
    ("examples/my_task.py:SortLetters", "Sort: dbca", "abcd")])
def test_tasks_read_typed_questions_and_score_their_references(spec, question, answer):
    task = get_task(spec)
    problem = problem_from_question(task, question)
    assert answer is None or problem.answer == answer
    for mode in ("system1", "system2"):
        assert task.score(problem, task.reference(problem, mode).completion(), mode).correct


def test_a_typed_question_a_task_cannot_read_gets_a_clear_message(plugins_dir):
    with pytest.raises(ValueError, match="not an arithmetic question like 47\\*86"):
        problem_from_question(get_task("arithmetic"), "what is 4 times 5")
    with pytest.raises(ValueError, match="'add_one' cannot read a typed question: it has no parse_question"):
        problem_from_question(get_task(f"{plugins_dir}/good.py:GoodTask"), "41+1")


def test_solve_a_typed_question_of_a_users_task(model_dir):
    write_record(model_dir, TaskRecord(str(ROOT / "examples/my_task.py:SortLetters"), {}, (2, 3), ("system1",)))
    r = cli("solve", "--model", str(model_dir), "--question", "Sort: cab", "--max-new-tokens", "4")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "question: Sort: cab" in r.stdout and "expected abc" in r.stdout and "reasoning:" not in r.stdout


def test_solve_prints_not_scored_for_a_question_without_an_answer(model_dir, tmp_path):
    task = tmp_path / "open.py"
    task.write_text(LEVELS_3_TO_6 + '''
    def parse_question(self, question):
        return Problem(key=question, level=3, question=question, answer=None)
''')
    r = cli("solve", "--model", str(model_dir), "--task", f"{task}:Repeat", "--question", "abc", "--mode", "system1",
            "--max-new-tokens", "4")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "not scored" in r.stdout


# -- the small things ---------------------------------------------------------------------------------------------

def test_a_task_that_fails_validation_leaves_no_run_folder(tmp_path, plugins_dir):
    for command in (["train", "sft"], ["quickstart"]):
        out = tmp_path / command[-1]
        r = cli(*command, "--task", f"{plugins_dir}/broken.py", "--out", str(out), "--steps", "1")
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
        assert not out.exists()


def test_progress_false_silences_hugging_faces_bars_too(tmp_path):
    r = cli("train", "sft", "--model", "tiny", "--steps", "1", "--batch-size", "2", "--eval-per-level", "0",
            "--levels", "1", "--progress", "false", "--threads", "1", "--out", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "it/s]" not in r.stderr and "Writing model shards" not in r.stderr, r.stderr[-2000:]


@pytest.mark.parametrize("option", ["--k", "--per-level", "--max-new-tokens", "--n", "--budget"])
def test_eval_counts_of_zero_are_refused(option, capsys):
    from slowthink.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["eval", "--model", "m", option, "0"])
    assert f"argument {option}: must be >= 1, got 0" in capsys.readouterr().err


def test_option_prefixes_are_refused_and_a_typo_gets_its_subcommands_usage(capsys):
    from slowthink.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "sft", "--step", "5"])
    err = capsys.readouterr().err
    assert err.startswith("usage: slowthink train sft") and "--step: did you mean --steps?" in err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["eval", "--model", "m", "--per-levl", "3"])
    err = capsys.readouterr().err
    assert err.startswith("usage: slowthink eval") and "did you mean --per-level?" in err


def test_eval_and_solve_help_show_defaults():
    from slowthink.cli import build_parser

    parser = build_parser()
    subcommands = next(a for a in parser._actions if a.dest == "command").choices
    assert "samples per problem for pass@k and maj@k (default: 1)" in " ".join(
        subcommands["eval"].format_help().split())
    assert "(default: greedy)" in subcommands["solve"].format_help()
    assert "longest single completion (default: 256)" in " ".join(subcommands["solve"].format_help().split())


def test_a_misspelt_optional_method_is_named(tmp_path):
    path = tmp_path / "typo.py"
    path.write_text(LEVELS_3_TO_6.replace("def solution_lines", "def solution_line"))
    with pytest.warns(UserWarning, match="solution_line\\(\\), which looks like a misspelling of solution_lines"):
        get_task(f"{path}:Repeat")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_task("examples/my_task.py:SortLetters")  # no false alarm on a correct task


def test_star_from_traces_refuses_the_database_and_names_the_export(tmp_path, sft_model):
    from slowthink.rl.star import STaRConfig

    db = tmp_path / "traces.db"
    sqlite3.connect(db).execute("create table t (x)").connection.commit()
    with pytest.raises(ConfigError, match=f"trace database itself.*slowthink traces export --db {db}"):
        STaRConfig(init=sft_model, from_traces=str(db))


def test_worked_lines_with_trailing_spaces_are_their_own_correct_steps(tmp_path):
    import random

    path = tmp_path / "spaces.py"
    path.write_text(LEVELS_3_TO_6.replace("return list(problem.answer)", "return [c + ' ' for c in problem.answer]"))
    task = get_task(f"{path}:Repeat")  # validation labels every reference step correct
    problem = task.sample(random.Random(0), 3)
    assert task.step_labels(problem, task.reference(problem, "system2").reasoning) == [True, True, True]


def test_a_level_the_task_lacks_names_the_option(capsys):
    from slowthink.cli import main

    assert main(["sample", "--task", "countdown", "--level", "1"]) == 2
    assert "--level 1: task 'countdown' has levels [2, 3, 4, 5, 6]" in capsys.readouterr().err


def test_parse_question_must_read_the_tasks_own_questions_back(tmp_path):
    from slowthink.tasks import TaskError

    path = tmp_path / "misread.py"
    path.write_text(LEVELS_3_TO_6 + '''
    def parse_question(self, question):
        return Problem(key=question, level=3, question=question, answer=question[::-1])
''')
    with pytest.raises(TaskError, match="parse_question\\(\\) does not read the task's own questions back"):
        get_task(f"{path}:Repeat")


def test_task_record_keeps_relative_paths_usable_from_any_folder(tmp_path, monkeypatch):
    """A model trained with ``path=data.jsonl`` (relative) must be followable from another folder: the record holds
    absolute paths for arguments and task files that exist, and leaves everything else as typed."""
    from slowthink.tasks.record import portable

    (tmp_path / "data.jsonl").write_text('{"q": "1+1", "a": "2"}\n')
    (tmp_path / "my_task.py").write_text("")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "q").mkdir()  # a folder named like a field: the field stays as typed
    task, args = portable("my_task.py:MyTask", {"path": "data.jsonl", "question": "q", "max_level": 3})
    assert task == f"{tmp_path.resolve()}/my_task.py:MyTask"
    assert args == {"path": str((tmp_path / "data.jsonl").resolve()), "question": "q", "max_level": 3}
    assert portable("arithmetic", {"op": "mul"}) == ("arithmetic", {"op": "mul"})
