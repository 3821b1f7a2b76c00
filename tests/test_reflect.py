"""Reflect-and-revise: revision traces have the documented shape, the reflect strategy counts tokens exactly
and keeps to its budget, `train revise` teaches a tiny model the cue-then-revision format, configs are
validated, and the CLI runs the strategy."""

from __future__ import annotations

import json
import random

import pytest

from slowthink.config import ConfigError
from slowthink.engine import Completion, Engine
from slowthink.models import load_model
from slowthink.rl import revise
from slowthink.rl.revise import ReviseConfig, reflect_metrics, revision_completion, revision_traces
from slowthink.rl.rewards import RewardFn
from slowthink.rl.rollout import Group
from slowthink.train.runlog import read_metrics
from slowthink.search import STRATEGIES, Policy
from slowthink.search.reflect import REVISE_CUE, thinking_of, with_cue
from slowthink.tasks import Arithmetic, Problem
from slowthink.chat import THINK_CLOSE
from search_helpers import SpyEngine

TASK = Arithmetic(op="add", max_level=2)

pytestmark = pytest.mark.usefixtures("one_thread")


def _problem(a=3, b=4) -> Problem:
    return Problem(key=f"{a}+{b}", level=1, question=f"{a}+{b}", answer=str(a + b), data={"a": a, "b": b, "op": "add"})


# -- the format ------------------------------------------------------------------------------------------------

def test_cue_layout_and_validation():
    assert with_cue("12\n34\n") == "12\n34\nWait\n" == with_cue("12\n34")
    assert with_cue("") == "Wait\n" and REVISE_CUE == "Wait"
    assert with_cue("12\n", end_line=False) == "12\nWait" == with_cue("12", end_line=False)  # budget forcing's
    assert thinking_of("a\nb\n</think>\n\n7") == "a\nb\n" and thinking_of("a\nb") == "a\nb"
    for bad in ("", "Wait\nnow", "</think>"):
        with pytest.raises(ValueError):
            with_cue("x\n", bad)


def test_revision_traces_are_draft_then_cue_then_solution(s2_model):
    p = _problem(3, 4)
    solution = "\n".join(TASK.solution_lines(p))
    wrong_closed = "1 2\n9\n</think>\n\n9"  # closed its think block: thinking kept, close and answer dropped
    unclosed = "0 0\n5"  # ended its turn without closing: all of it is the thinking
    right = TASK.reference(p, "system2").completion()
    truncated = "4 4 4 4"
    comps = [Completion([1] * len(t), [0.0] * len(t), t, fr) for t, fr in
             [(wrong_closed, "stop"), (unclosed, "stop"), (truncated, "length"), (right, "stop"), (right, "stop")]]
    rf = RewardFn()
    group = Group(p, "system2", [0], comps, [rf(TASK, p, c.text, 1, "system2") for c in comps])
    cfg = ReviseConfig(init=s2_model, max_per_problem=5)
    traces, stats = revision_traces(TASK, [group], cfg, iteration=0)
    assert [t.draft for t in traces] == [wrong_closed, unclosed, right]  # truncated skipped, duplicate dropped
    assert stats["drafts"] == 5 and stats["drafts_truncated"] == 1 and stats["revision_traces"] == 3
    assert stats["revised_wrong_drafts"] == 2
    tail = f"Wait\n{solution}\n{THINK_CLOSE}\n\n7"
    assert traces[0].completion == "1 2\n9\n" + tail
    assert traces[1].completion == "0 0\n5\n" + tail
    assert traces[2].completion == thinking_of(right) + tail
    for t in traces:  # draft, then the cue, then the solution, then one close and the right answer
        c = t.completion
        cue_at = c.rindex("Wait\n")
        assert c.startswith(thinking_of(t.draft)) and cue_at >= len(thinking_of(t.draft).rstrip("\n"))
        assert c[cue_at + len("Wait\n"):].startswith(solution + "\n" + THINK_CLOSE)
        assert c.count(THINK_CLOSE) == 1 and TASK.score(p, c, "system2").correct
    assert [t.draft_correct for t in traces] == [False, False, True]
    assert traces[0].first_wrong_step == 0 and traces[2].first_wrong_step is None
    assert revision_completion(TASK, p, wrong_closed) == traces[0].completion
    only_wrong, _ = revision_traces(TASK, [group], ReviseConfig(init=s2_model, max_per_problem=5,
                                                                include_correct=False), 0)
    assert [t.draft for t in only_wrong] == [wrong_closed, unclosed]


