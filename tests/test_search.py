"""Test-time search strategies: exact token accounting, budgets, majority voting, step-score aggregation,
beam search following its verifier, budget forcing, ground-truth oracles, and the CLI."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from slowthink.engine import Completion
from slowthink.models import load_model
from slowthink.search import (
    NEEDS_VERIFIER,
    STRATEGIES,
    Policy,
    TaskOutcomeOracle,
    TaskStepOracle,
    agg_last,
    agg_min,
    agg_prod,
    aggregate,
    get_strategy,
)
from slowthink.search.base import Meter
from slowthink.search.weighted_majority import weighted_vote
from slowthink.tasks import Arithmetic, Problem, Score
from slowthink.chat import THINK_CLOSE, split_completion
from search_helpers import SpyEngine

ROOT = Path(__file__).resolve().parents[1]
TASK = Arithmetic(op="add", max_level=2)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def loaded(s2_model):
    return load_model(s2_model)


def make_policy(loaded, **kw) -> Policy:
    model, tok = loaded
    kw = {"mode": "system2", "max_tokens": 40, "seed": 0, **kw}
    return Policy(SpyEngine(model, tok), TASK, **kw)


def problems(k=3):
    rng = random.Random(5)
    return [TASK.sample_split(rng, 1, "heldout") for _ in range(k)]


def verifier_for(name):
    return TaskStepOracle(TASK) if name in NEEDS_VERIFIER else None


# -- step-score aggregation and the oracles --------------------------------------------------------------

def test_step_score_aggregations_on_hand_examples():
    s = [0.9, 0.5, 0.8]
    assert agg_min(s) == 0.5 and agg_last(s) == 0.8 and agg_prod(s) == pytest.approx(0.36)
    assert aggregate([1.0, 0.0, 1.0], "min") == 0.0 and aggregate([1.0, 0.0, 1.0], "last") == 1.0
    assert aggregate([0.5, 0.5], "prod") == pytest.approx(0.25) and aggregate([0.7], "prod") == pytest.approx(0.7)
    with pytest.raises(ValueError):
        agg_min([])
    with pytest.raises(ValueError):
        aggregate(s, "mean")


def test_task_step_oracle_is_ground_truth_step_labels():
    p = Problem(key="47*86", level=2, question="47*86", answer=str(47 * 86), data={"a": 47, "b": 86, "op": "mul"})
    task = Arithmetic(op="mul")
    lines = task.solution_lines(p)
    oracle = TaskStepOracle(task)
    assert oracle.score_steps(p, lines) == [1.0] * len(lines)
    wrong = lines[:1] + ["6:000000000000 000000000000"] + lines[2:]
    assert oracle.score_steps(p, wrong) == [1.0] + [0.0] * (len(lines) - 1)  # nothing right after a wrong step
    assert oracle.score_steps(p, lines[:2]) == [1.0, 1.0]  # partial solutions are scored step by step
    outcome = TaskOutcomeOracle(task)
    assert outcome.score(p, f"x\n{THINK_CLOSE}\n\n{p.answer}") == 1.0 and outcome.score(p, "x</think>\n1") == 0.0


# -- every strategy: well-formed Solution, exact tokens, budgets ----------------------------------------------

def small_options(name):
    return {"greedy": {}, "budget_forcing": {}, "mcts": {"simulations": 4, "expand": 2}}.get(name, {"n": 4})


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_strategy_returns_solution_with_exact_token_count(loaded, name):
    solve = get_strategy(name, **small_options(name))
    for p in problems(2):
        policy = make_policy(loaded)
        sol = solve(p, policy, verifier_for(name), None)
        assert sol.policy_tokens == policy.engine.generated() > 0
        assert sol.extra["samples"] == policy.engine.completions()
        parsed = TASK.score(p, sol.completion, "system2")
        assert sol.well_formed == parsed.well_formed
        assert sol.answer == (parsed.answer if parsed.well_formed else None)
        assert sol.reasoning == split_completion(sol.completion, "system2").reasoning
        assert sol.verifier_tokens == 0  # oracles read no model
    if name in ("majority", "best_of_n", "weighted_majority"):
        assert policy.engine.completions() == 4
    if name == "greedy":
        assert policy.engine.completions() == 1


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_budget_is_never_exceeded(loaded, name):
    solve = get_strategy(name, **small_options(name))
    p = problems(1)[0]
    for budget in (1, 3, 9, 25, 60):
        policy = make_policy(loaded)
        sol = solve(p, policy, verifier_for(name), budget)
        assert sol.policy_tokens == policy.engine.generated() <= budget, (budget, sol.policy_tokens)
    big = make_policy(loaded)
    unbounded = solve(p, big, verifier_for(name), None).policy_tokens
    assert unbounded > 9, "the small budgets above really did bind"


# -- majority and weighted majority -------------------------------------------------------------------------

class LenientArithmetic(Arithmetic):
    """Extracts a number even from malformed completions (like a sloppy parser would), so the test can tell
    whether malformed samples vote."""

    def score(self, problem, completion, mode="system2"):
        s = super().score(problem, completion, mode)
        if s.well_formed:
            return s
        digits = "".join(ch for ch in completion if ch.isdigit())
        return Score(reward=0.0, answer=digits or None, well_formed=False)


class ScriptedPolicy(Policy):
    """Returns fixed completion texts instead of sampling (tokens: one per character)."""

    def __init__(self, texts, task):
        super().__init__(engine=None, task=task, mode="system2")
        self.texts = texts

    def sample_many(self, prompts, n, meter, **kw):
        out = [[Completion(list(range(len(t) + 1)), [0.0] * (len(t) + 1), t, "stop") for t in self.texts[:n]]]
        meter.charge(out[0])
        return out

    def prompt_ids(self, problem):
        return [0]


def test_majority_ignores_malformed_answers():
    p = Problem(key="2+3", level=1, question="2+3", answer="5", data={"a": 2, "b": 3, "op": "add"})
    texts = ["9", "9 9", "x9", "a\n</think>\n\n5", "b\n</think>\n\n6", "c\n</think>\n\n5", "9</think>9</think>"]
    sol = STRATEGIES["majority"](p, ScriptedPolicy(texts, LenientArithmetic(op="add")), None, None, n=len(texts))
    assert sol.answer == "5" and sol.completion == texts[3] and sol.extra["votes"] == {"5": 2, "6": 1}
    assert sol.policy_tokens == sum(len(t) + 1 for t in texts)
    none = STRATEGIES["majority"](p, ScriptedPolicy(texts[:3], LenientArithmetic(op="add")), None, None, n=3)
    assert none.answer is None and not none.well_formed and none.extra["votes"] == {}


def test_weighted_majority_and_best_of_n_follow_verifier_scores():
    assert weighted_vote(["5", "6", "6", None], [0.9, 0.3, 0.4, 5.0]) == "5"
    assert weighted_vote(["5", "6", "6"], [0.5, 0.3, 0.4]) == "6"
    assert weighted_vote([None], [1.0]) is None
    assert weighted_vote(["5", "6", "6"], [0.0, 0.0, 0.0]) == "6"  # equal weight: more votes win
    assert weighted_vote(["5", "6", "6", "5"], [1.0, 0.5, 0.5, 0.0]) == "5"  # then the first seen
    p = Problem(key="2+3", level=1, question="2+3", answer="5", data={"a": 2, "b": 3, "op": "add"})

    class Likes:  # outcome verifier that likes completions ending in 6
        def score(self, problem, completion):
            return 0.9 if completion.endswith("6") else 0.2

    texts = ["a\n</think>\n\n5", "b\n</think>\n\n6", "c\n</think>\n\n5", "oops 6"]
    wm = STRATEGIES["weighted_majority"](p, ScriptedPolicy(texts, Arithmetic(op="add")), Likes(), None, n=4)
    assert wm.answer == "6" and wm.extra["weights"] == pytest.approx({"5": 0.4, "6": 0.9})
    bon = STRATEGIES["best_of_n"](p, ScriptedPolicy(texts, Arithmetic(op="add")), Likes(), None, n=4)
    assert bon.answer == "6" and bon.extra["scores"][3] is None  # malformed: not scored
    maj = STRATEGIES["majority"](p, ScriptedPolicy(texts, Arithmetic(op="add")), None, None, n=4)
    assert maj.answer == "5"


# -- beam search ---------------------------------------------------------------------------------------------

class DigitLover:
    """Toy step verifier: a step's score is its share of digit characters (or of non-digits, inverted)."""

    def __init__(self, invert=False):
        self.invert = invert

    def score_steps(self, problem, steps):
        share = [sum(c.isdigit() for c in s) / len(s) for s in steps]
        return [1 - x if self.invert else x for x in share]


