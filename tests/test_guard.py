"""A verifier that crashes loses nothing: the load-time check tries garbage completions; a crash mid-run counts the
completion as malformed, is reported once per site with the task, method, file:line and completion, and the run
goes on (eval, a GRPO step, solve); strict mode stops instead."""

import json
import random
from pathlib import Path

import pytest

from slowthink.cli import main
from slowthink.models import build_model, save
from slowthink.rl.grpo import GRPOConfig, train
from slowthink.tasks import Problem, Score, TaskError, get_task
from slowthink.tasks.guard import MALFORMED, GuardedTask, VerifierError, guard, shorten, unguarded
from slowthink.train.loop import TrainingHalted
from slowthink.train.runlog import read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")

PLUGIN = Path(__file__).resolve().parent / "plugins" / "crashy.py"
MID_RUN = f"{PLUGIN}:CrashesMidRun"


def line_of(text: str) -> str:
    """``crashy.py:N``: where ``text`` stands in the plugin file."""
    lines = PLUGIN.read_text().splitlines()
    return f"crashy.py:{next(i for i, line in enumerate(lines, 1) if text in line)}"


SCORE_SITE = line_of("int(text) == int(problem.answer)")
LABELS_SITE = line_of('lines[1] == f"={problem.answer}"')


@pytest.fixture(scope="module")
def random_model(tmp_path_factory, tok) -> str:
    """A freshly initialised tiny model: it writes arbitrary characters, which the level-2 verifier cannot read."""
    folder = tmp_path_factory.mktemp("random") / "model"
    save(build_model("tiny", tok, seed=0), tok, folder)
    return str(folder)


def level2(task) -> Problem:
    return task.sample(random.Random(0), 2)


# -- the wrapper -------------------------------------------------------------------------------------------------

def test_a_crash_counts_malformed_and_is_reported_once_per_site():
    reports = []
    task = guard(get_task(MID_RUN), report=reports.append)
    p = level2(task)
    assert task.score(p, "7*94", "system1") == MALFORMED
    assert task.score(p, "abc", "system1") == MALFORMED
    assert task.score(p, p.answer, "system1").correct  # what it can read is scored as before
    score, crash = task.check(p, "7*94", "system1")
    assert score == MALFORMED and crash.method == "score" and crash.site.endswith(SCORE_SITE)
    assert "ValueError: invalid literal for int()" in crash.error and crash.completion == "7*94"
    assert len(reports) == 1  # one site: reported once, then counted
    assert "'crashes_mid_run'" in reports[0] and SCORE_SITE in reports[0] and "'7*94'" in reports[0]
    assert "counts as malformed" in reports[0]
    assert task.crashes == {f"crashes_mid_run score() at {crash.site}": 3}
    # step labels: a crash marks every step wrong (no step verified), reported at its own site
    assert task.step_labels(p, "one line") == [False]
    assert task.step_labels(p, f"{p.question}\n={p.answer}") == [True, True]
    assert len(reports) == 2 and LABELS_SITE in reports[1] and "step_labels()" in reports[1]


def test_strict_raises_with_the_site_and_the_completion():
    task = guard(get_task(MID_RUN), strict=True)
    with pytest.raises(VerifierError, match=rf"score\(\) raised ValueError.*{SCORE_SITE}.*'7\*94'"):
        task.score(level2(task), "7*94", "system1")


def test_guard_delegates_and_is_idempotent():
    inner = get_task("arithmetic", op="add")
    task = guard(inner)
    assert guard(task) is task and unguarded(task) is inner and unguarded(inner) is inner
    assert guard(task, strict=True).strict and guard(task, strict=True).task is inner
    assert (task.name, task.levels, task.heldout_set(3, (2,))) == (inner.name, inner.levels, inner.heldout_set(3, (2,)))
    assert isinstance(task, GuardedTask) and task.step_labels.__self__ is task

    class NoLabels:
        name = "no_labels"

        def score(self, problem, completion, mode="system2"):
            return Score(0.0, None, False)

    assert not hasattr(guard(NoLabels()), "step_labels")  # a task without step labels has none behind the guard


def test_shorten_keeps_both_ends():
    text = "a" * 300 + "b" * 300
    short = shorten(text)
    assert short.startswith("'aaa") and short.endswith("bbb'") and "(400 more characters)" in short
    assert shorten("7*94") == "'7*94'"


# -- the load-time check ------------------------------------------------------------------------------------------