# -- the strategy ------------------------------------------------------------------------------------------------

def _policy(s2_model, **kw):
    model, tok = load_model(s2_model)
    return Policy(SpyEngine(model, tok), TASK, **{"mode": "system2", "max_tokens": 40, "seed": 0, **kw})


def test_reflect_counts_every_generated_token_and_cues_each_round(s2_model):
    reflect = STRATEGIES["reflect"]
    rng = random.Random(3)
    for p in [TASK.sample_split(rng, 1, "heldout") for _ in range(2)]:
        for rounds in (1, 2):
            policy = _policy(s2_model)
            sol = reflect(p, policy, None, None, rounds=rounds)
            reqs = policy.engine.requests
            assert len(reqs) == rounds + 1 and sol.extra["samples"] == rounds + 1
            assert sol.policy_tokens == policy.engine.generated() > 0
            assert len(sol.extra["answers"]) == rounds + 1 and len(sol.extra["inserted_text"]) == rounds
            assert all(t in ("Wait\n", "\nWait\n") for t in sol.extra["inserted_text"])  # not counted as tokens
            draft = reqs[0].completions[0].text
            assert sol.extra["draft_answer"] == sol.extra["answers"][0]
            assert sol.completion.startswith(with_cue(thinking_of(draft)))  # draft thinking, then the cue
            # Each revision continues exactly the previous phase's thinking + the cue (and nothing else).
            prefix = ""
            for prev, nxt in zip(reqs, reqs[1:]):
                prefix = with_cue(prefix + thinking_of(prev.completions[0].text))
                assert nxt.prompt_ids == reqs[0].prompt_ids + policy.encode(prefix)
            assert sol.extra["changed"] == (sol.extra["draft_answer"] != sol.extra["final_answer"])
            assert sol.well_formed == TASK.score(p, sol.completion, "system2").well_formed


def test_reflect_respects_budgets_and_rejects_bad_options(s2_model):
    reflect = STRATEGIES["reflect"]
    p = _problem(5, 2)
    for budget in (1, 4, 9, 17):
        for opts in ({"rounds": 1}, {"rounds": 2}, {"rounds": 1, "n": 3}):
            policy = _policy(s2_model)
            sol = reflect(p, policy, None, budget, **opts)
            assert sol.policy_tokens == policy.engine.generated() <= budget, (budget, opts, sol.policy_tokens)
    assert reflect(p, _policy(s2_model), None, None, rounds=2).policy_tokens > 17, "the budgets above really bound"
    for bad in ({"rounds": 0}, {"n": 0}, {"cue": "a\nb"}):
        with pytest.raises(ValueError):
            reflect(p, _policy(s2_model), None, None, **bad)
    with pytest.raises(ValueError, match="system2"):
        reflect(p, _policy(s2_model, mode="system1"), None, None)


def test_budget_forcing_waits_with_the_revise_cue(s2_model):
    sol = STRATEGIES["budget_forcing"](_problem(2, 2), _policy(s2_model, temperature=0.0), None, None,
                                       min_thinking=10_000, max_waits=1)
    assert sol.extra["waits"] == 1 and sol.extra["forced_text"][0] in ("Wait", "\nWait")
    thinking = sol.completion.split("Wait")[0]
    assert thinking == "" or thinking.endswith("\n")  # the cue starts a line, as in the revise traces


# -- training ------------------------------------------------------------------------------------------------------