def test_beam_search_picks_the_path_the_verifier_prefers(loaded):
    p = problems(1)[0]
    firsts = {}
    for invert in (False, True):
        policy = make_policy(loaded, temperature=1.5)
        sol = STRATEGIES["beam"](p, policy, DigitLover(invert), None, n=6, beam_width=1, agg="last")
        # The first round's candidates are the first engine request's samples (same seed both times).
        first_req = policy.engine.requests[0]
        cands = [c.text for c in first_req.completions]
        score = (lambda s, inv=invert: DigitLover(inv).score_steps(p, [s])[0] if s.strip() else 0.0)
        best = max(score(c) for c in cands)
        chosen = sol.completion.split("\n")[0]
        assert chosen in cands and score(chosen) == best, (invert, chosen, cands)
        assert [r["kept"] for r in sol.extra["rounds"][0]].count(True) == 1
        assert sol.policy_tokens == policy.engine.generated()
        firsts[invert] = chosen
    assert firsts[False] != firsts[True]  # the verifier, not the policy, decided


class ScriptedSteps(Policy):
    """A stand-in policy for beam search: candidate next lines per prefix, the wrong ones more likely. Prefixes
    travel as text (encode returns the text itself), answers end the turn."""

    EOS = -1

    def __init__(self, task, tree):
        super().__init__(engine=None, task=task, mode="system2")
        self.tree, self.generated = tree, 0

    def prompt_ids(self, problem):
        return []

    def encode(self, text):
        return [text] if text else []

    def ended_turn(self, c):
        return bool(c.token_ids) and c.token_ids[-1] == self.EOS

    def sample_many(self, prompts, n, meter, *, stop=(), **kw):
        out = []
        for ids in prompts:
            prefix = ids[0] if ids else ""
            if stop:  # a step: the next line (stop string excluded from the text, as the engine does)
                lines = self.tree[prefix]
                cs = [Completion([0] * (len(t) + 1), [-0.1 if i else -5.0] + [0.0] * len(t), t, "stop")
                      for i, t in enumerate(lines)]
            else:  # the answer, to the end of the turn
                ans = self.tree[prefix][0]
                cs = [Completion([0] * len(ans) + [self.EOS], [0.0] * (len(ans) + 1), ans, "stop")]
            out.append(cs)
        self.generated += sum(len(c.token_ids) for cs in out for c in cs)
        meter.charge([c for cs in out for c in cs])
        return out


