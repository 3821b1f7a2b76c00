"""The System-1/System-2 router: routing math, the difficulty predictor, effort levels, persistence, and the
whole pipeline (label arms, fit, save, load, route one question) on a tiny model."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from slowthink.effort import EFFORTS, check_effort, effort_setting, solve_with_effort
from slowthink.engine import Engine, SamplingParams
from slowthink.models import load_model
from slowthink.router import (
    Arm,
    Router,
    arm_table,
    auroc,
    choose_for_budget,
    choose_within,
    compute_signals,
    fit_predictor,
    pareto_front,
    slow_share_for_gap,
)
from slowthink.router.scoring import evaluate_routing
from slowthink.router.solve import route_solve
from slowthink.router.train import RouterConfig, fit_from_table, fit_router, training_problems
from slowthink.tasks import Arithmetic
from slowthink.tokenizer import render_prompt

ROOT = Path(__file__).resolve().parents[1]
TASK = Arithmetic(op="add", max_level=2)


pytestmark = pytest.mark.usefixtures("one_thread")


# -- routing math ---------------------------------------------------------------------------------

def test_choose_within_takes_cheapest_close_to_best():
    p = np.array([[0.2, 0.90, 0.93], [0.95, 0.96, 0.97], [0.1, 0.5, 0.9]])
    c = np.array([[1.0, 10.0, 100.0]] * 3)
    assert choose_within(p, c, 0.0).tolist() == [2, 2, 2]
    assert choose_within(p, c, 0.05).tolist() == [1, 0, 2]
    assert choose_within(p, c, 1.0).tolist() == [0, 0, 0]
    with pytest.raises(ValueError):
        choose_within(p, c, -0.1)


def test_choose_for_budget_respects_budget_and_matches_brute_force():
    rng = np.random.default_rng(0)
    q, a = 6, 3
    c = np.sort(rng.uniform(1, 50, (q, a)), 1)
    p = np.sort(rng.uniform(0, 1, (q, a)), 1)  # dearer arms do better, as with more samples
    for budget in (5.0, 15.0, 25.0, 40.0):
        pick = choose_for_budget(p, c, budget)
        spent = c[np.arange(q), pick].mean()
        assert spent <= budget + 1e-9 or (pick == c.argmin(1)).all()
        best = max((sum(p[i, j] for i, j in enumerate(js)) for js in itertools.product(range(a), repeat=q)
                    if np.mean([c[i, j] for i, j in enumerate(js)]) <= budget), default=None)
        got = p[np.arange(q), pick].sum()
        # the Lagrangian optimum is optimal up to one question's fractional choice
        assert best is None or got >= best - 1.0
    huge = choose_for_budget(p, c, 1e6)
    assert (huge == p.argmax(1)).all()
    with pytest.raises(ValueError):
        choose_for_budget(p, c, 0)


def test_pareto_front_and_slow_share():
    pts = [(10, 0.5), (20, 0.4), (30, 0.9), (5, 0.5), (40, 0.9)]
    assert pareto_front(pts) == [3, 2]
    fast = np.array([1, 0, 0, 0], bool)
    slow = np.array([1, 1, 1, 0], bool)
    # gap 0.5; 80% of it = 0.4 -> two wins needed; the score puts questions 1 and 2 first
    assert slow_share_for_gap(fast, slow, np.array([0.0, 0.9, 0.8, 0.1])) == 0.5
    assert slow_share_for_gap(fast, slow, np.array([0.9, 0.0, 0.8, 0.7])) == 1.0
    assert slow_share_for_gap(slow, fast, np.zeros(4)) is None


def test_auroc_hand_examples():
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    assert auroc([0.5, 0.5], [0, 1]) == 0.5
    assert auroc([1, 2, 3], [1, 1, 1]) != auroc([1, 2, 3], [1, 1, 1])  # NaN: one class only


def test_predictor_training_moves_its_metric_on_an_easy_setting():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 6))
    easy = x[:, 0] + 0.3 * rng.normal(size=400) > 0
    correct = np.stack([easy, easy | (x[:, 1] > 0), np.ones(400, bool)], 1)
    tokens = np.stack([np.full(400, 3), np.round(40 * np.exp(-0.5 * x[:, 0])), np.full(400, 160)], 1)
    pred = fit_predictor(x[:300], correct[:300], tokens[:300])
    p = pred.success(x[300:])
    assert auroc(p[:, 0], correct[300:, 0]) > 0.9
    prior = correct[:300, 0].mean()
    ll = lambda q: -np.mean(np.where(correct[300:, 0], np.log(q), np.log(1 - q)))  # noqa: E731
    assert ll(np.clip(p[:, 0], 1e-6, 1 - 1e-6)) < 0.6 * ll(np.full(100, prior))
    assert p[:, 2].min() > 0.95  # an always-right arm is predicted right
    cost = pred.cost(x[300:])
    assert np.corrcoef(cost[:, 1], tokens[300:, 1])[0, 1] > 0.9


# -- effort levels --------------------------------------------------------------------------------

def test_effort_levels_map_as_documented():
    assert list(EFFORTS) == ["none", "minimal", "low", "medium", "high", "xhigh", "auto"]
    assert (EFFORTS["none"].mode, EFFORTS["none"].n) == ("system1", 1)
    assert (EFFORTS["low"].mode, EFFORTS["low"].n, EFFORTS["low"].max_tokens) == ("system2", 1, 256)
    assert (EFFORTS["medium"].mode, EFFORTS["medium"].n, EFFORTS["medium"].max_tokens) == ("system2", 1, 1024)
    assert (EFFORTS["high"].mode, EFFORTS["high"].n) == ("system2", 8)
    assert (EFFORTS["minimal"].mode, EFFORTS["minimal"].n, EFFORTS["minimal"].thinking_budget) == ("system2", 1, 64)
    assert (EFFORTS["xhigh"].mode, EFFORTS["xhigh"].n) == ("system2", 16)
    assert effort_setting("low", max_tokens=7).max_tokens == 7
    for bad in ("extreme", "", "HIGH"):
        with pytest.raises(ValueError, match="reasoning_effort must be one of none, minimal, low, medium, high, "
                                             "xhigh, auto"):
            check_effort(bad)
    with pytest.raises(ValueError, match="auto"):
        effort_setting("auto")


def test_solve_with_effort_spends_what_each_level_says(sft_model):
    model, tok = load_model(sft_model)
    engines = {"main": Engine(model, tok)}
    p = TASK.sample_split(__import__("random").Random(0), 1, "heldout")
    none = solve_with_effort(p, "none", engines, TASK, max_completion_tokens=8)
    high = solve_with_effort(p, "high", engines, TASK, max_completion_tokens=8 * 32)  # 32 tokens per sample
    assert none.extra["samples"] == 1 and none.policy_tokens <= 8
    assert high.extra["samples"] == 8 and high.policy_tokens <= 8 * 32 and high.extra["route"]["arm"] == "high"
    squeezed = solve_with_effort(p, "high", engines, TASK, max_completion_tokens=64)  # room for two samples
    assert squeezed.extra["samples"] == 2 and squeezed.policy_tokens <= 64
    auto = solve_with_effort(p, "auto", engines, TASK, router=None, max_completion_tokens=8)
    assert auto.extra["route"]["arm"] == "medium" and "no router" in auto.extra["route"]["why"]


# -- the whole pipeline on a tiny model -------------------------------------------------------------

@pytest.fixture(scope="module")
def trained_router(sft_model, tmp_path_factory):
    model, tok = load_model(sft_model)
    engines = {"main": Engine(model, tok)}
    cfg = RouterConfig(model=sft_model, task_args={"op": "add", "max_level": 2}, levels=[1, 2], per_level=24,
                       majority_ns=[3], max_tokens=12, signal_max_tokens=8, choose_signals=False,
                       progress=False)
    problems = training_problems(TASK, cfg.levels, cfg.per_level, cfg.seed)
    router, metrics = fit_router(cfg, TASK, engines, {"main": sft_model}, problems)
    path = router.save(tmp_path_factory.mktemp("router") / "router")
    return router, metrics, engines, path


def test_signal_choice_weighs_accuracy_against_signal_tokens(trained_router, sft_model):
    router, _, engines, _ = trained_router
    problems = training_problems(TASK, [1, 2], 24, 0)
    table = arm_table(engines, TASK, problems, router.arms, seed=0)
    sig = compute_signals(engines, TASK, problems, max_tokens=8, seed=1)
    cfg = RouterConfig(model=sft_model, task_args={"op": "add", "max_level": 2}, levels=[1, 2],
                       max_tokens=12, signal_max_tokens=8)
    chosen, metrics = fit_from_table(cfg, table, sig)
    trials = metrics["signal_sets"]
    assert set(trials) == {"prompt", "s1", "s1+agree", "prompt+s1", "prompt+s1+agree"}
    top = max(t["validation_routed_accuracy"] for t in trials.values())
    pick = trials[metrics["signals"]]
    assert pick["validation_routed_accuracy"] >= top - 0.01
    assert all(pick["validation_routed_tokens"] <= t["validation_routed_tokens"] for t in trials.values()
               if t["validation_routed_accuracy"] >= top - 0.01)
    assert "+".join(chosen.signals) == metrics["signals"]


def test_arm_table_counts_tokens_and_shares_samples(sft_model):
    model, tok = load_model(sft_model)
    engines = {"main": Engine(model, tok)}
    problems = training_problems(TASK, [1], 6, 0)
    arms = [Arm("g", "system1", 1, max_tokens=6), Arm("m2", "system1", 2, 1.0, 6), Arm("m4", "system1", 4, 1.0, 6)]
    t = arm_table(engines, TASK, problems, arms, seed=3)
    assert t.correct.shape == t.tokens.shape == (6, 3)
    prompts = [render_prompt(tok, TASK.prompt(p, "system1"), "system1") for p in problems]
    greedy = engines["main"].generate(prompts, sampling=SamplingParams(max_tokens=6, temperature=0))
    assert list(t.tokens[:, 0]) == [len(c.token_ids) for (c,) in greedy]  # the greedy arm's own completion
    assert (t.tokens[:, 1] <= 12).all() and (t.tokens[:, 2] <= 24).all()
    assert (t.tokens[:, 1] <= t.tokens[:, 2]).all()  # m2 votes over the first 2 of m4's 4 samples
    for i, p in enumerate(problems):  # a correct vote is the problem's answer
        assert not t.correct[i, 2] or t.answers[i][2] == p.answer


def test_router_pipeline_save_load_same_decisions(trained_router, tmp_path):
    router, metrics, engines, path = trained_router
    assert set(metrics["validation_auroc"]) == {"s1", "s2", "s2_maj3"}
    loaded = Router.load(path)
    problems = TASK.heldout_set(6, (1, 2))
    sig = compute_signals(engines, TASK, problems, router.signals, max_tokens=8, seed=5)
    for t in (0.0, 0.05, 0.5):
        assert (router.choose(sig.features, tradeoff=t) == loaded.choose(sig.features, tradeoff=t)).all()
    assert (router.choose(sig.features, mean_budget=5) == loaded.choose(sig.features, mean_budget=5)).all()
    np.testing.assert_allclose(router.predict(sig.features)[0], loaded.predict(sig.features)[0])
    (tmp_path / "router.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a valid router"):
        Router.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="slowthink train router"):
        Router.load(tmp_path / "missing")


def test_route_solve_counts_signal_tokens_and_says_why(trained_router):
    router, _, engines, _ = trained_router
    p = TASK.heldout_set(1, (2,))[0]
    sol = route_solve(p, router, engines, TASK, seed=0, tradeoff=0.0)
    route = sol.extra["route"]
    assert route["arm"] in router.arm_names and "Chose" in route["why"]
    arm = router.arms[router.arm_names.index(route["arm"])]
    assert route["signal_tokens"] > 0
    assert sol.policy_tokens <= route["signal_tokens"] + arm.n * arm.max_tokens
    if not router.reuses_s1()[router.arm_names.index(route["arm"])]:
        assert sol.policy_tokens > route["signal_tokens"]


def test_evaluate_routing_budget_points_respect_budget(trained_router):
    router, _, engines, _ = trained_router
    res = evaluate_routing(router, engines, TASK, TASK.heldout_set(8, (1, 2)), tradeoffs=(0.0, 0.2),
                           budget_fractions=(0.3, 0.6))
    for r in res["routed"]:
        if "mean_budget" in r:  # the Lagrangian plans with predicted costs: allow the prediction error
            assert r["mean_tokens"] <= r["mean_budget"] * 1.5 + res["mean_signal_tokens"]
        assert abs(sum(r["arm_share"].values()) - 1) < 1e-9
    assert res["oracle"]["accuracy"] >= max(f["accuracy"] for f in res["fixed"])
    assert res["best_fixed"]["name"] in router.arm_names


def test_cli_train_router_and_solve_auto(sft_model, tmp_path):
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    out = tmp_path / "r"
    run = subprocess.run([sys.executable, "-m", "slowthink.cli", "train", "router", "--model", sft_model,
                          "--task-args", "op=add,max_level=2", "--levels", "1,2", "--per-level", "8",
                          "--majority-ns", "2", "--max-tokens", "8", "--signal-max-tokens", "6", "--threads", "1",
                          "--out", str(out), "--progress", "false"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert (out / "router.json").is_file() and (out / "predictor.safetensors").is_file()
    run = subprocess.run([sys.executable, "-m", "slowthink.cli", "solve", "--model", sft_model, "--task-args",
                          "op=add,max_level=2", "--question", "3+4", "--reasoning-effort", "auto", "--router", str(out),
                          "--max-new-tokens", "8"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert "reasoning_effort: auto -> " in run.stdout and "why: predicted success" in run.stdout
    bad = subprocess.run([sys.executable, "-m", "slowthink.cli", "train", "router", "--model", str(tmp_path)],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    assert bad.returncode == 2 and "config field 'model'" in bad.stderr


class RecordingEngine(Engine):
    """An engine that remembers which prompts it was asked to complete."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.prompts: list[list[int]] = []

    def add(self, prompt_ids, n=1, sampling=None):
        self.prompts.append(list(prompt_ids))
        return super().add(prompt_ids, n, sampling)


def test_two_model_mode_runs_each_arm_on_its_model(sft_model):
    from slowthink.router.arms import default_arms, run_arm

    model, tok = load_model(sft_model)
    engines = {"fast": RecordingEngine(model, tok), "slow": RecordingEngine(model, tok)}
    arms = default_arms(max_tokens=8, ns=(2,), fast="fast", slow="slow")
    problems = training_problems(TASK, [1], 4, 0)
    arm_table(engines, TASK, problems, arms)
    compute_signals(engines, TASK, problems, fast="fast", slow="slow", max_tokens=6)
    run_arm(arms[2], problems[0], engines, TASK)
    s1 = {tuple(render_prompt(tok, TASK.prompt(p, "system1"), "system1")) for p in problems}
    s2 = {tuple(render_prompt(tok, TASK.prompt(p, "system2"), "system2")) for p in problems}
    assert engines["fast"].prompts and {tuple(x) for x in engines["fast"].prompts} <= s1
    assert engines["slow"].prompts and {tuple(x) for x in engines["slow"].prompts} <= s2
    with pytest.raises(ValueError, match="need model 'slow'"):
        arm_table({"fast": engines["fast"]}, TASK, problems, arms)