def test_load_time_check_scores_garbage_completions():
    with pytest.raises(TaskError) as e:
        get_task(f"{PLUGIN}:CrashesOnGarbage")
    msg = str(e.value)
    assert "<random characters>" in msg and "ValueError" in msg and "crashy.py" in msg
    assert "well_formed=False" in msg  # what to do about it
    assert get_task(MID_RUN).name == "crashes_mid_run"  # its lowest level reads anything: it loads


# -- through the commands -----------------------------------------------------------------------------------------

def test_eval_goes_on_past_a_crashing_verifier(random_model, tmp_path, capsys):
    out = tmp_path / "eval.json"
    args = ["eval", "--model", random_model, "--task", MID_RUN, "--levels", "1,2", "--per-level", "4",
            "--modes", "system1", "--max-new-tokens", "6", "--json-out", str(out)]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert err.count("verifier crash") == 1 and SCORE_SITE in err and "crashes_mid_run" in err
    res = json.loads(out.read_text())
    crashes = res["verifier_crashes"]
    assert len(crashes) == 1 and 1 <= next(iter(crashes.values())) <= 4  # level-2 completions only
    s1 = res["results"]["system1"]
    assert s1["by_level"]["2"]["n"] == 4 and s1["by_level"]["2"]["pass@1"] == 0.0  # counted, as malformed
    assert s1["overall"]["n"] == res["problems"] == sum(b["n"] for b in s1["by_level"].values())
    assert len(s1["overall"]["pass@1_ci95"]) == 2

    assert main([*args, "--strict-verifier"]) == 2
    err = capsys.readouterr().err
    assert "slowthink eval: error:" in err and SCORE_SITE in err and "strict_verifier" in err


def test_solve_goes_on_past_a_crashing_verifier(random_model, capsys):
    args = ["solve", "--model", random_model, "--task", MID_RUN, "--level", "2", "--mode", "system1",
            "--max-new-tokens", "6", "--strategy", "majority", "--n", "4"]  # samples: some are not numbers
    assert main(args) == 0
    captured = capsys.readouterr()
    assert captured.err.count("verifier crash") == 1 and SCORE_SITE in captured.err
    assert "wrong, expected" in captured.out


def test_grpo_step_goes_on_past_a_crashing_verifier(random_model, tmp_path, capsys):
    common = dict(init=random_model, task=MID_RUN, levels=[1, 2], mode="system1", steps=1, prompts_per_step=4,
                  group_size=2, max_new_tokens=6, eval_every=0, eval_per_level=2, checkpoint_every=1000, threads=1,
                  progress=False, seed=0)
    run = train(GRPOConfig(out=str(tmp_path / "run"), **common))
    assert (run / "model" / "config.json").exists()
    steps = [r for r in read_metrics(run) if "reward_mean" in r]
    assert [r["step"] for r in steps] == [1]
    err = capsys.readouterr().err
    assert err.count("verifier crash") == 1 and SCORE_SITE in err

    with pytest.raises(TrainingHalted, match=rf"{SCORE_SITE}.*Last good checkpoint: none"):
        train(GRPOConfig(out=str(tmp_path / "strict"), strict_verifier=True, **common))


def test_server_verification_goes_through_the_guard(caplog):
    from slowthink.serve.traces import TaskResolver, verification_from_metadata

    resolver = TaskResolver({"crashy": get_task(MID_RUN)})
    user = [{"role": "user", "content": "48+1"}]
    with pytest.raises(ValueError, match=r"cannot score this problem \(ValueError: invalid literal"):
        verification_from_metadata({"task": "crashy", "answer": "forty-nine", "level": "2"}, user, "system1", resolver)
    v = verification_from_metadata({"task": "crashy", "answer": "49", "level": "2"}, user, "system1", resolver)
    assert isinstance(v.task, GuardedTask) and resolver.get("crashy") is v.task  # one guard per task: one report
    with caplog.at_level("WARNING", logger="slowthink.serve.traces"):
        for text in ("7*94", "abc"):
            score, crash = v.task.check(v.problem, text, "system1")
            assert score == MALFORMED and crash.site.endswith(SCORE_SITE)
    # once, the first model completion (the probe of the request's metadata is an error of the request, not logged)
    assert [("'7*94'" in r.getMessage(), SCORE_SITE in r.getMessage()) for r in caplog.records] == [(True, True)]