def test_bad_config_values_raise_clear_errors(s2_model):
    for kw, field in [({"init": ""}, "init"), ({"revise_fraction": 0.0}, "revise_fraction"),
                      ({"revise_fraction": 1.5}, "revise_fraction"), ({"cue": "two\nlines"}, "cue"),
                      ({"temperature": 0.0}, "temperature"), ({"drafts_per_problem": 0}, "drafts_per_problem"),
                      ({"lr": -1.0}, "lr"), ({"micro_batches": 99, "batch_size": 4}, "micro_batches")]:
        with pytest.raises(ConfigError, match=field):
            ReviseConfig(**{"init": s2_model, **kw})
    with pytest.raises(ConfigError, match="init"):
        ReviseConfig(init="/nonexistent/model")


def test_train_revise_teaches_the_cue_then_revision_format(s2_model, tmp_path):
    # Measured (seed 0): after a forced "Wait" the untrained tiny model writes a well-formed revision for 44% of
    # the 48 problems (it often opens a second close or rambles); after 60 steps on its own drafts + cue +
    # solution, 100%. (Its digits stay wrong: 40 SFT steps do not teach addition, so accuracy is not tested.)
    rng = random.Random(11)
    held = [TASK.sample_split(rng, 1, "heldout") for _ in range(48)]

    def metrics(folder):
        model, tok = load_model(folder)
        return reflect_metrics(Engine(model, tok), TASK, held, max_tokens=40)

    before = metrics(s2_model)
    cfg = ReviseConfig(out=str(tmp_path / "rev"), init=s2_model, levels=[1], problems_per_iteration=64,
                       drafts_per_problem=2, max_new_tokens=40, steps_per_iteration=60, batch_size=16, lr=3e-3,
                       warmup_steps=2, system2_fraction=1.0, eval_per_level=8, threads=1, progress=False)
    run = revise.train(cfg, task=TASK)
    after = metrics(run / "model")
    assert after["eval/revised_well_formed"] >= before["eval/revised_well_formed"] + 0.2, (before, after)
    rows = read_metrics(run)
    assert [r["step"] for r in rows if "revision_traces" in r] == [1]
    assert any(r.get("revision_traces", 0) > 0 for r in rows)
    logged = [r["eval/revised_well_formed"] for r in rows if "eval/revised_well_formed" in r]  # the run's own curve
    assert logged[-1] >= logged[0] + 0.2, logged
    traces = [json.loads(line) for line in (run / "traces.jsonl").read_text().splitlines()]
    assert traces and all("\nWait\n" in t["completion"] or t["completion"].startswith("Wait\n") for t in traces)
    assert (run / "ckpt" / "state.pt").is_file() or any(run.glob("ckpt*/state.pt"))
    # Resume: a finished run's rerun trains nothing more and leaves the model as it was.
    assert revise.train(cfg, task=TASK) == run
    assert len([r for r in read_metrics(run) if "revision_traces" in r]) == 1


def test_cli_solve_and_eval_with_reflect(s2_model, tmp_path, capsys):
    from slowthink.cli import main, trainers

    assert "revise" in trainers()
    out = tmp_path / "sol.json"
    assert main(["solve", "--model", s2_model, "--task", "arithmetic", "--task-args", "op=add", "--question", "3+4",
                 "--strategy", "reflect", "--strategy-args", "rounds=2", "--budget", "120", "--max-new-tokens", "30",
                 "--json-out", str(out)]) == 0
    sol = json.loads(out.read_text())
    assert 0 < sol["policy_tokens"] <= 120 and len(sol["extra"]["answers"]) == 3
    ev = tmp_path / "ev.json"
    assert main(["eval", "--model", s2_model, "--task", "arithmetic", "--task-args", "op=add,max_level=2",
                 "--levels", "1", "--per-level", "3", "--strategy", "reflect", "--max-new-tokens", "30",
                 "--json-out", str(ev)]) == 0
    res = json.loads(ev.read_text())["results"]
    assert set(res) == {"system2"} and res["system2"]["overall"]["n"] == 3