def test_beam_with_ground_truth_oracle_finds_the_correct_derivation():
    task = Arithmetic(op="mul")
    p = Problem(key="47*86", level=2, question="47*86", answer=str(47 * 86), data={"a": 47, "b": 86, "op": "mul"})
    good = task.solution_lines(p)  # header + 2 lines
    bad = ["7,4*6,8", "6:000000000000 000000000000", "8:999999999999 999999999999"]
    # The first candidate at every node is the correct line, and the least likely one.
    tree, prefix = {}, ""
    for g, b in zip(good, bad):
        tree[prefix] = [g, b]
        for wrong in (prefix + b + "\n",):
            tree[wrong] = [b, g]
        prefix += g + "\n"
    tree[prefix] = ["</think>", bad[0]]
    tree[prefix + "</think>\n"] = [f"\n{p.answer}"]
    for k in list(tree):
        tree.setdefault(k, ["</think>"])
    tree = _Closure(tree)
    oracle = TaskStepOracle(task)
    policy = ScriptedSteps(task, tree)
    sol = STRATEGIES["beam"](p, policy, oracle, None, n=2, beam_width=1)
    assert sol.reasoning.split("\n") == good and sol.answer == p.answer and sol.extra["step_score"] == 1.0
    assert sol.policy_tokens == policy.generated and len(sol.extra["rounds"]) == 4  # 3 steps + the close

    class AntiOracle:
        def score_steps(self, problem, steps):
            return [1.0 - x for x in oracle.score_steps(problem, steps)]

    worst = STRATEGIES["beam"](p, ScriptedSteps(task, tree), AntiOracle(), None, n=2, beam_width=1)
    assert worst.completion.split("\n")[1] == bad[1] and worst.answer != p.answer  # line 0 (the header) is shared
    with pytest.raises(ValueError, match="verifier"):
        STRATEGIES["beam"](p, ScriptedSteps(task, tree), None, None)
    with pytest.raises(ValueError, match="system2"):
        STRATEGIES["beam"](p, Policy(engine=None, task=task, mode="system1"), oracle, None)


