"""Evaluation math (pass@k, majority vote) and the quickstart pipeline end to end on a tiny budget."""

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from slowthink.evaluate import majority, pass_at_k, two_proportion_z, wilson_interval, with_intervals, within_noise
from slowthink.quickstart import QuickstartConfig, run_quickstart
from slowthink.tasks import get_task
from eval_helpers import greedy_accuracy

ROOT = Path(__file__).resolve().parents[1]


def test_pass_at_k_matches_hand_computed_values():
    assert pass_at_k(4, 0, 1) == 0.0
    assert pass_at_k(4, 4, 2) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)  # 1 - C(3,2)/C(4,2)
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)  # 1 - C(7,5)/C(10,5)


def test_wilson_interval_matches_hand_computed_values():
    z2 = 1.959963984540054 ** 2
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(z2 / (10 + z2))  # closed form at k = 0
    lo, hi = wilson_interval(10, 10)
    assert lo == pytest.approx(10 / (10 + z2)) and hi == pytest.approx(1.0)
    assert wilson_interval(50, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    assert wilson_interval(41, 100) == pytest.approx((0.3187, 0.5080), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="0 <= k <= n"):
        wilson_interval(11, 10)
    block = with_intervals({"n": 100, "pass@1": 0.5, "mean_tokens": 9.0}, ["pass@1"])
    assert block["pass@1_ci95"] == pytest.approx([0.4038, 0.5962], abs=1e-4) and block["mean_tokens"] == 9.0


def test_two_proportion_test_tells_noise_from_a_difference():
    # 50/100 vs 60/100: pooled 0.55, standard error sqrt(0.55 * 0.45 * 2 / 100) = 0.0704
    assert two_proportion_z(50, 100, 60, 100) == pytest.approx(0.1 / (0.55 * 0.45 * 0.02) ** 0.5)
    assert within_noise(0.5, 100, 0.6, 100) and not within_noise(0.5, 100, 0.7, 100)
    assert not within_noise(0.5, 400, 0.6, 400)  # the same 10 points stand out at 4x the problems
    assert two_proportion_z(0, 10, 0, 20) == 0.0 and within_noise(1.0, 10, 1.0, 30)


def test_majority_ignores_malformed_and_breaks_ties_by_first_seen():
    assert majority([None, "7", "8", "8", None]) == "8"
    assert majority(["3", "4", "4", "3"]) == "3"
    assert majority([None, None]) is None


def test_quickstart_pipeline_writes_report_and_stages_run_alone(tmp_path):
    out = tmp_path / "qs"
    cfg = QuickstartConfig(out=str(out), model="tiny", levels=[1, 2], level_weights=[1, 1], steps=12,
                           batch_size=8, eval_every=6, eval_per_level=3, k=2, max_new_tokens=40,
                           rl_steps=2, rl_prompts_per_step=2, rl_group_size=2, route_per_level=6,
                           route_majority_ns=[2], search_problems=3, search_ns=[1, 2, 4], progress=False, threads=1,
                           stages=["sft", "eval", "rl", "route", "search", "report"])
    summary = run_quickstart(cfg)
    for f in ("report.md", "training.png", "accuracy_by_level.png", "results.json", "eval.json",
              "model/config.json", "sft/metrics.jsonl", "rl.png", "rl/model/config.json", "route.json", "route.png",
              "model/router/router.json", "search.json", "search.png"):
        assert (out / f).exists(), f
    assert set(summary["eval"]) == {"system1", "system2"}
    assert set(summary["eval"]["system2"]["by_level"]) == {"1", "2"}
    s2, levels = summary["eval"]["system2"], summary["eval"]["system2"]["by_level"].values()
    assert s2["overall"]["n"] == sum(b["n"] for b in levels) == 2 * cfg.eval_per_level and "pass@2" in s2["overall"]
    # the headline is the overall greedy pass@1, the mean over all held-out problems (the levels' n-weighted mean)
    assert summary["system2_pass@1"] == s2["overall"]["pass@1"] == pytest.approx(
        sum(b["n"] * b["pass@1"] for b in levels) / s2["overall"]["n"])
    assert (out / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary["rl"]["level"] == 2 and summary["rl"]["steps"] == 2
    # before / after: System-2 greedy pass@1 of the SFT and the RL model on the RL run's held-out level-2 problems
    task = get_task(cfg.task, **cfg.task_args)
    heldout = task.heldout_set(cfg.eval_per_level, (2,))
    assert [summary["rl"]["before"], summary["rl"]["after"]] == [
        greedy_accuracy(m, task, heldout, "system2", cfg.max_new_tokens) for m in (out / "model", out / "rl" / "model")]
    assert "GRPO on level 2" in (out / "report.md").read_text()
    # Every accuracy with its number of problems and 95% interval; each comparison checked against that noise.
    assert summary["n"] == s2["overall"]["n"] and summary["rl"]["n"] == len(heldout)
    assert summary["system2_pass@1_ci95"] == list(wilson_interval(summary["system2_pass@1"] * summary["n"],
                                                                  summary["n"]))
    assert summary["within_noise"] == within_noise(summary["system1_pass@1"], summary["n"], summary["system2_pass@1"],
                                                   summary["n"])
    assert f"(n={summary['n']}, 95% CI " in (out / "report.md").read_text()
    assert "## Routing" in (out / "report.md").read_text()
    assert summary["route"]["best_fixed"]["name"] in {"s1", "s2", "s2_maj2"}
    # The search stage: greedy vs majority@n / confidence-weighted majority@n from one pool, on the hardest level.
    sr = json.loads((out / "search.json").read_text())
    assert sr.keys() >= {"level", "problems", "temperature", "ns", "greedy", "curves", "best", "gain_points", "ceiling",
                         "mean_sample_tokens", "sampled_accuracy", "seconds"}
    assert (sr["level"], sr["problems"], sr["ns"]) == (2, 3, [1, 2, 4]) and summary["search"] == sr
    assert set(sr["curves"]) == {"majority", "confidence_majority", "pass_at_n_ceiling"}
    for name, pts in sr["curves"].items():
        assert [p["n"] for p in pts] == [1, 2, 4]
        assert pts[0]["accuracy"] == sr["curves"]["pass_at_n_ceiling"][0]["accuracy"]  # n=1: every rule keeps it
        # Policy tokens: the first n samples of every pool, so about n x the mean sample (exact at the pool size).
        assert pts[-1]["mean_policy_tokens"] == pytest.approx(4 * sr["mean_sample_tokens"])
        assert all(p["mean_policy_tokens"] == pytest.approx(p["n"] * sr["mean_sample_tokens"], rel=0.5) for p in pts)
    ceil = [p["accuracy"] for p in sr["curves"]["pass_at_n_ceiling"]]
    assert ceil == sorted(ceil) and all(m["accuracy"] <= c for m, c in zip(sr["curves"]["majority"], ceil))
    assert 0 < sr["greedy"]["mean_policy_tokens"] <= 40 and sr["best"]["strategy"] != "pass_at_n_ceiling"
    assert sr["gain_points"] == pytest.approx(100 * (sr["best"]["accuracy"] - sr["greedy"]["accuracy"]), abs=0.06)
    assert (out / "search.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    assert matplotlib.image.imread(out / "search.png").shape[:2] == (600, 900)  # decodes: 7.5 x 5 in at 120 dpi
    assert "## Test-time compute" in (out / "report.md").read_text() and "search.png" in (out / "report.md").read_text()
    # How the results came about: the machine, each stage's seconds and their total, the config, and a command
    # that the CLI parses back into the same config.
    assert summary["machine"]["cores"] >= 1 and summary["machine"]["device"] == "cpu"
    assert list(summary["timings_s"]) == cfg.stages
    assert summary["total_s"] == pytest.approx(sum(summary["timings_s"].values()), abs=0.051)
    assert summary["config"] == asdict(cfg) and reproduced(summary["command"]) == cfg
    first = (out / "eval.json").stat().st_mtime_ns
    # Any stage alone, reading what earlier stages wrote.
    again = run_quickstart(QuickstartConfig(**{**cfg.__dict__, "stages": ["eval", "report"]}))
    assert (out / "eval.json").stat().st_mtime_ns > first
    assert json.loads((out / "timings.json").read_text()).keys() >= {"sft", "eval", "rl", "route", "search", "report"}
    assert reproduced(again["command"]) == cfg  # every stage that produced the run folder, not just the last two


def reproduced(command: str) -> QuickstartConfig:
    """The config a ``slowthink quickstart ...`` command line runs with."""
    import shlex

    from slowthink.cli import build_parser
    from slowthink.config import load_config, overrides_from_args

    argv = shlex.split(command)
    assert argv[:2] == ["slowthink", "quickstart"]
    return load_config(QuickstartConfig, None, overrides_from_args(build_parser().parse_args(argv[1:]), QuickstartConfig))


def test_quickstart_stage_without_its_inputs_fails_clearly(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "slowthink.cli", "quickstart", "--out", str(tmp_path / "q"),
                        "--stages", "eval"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "run the 'sft' stage first" in r.stderr
    r = subprocess.run([sys.executable, "-m", "slowthink.cli", "quickstart", "--out", str(tmp_path / "q"),
                        "--stages", "search"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "run the 'sft' stage first" in r.stderr
    r = subprocess.run([sys.executable, "-m", "slowthink.cli", "quickstart", "--out", str(tmp_path / "q"),
                        "--stages", "report"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "run the 'eval' stage first" in r.stderr
    r = subprocess.run([sys.executable, "-m", "slowthink.cli", "quickstart", "--stages", "sft,nope"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "unknown stage" in r.stderr


def test_cli_eval_writes_json_by_level_and_mode(tmp_path, tok):
    from slowthink.models import build_model, save

    save(build_model("tiny", tok), tok, tmp_path / "m")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = tmp_path / "r.json"
    r = subprocess.run([sys.executable, "-m", "slowthink.cli", "eval", "--model", str(tmp_path / "m"), "--task",
                        "countdown", "--levels", "2,3", "--per-level", "3", "--k", "2", "--max-new-tokens", "16",
                        "--json-out", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())["results"]
    assert set(res) == {"system1", "system2"}
    assert set(res["system2"]["by_level"]) == {"2", "3"}
    assert {"pass@1", "pass@2", "maj@2", "sampled_pass@1", "mean_tokens"} <= set(res["system2"]["overall"])
    r = subprocess.run([sys.executable, "-m", "slowthink.cli", "eval", "--model", str(tmp_path / "nowhere")],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "not a model folder" in r.stderr


def test_recipes_load_and_quickstart_recipe_matches_defaults():
    from dataclasses import asdict

    from slowthink.config import load_config

    recipe = load_config(QuickstartConfig, ROOT / "recipes" / "quickstart.yaml")
    defaults = QuickstartConfig()
    assert {**asdict(recipe), "out": None} == {**asdict(defaults), "out": None}
    old = load_config(QuickstartConfig, ROOT / "recipes" / "quickstart_l12.yaml")
    assert old.levels == [1, 2] and old.optimizer == "adamw" and "rl" not in old.stages
    three = load_config(QuickstartConfig, ROOT / "recipes" / "quickstart_3digit.yaml")
    assert three.levels == [1, 2, 3]
    rl = load_config(QuickstartConfig, ROOT / "recipes" / "quickstart_rl.yaml")
    assert rl.stages == ["sft", "eval", "rl", "report"] and rl.hardest == 3


def test_cli_tasks_and_sample_print_without_error():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "slowthink.cli", "tasks"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "arithmetic" in r.stdout and "countdown" in r.stdout
    r = subprocess.run([sys.executable, "-m", "slowthink.cli", "sample", "--task", "countdown", "--level", "3"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "Target:" in r.stdout and "</think>" in r.stdout


def test_heldout_evaluation_consumes_no_training_randomness(tiny_model, tok):
    # Trainers evaluate between steps: drawing the held-out set and decoding it greedily must leave the RNG
    # streams training draws from as they were, so evaluating (or not, or on other problems) trains the same.
    import random

    import torch

    from slowthink.engine import Engine
    from slowthink.evaluate import heldout_metrics

    task = get_task("arithmetic", op="add", max_level=2)
    python_state, torch_state = random.getstate(), torch.get_rng_state()
    metrics = heldout_metrics(Engine(tiny_model, tok), task, tok, task.heldout_set(3, (1, 2)), max_tokens=8)
    assert random.getstate() == python_state and torch.equal(torch.get_rng_state(), torch_state)
    assert metrics["eval/system2_n"] == 6 and metrics["eval/system2_pass@1_lo"] <= metrics["eval/system2_pass@1"]