class _Closure(dict):
    """Any prefix not scripted gets two closing lines (so wrong paths end too)."""

    def __missing__(self, key):
        return ["</think>", "</think>"] if not key.endswith("</think>\n") else ["\n0"]


# -- MCTS ----------------------------------------------------------------------------------------------------

class PrefersFirstStep:
    """Toy step verifier: every step of a reasoning that starts with ``first`` scores 1, any other 0."""

    def __init__(self, first):
        self.first = first

    def score_steps(self, problem, steps):
        return [1.0 if steps[0] == self.first else 0.0] * len(steps)


def test_mcts_picks_the_path_the_verifier_prefers(loaded):
    p = problems(1)[0]
    probe = make_policy(loaded)
    STRATEGIES["mcts"](p, probe, PrefersFirstStep(""), None, simulations=1, expand=4)
    # The root's expansion is the first engine request, the same in every run below (same seed).
    firsts = [c.text for c in probe.engine.requests[0].completions]
    assert len(set(firsts)) >= 3, firsts
    for first in firsts:
        policy = make_policy(loaded)
        sol = STRATEGIES["mcts"](p, policy, PrefersFirstStep(first), None, simulations=12, expand=4)
        assert policy.engine.requests[0].completions[0].text == firsts[0]
        assert sol.completion.split("\n")[0] == first and sol.well_formed, (first, sol.completion)
        assert sol.extra["value"] == 1.0 and sol.extra["simulations"] == 12
        assert sol.extra["finished_leaves"] >= 1 and sol.extra["tree_size"] > 1 + 4
        assert sol.policy_tokens == policy.engine.generated()


def test_mcts_with_ground_truth_oracle_finds_the_correct_derivation():
    task = Arithmetic(op="mul")
    p = Problem(key="47*86", level=2, question="47*86", answer=str(47 * 86), data={"a": 47, "b": 86, "op": "mul"})
    good = task.solution_lines(p)
    bad = ["7,4*6,8", "6:000000000000 000000000000", "8:999999999999 999999999999"]
    tree, prefix = {}, ""
    for g, b in zip(good, bad):  # the wrong line first, so taking the first child does not pass
        tree[prefix] = [b, g]
        tree[prefix + b + "\n"] = [b, g]
        prefix += g + "\n"
    tree[prefix] = [bad[1], "</think>"]
    tree[prefix + "</think>\n"] = [f"\n{p.answer}"]
    tree = _Closure(tree)
    oracle = TaskStepOracle(task)
    policy = ScriptedSteps(task, tree)
    sol = STRATEGIES["mcts"](p, policy, oracle, None, simulations=30, expand=2)
    assert sol.reasoning.split("\n") == good and sol.answer == p.answer and sol.extra["value"] == 1.0
    assert sol.policy_tokens == policy.generated
    # Exploring a lot spreads the visits over wrong leaves too: the pick still goes by value.
    wide = STRATEGIES["mcts"](p, ScriptedSteps(task, tree), oracle, None, simulations=30, expand=2, c=5.0)
    assert wide.reasoning.split("\n") == good and wide.extra["finished_leaves"] >= 3

    class AntiOracle:  # the header line is right on both paths; the next lines decide
        def score_steps(self, problem, steps):
            return [1.0 - x for x in oracle.score_steps(problem, steps)]

    worst = STRATEGIES["mcts"](p, ScriptedSteps(task, tree), AntiOracle(), None, simulations=30, expand=2)
    assert worst.reasoning.split("\n")[1] != good[1] and worst.answer != p.answer and worst.extra["value"] == 1.0


def test_mcts_rejects_bad_options():
    p = problems(1)[0]
    policy, oracle = Policy(engine=None, task=TASK), TaskStepOracle(TASK)
    for bad in ({"simulations": 0}, {"expand": 0}, {"c": -0.1}, {"agg": "mean"}):
        with pytest.raises(ValueError):
            STRATEGIES["mcts"](p, policy, oracle, None, **bad)
    with pytest.raises(ValueError, match="verifier"):
        STRATEGIES["mcts"](p, policy, None, None)
    with pytest.raises(ValueError, match="score_steps"):
        STRATEGIES["mcts"](p, policy, TaskOutcomeOracle(TASK), None)
    with pytest.raises(ValueError, match="system2"):
        STRATEGIES["mcts"](p, Policy(engine=None, task=TASK, mode="system1"), oracle, None)


def test_mcts_without_a_finished_leaf_completes_the_best_prefix_greedily(loaded):
    p = problems(1)[0]
    policy = make_policy(loaded)
    # One simulation only expands the root: nothing is finished yet.
    sol = STRATEGIES["mcts"](p, policy, PrefersFirstStep("x"), None, simulations=1, expand=3)
    roots = policy.engine.requests[0].completions
    assert sol.extra["finished_leaves"] == 0 and sol.extra["completed_greedily"]
    assert any(sol.completion.startswith(c.text + "\n") for c in roots)
    last = policy.engine.requests[-1]
    assert len(policy.engine.requests) == 2 and last.sampling.temperature == 0.0
    assert sol.policy_tokens == policy.engine.generated() == sum(len(c.token_ids) for c in roots) + len(
        last.completions[0].token_ids)


# -- budget forcing ------------------------------------------------------------------------------------------

def test_budget_forcing_caps_thinking_and_wait_extends_it(loaded):
    bf = STRATEGIES["budget_forcing"]
    tok = loaded[1]
    for p in problems(2):
        free = bf(p, make_policy(loaded, temperature=0.0), None, None)
        assert free.extra["thinking_tokens"] > 4 and free.extra["waits"] == 0
        capped_policy = make_policy(loaded, temperature=0.0)
        capped = bf(p, capped_policy, None, None, max_thinking=4)
        assert capped.extra["thinking_tokens"] <= 4 and capped.extra["forced_close"]
        head = capped.completion.split(THINK_CLOSE)[0]  # the thinking, up to the forced close
        assert capped.extra["forced_text"] in (["</think>\n\n"], ["\n</think>\n\n"])
        assert len(tok(head, add_special_tokens=False)["input_ids"]) <= 4 + 1  # + the inserted newline
        assert capped.completion.startswith(head + THINK_CLOSE + "\n\n")
        assert capped.policy_tokens == capped_policy.engine.generated()
        longer_policy = make_policy(loaded, temperature=0.0)
        longer = bf(p, longer_policy, None, None, min_thinking=10_000, max_waits=2)
        assert longer.extra["waits"] == 2 and longer.reasoning.count("Wait") == 2
        assert longer.extra["thinking_tokens"] > free.extra["thinking_tokens"]
        assert longer.reasoning.startswith(free.reasoning.split("\n")[0])
        assert longer.policy_tokens == longer_policy.engine.generated()


def test_meter_rejects_bad_budgets_and_fits_samples():
    with pytest.raises(ValueError):
        Meter(0)
    m = Meter(10)
    assert m.fit(3, 256) == 3 and m.fit(20, 256) == 0 and Meter(None).fit(100, 7) == 7


# -- CLI -------------------------------------------------------------------------------------------------------

def test_cli_solve_end_to_end(s2_model, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "sol.json"
    r = subprocess.run([sys.executable, "-m", "slowthink.cli", "solve", "--model", s2_model, "--task", "arithmetic",
                        "--task-args", "op=add", "--question", "3+4", "--strategy", "majority", "--n", "4",
                        "--budget", "100", "--max-new-tokens", "30", "--json-out", str(out)],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "question: 3+4" in r.stdout and "answer:" in r.stdout and "policy tokens:" in r.stdout
    sol = json.loads(out.read_text())
    assert 0 < sol["policy_tokens"] <= 100 and f"policy tokens: {sol['policy_tokens']} of budget 100" in r.stdout
    assert sol["expected"] == "7" and sol["extra"]["samples"] == 4


def test_cli_solve_with_mcts_and_the_oracle(s2_model, tmp_path, capsys):
    from slowthink.cli import main

    out = tmp_path / "mcts.json"
    assert main(["solve", "--model", s2_model, "--task", "arithmetic", "--task-args", "op=add", "--question", "3+4",
                 "--strategy", "mcts", "--verifier", "oracle", "--strategy-args", "simulations=4,expand=2",
                 "--budget", "100", "--max-new-tokens", "30", "--json-out", str(out)]) == 0
    assert "strategy: mcts (verifier: oracle)" in capsys.readouterr().out
    sol = json.loads(out.read_text())
    assert 0 < sol["policy_tokens"] <= 100 and sol["expected"] == "7"
    assert 1 <= sol["extra"]["simulations"] <= 4 and sol["extra"]["tree_size"] > 1
    assert main(["solve", "--model", s2_model, "--question", "3+4", "--strategy", "mcts"]) == 2
    assert "needs a verifier" in capsys.readouterr().err


def test_cli_eval_with_strategy_and_errors(s2_model, tmp_path, capsys):
    from slowthink.cli import main

    out = tmp_path / "ev.json"
    assert main(["eval", "--model", s2_model, "--task", "arithmetic", "--task-args", "op=add,max_level=2",
                 "--levels", "1", "--per-level", "3", "--strategy", "beam", "--n", "4", "--verifier", "oracle",
                 "--budget", "120", "--max-new-tokens", "30", "--json-out", str(out)]) == 0
    res = json.loads(out.read_text())["results"]
    assert set(res) == {"system2"}  # beam is System-2 only
    o = res["system2"]["overall"]
    assert o["n"] == 3 and o["accuracy"] <= o["well_formed"]  # a right answer is a well-formed one
    assert 0 < o["mean_policy_tokens"] <= o["max_policy_tokens"] <= 120  # within the budget
    assert main(["solve", "--model", s2_model, "--question", "3+4", "--strategy", "beam"]) == 2
    assert "needs a verifier" in capsys.readouterr().err
    assert main(["solve", "--model", s2_model, "--question", "3+4", "--strategy", "greedy", "--n", "3"]) == 2
