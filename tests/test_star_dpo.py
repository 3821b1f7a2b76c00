"""STaR (expert iteration with rationalisation) and offline DPO: they learn, rationalised traces are stored
with the unhinted prompt, runs resume exactly after an interruption, NaN halts DPO, configs are validated."""

import math
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from slowthink.config import ConfigError
from slowthink.engine import Completion
from slowthink.rl import dpo, star
from slowthink.train.loop import TrainingHalted
from slowthink.rl.dpo import DPOConfig, make_pairs
from slowthink.rl.rewards import RewardFn
from slowthink.rl.rollout import Group
from slowthink.rl.star import Hinted, STaRConfig, collect, hinted_prompt, render_trace
from slowthink.train.runlog import read_metrics
from slowthink.tasks import Arithmetic, Problem
from slowthink.tokenizer import render_prompt

# System-1 on 1-digit addition: completions are 2-3 tokens, so a run takes seconds on one thread. (A tiny
# model SFT-ed for seconds cannot copy the operands in System-2 yet, so its rare "correct" System-2 traces
# are lucky guesses behind wrong reasoning, and STaR on them does not improve it; see the report.)
FAST = dict(levels=[1], mode="system1", max_new_tokens=6, threads=1, progress=False)
STAR = dict(iterations=3, problems_per_iteration=64, samples_per_problem=8, batch_size=16, steps_per_iteration=50,
            warmup_steps=2, lr=3e-3, eval_per_level=4, **FAST)
TASK = Arithmetic(op="add", max_level=2)


pytestmark = pytest.mark.usefixtures("one_thread")




@pytest.fixture(scope="module")
def star_run(sft_model, tmp_path_factory):
    return star.train(STaRConfig(out=str(tmp_path_factory.mktemp("star")), init=sft_model, **STAR), task=TASK)


def _weights(folder) -> dict[str, torch.Tensor]:
    return load_file(str(next(Path(folder).glob("*.safetensors"))))


def _same(a, b) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


# -- STaR ---------------------------------------------------------------------------------------------------

def _pass_rate(folder) -> tuple[float, float]:
    """Sampled pass rate and well-formed rate on 64 fixed train problems x 16 samples."""
    from slowthink.engine import SamplingParams
    from slowthink.models import load_model
    from slowthink.rl.rollout import LocalRolloutWorker

    model, tok = load_model(folder)
    worker = LocalRolloutWorker(model, tok, TASK, RewardFn())
    worker.load_weights(None, version=0)
    rng = random.Random(99)
    problems = [TASK.sample_split(rng, 1, "train") for _ in range(64)]
    scores = [s for g in worker.rollout(problems, "system1", 16, SamplingParams(max_tokens=6, seed=5)) for s in g.scores]
    return sum(s.correct for s in scores) / len(scores), sum(s.well_formed for s in scores) / len(scores)


def test_star_improves_the_policy(sft_model, star_run):
    # Measured (seeds 0-3), init -> after 3 iterations: pass rate 0.046 -> 0.085-0.18, well formed 0.82 -> 0.99.
    (pass0, form0), (pass3, form3) = _pass_rate(sft_model), _pass_rate(star_run / "model")
    assert pass3 >= pass0 + 0.03 and form3 >= form0 + 0.1, ((pass0, form0), (pass3, form3))
    rows = [r for r in read_metrics(star_run) if "sampled_pass_rate" in r]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[-1]["well_formed"] >= rows[0]["well_formed"] + 0.1  # iteration n samples from M_{n-1}
    assert all(r["ft_steps"] == 50 and r["traces_kept"] > 0 for r in rows)
    assert [r["train_set"] for r in rows] == sorted(r["train_set"] for r in rows), "accumulate: the set only grows"
    assert any(r["solved_rationalized"] > 0 for r in rows), "rationalisation found traces"
    for r in rows:
        assert r["solved_direct"] + r["unsolved"] == r["problems"] and r["solved_rationalized"] <= r["unsolved"]
    evals = [r["step"] for r in read_metrics(star_run) if "eval/system1_pass@1" in r]
    assert evals == [0, 1, 2, 3]
    state = torch.load(star_run / "ckpt" / "state.pt", weights_only=False)
    assert state["iteration"] == 3 and len(state["traces"]) == rows[-1]["train_set"]


def test_star_resumes_after_interruption(sft_model, star_run, tmp_path, monkeypatch):
    real, calls = star.fine_tune, []

    def killed_in_third_iteration(*args, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kw)

    cfg = STaRConfig(out=str(tmp_path / "run"), init=sft_model, **STAR)
    monkeypatch.setattr(star, "fine_tune", killed_in_third_iteration)
    with pytest.raises(KeyboardInterrupt):
        star.train(cfg, task=TASK)
    assert torch.load(tmp_path / "run" / "ckpt" / "state.pt", weights_only=False)["iteration"] == 2
    monkeypatch.setattr(star, "fine_tune", real)
    resumed = star.train(cfg, task=TASK)
    assert _same(resumed / "model", star_run / "model"), "resumed run == uninterrupted run"
    assert [r["step"] for r in read_metrics(resumed) if "sampled_pass_rate" in r] == [1, 2, 3]


def test_star_time_budget_stops_after_the_iteration_that_crosses_it(sft_model, tmp_path):
    cfg = STaRConfig(out=str(tmp_path / "run"), init=sft_model, **{**STAR, "time_budget_s": 1e-3, "eval_per_level": 0,
                                                                    "steps_per_iteration": 2})
    run = star.train(cfg, task=TASK)
    assert [r["step"] for r in read_metrics(run) if "sampled_pass_rate" in r] == [1]
    assert (run / "model" / "config.json").exists()
    with pytest.raises(ConfigError, match="time_budget_s"):
        STaRConfig(init=sft_model, time_budget_s=-1.0)


def _scripted_worker(task, script: dict[str, list[str]], seen: list[str], finish="stop", verify_steps=False):
    """Stands in for LocalRolloutWorker: returns the texts scripted for each user message, scored by
    ``task`` (a Hinted task scores against the real answer, like the real worker would)."""

    class Worker:
        def rollout(self, problems, mode, n, sampling):
            groups = []
            for p in problems:
                message = task.prompt(p, mode)[-1]["content"]
                seen.append(message)
                texts = script[message][:n]
                comps = [Completion([1], [0.0], t, finish) for t in texts]
                reward = RewardFn(verify_steps=verify_steps)
                groups.append(Group(p, mode, [], comps, [reward(task, p, t, 1, mode) for t in texts]))
            return groups

    return Worker()


def _add(a: int, b: int) -> Problem:
    return Problem(key=f"{a}+{b}", level=1, question=f"{a}+{b}", answer=str(a + b), data={"a": a, "b": b, "op": "add"})


def test_rationalisation_keeps_verified_hinted_traces_with_the_unhinted_prompt(tok):
    solved, helped, hopeless = _add(2, 3), _add(4, 4), _add(6, 7)
    good = {p.key: TASK.reference(p, "system2").completion() for p in (solved, helped, hopeless)}
    direct = {"2+3": ["x", good["2+3"], good["2+3"]], "4+4": ["4+4\n0900\n</think>\n\n9"], "6+7": ["</think>"]}
    hinted = {"4+4\n(answer: 8)": ["4+4\n0800\n</think>\n\n8", "4+4\n0800\n</think>\n\n8"],
              "6+7\n(answer: 13)": ["6+7\n1301\n</think>\n\n12", "13"]}  # wrong answer; malformed
    seen_direct, seen_hinted = [], []
    workers = (_scripted_worker(TASK, direct, seen_direct), _scripted_worker(Hinted(TASK), hinted, seen_hinted))
    cfg = _cfg_stub(mode="system2", samples_per_problem=4, rationalize=True)
    traces, stats = collect(*workers, [solved, helped, hopeless], cfg, iteration=0)
    assert [(t.problem.key, t.source) for t in traces] == [("2+3", "direct"), ("4+4", "rationalized")]
    assert seen_hinted == ["4+4\n(answer: 8)", "6+7\n(answer: 13)"], "only unsolved problems get the hint"
    assert stats["solved_direct"] == 1 and stats["solved_rationalized"] == 1 and stats["unsolved"] == 2
    assert stats["hinted_pass_rate"] == pytest.approx(2 / 4) and stats["samples"] == 5 + 4
    # The rationalised trace trains on the unhinted prompt: the hint never reaches the training data.
    r = render_trace(tok, TASK, traces[1], "system2")
    assert r.ids[:r.prompt_len] == render_prompt(tok, TASK.prompt(helped, "system2"), "system2")
    assert "answer" not in tok.decode(r.ids) and tok.decode(r.ids[r.prompt_len:]).startswith("4+4\n0800")
    assert sum(r.mask) == len(r.ids) - r.prompt_len

    seen_hinted.clear()  # rationalize=false: no hinted sampling at all
    traces, stats = collect(*workers, [solved, helped], _cfg_stub(mode="system2", samples_per_problem=4,
                                                                  rationalize=False), iteration=0)
    assert [t.source for t in traces] == ["direct"] and seen_hinted == [] and stats["solved_rationalized"] == 0
    # A correct completion cut at the token limit is not a solution.
    cut = _scripted_worker(TASK, direct, [], finish="length")
    traces, _ = collect(cut, workers[1], [solved], _cfg_stub(mode="system2", samples_per_problem=4,
                                                             rationalize=False), iteration=0)
    assert traces == []


def test_verify_steps_drops_traces_that_copy_the_hint_through_wrong_steps():
    """4+4 with a wrong cell (09) but the hinted answer 8: kept when only the answer is checked, dropped
    when every step must be right; the right derivation is kept either way."""
    p = _add(4, 4)
    script = {"4+4": ["x"], "4+4\n(answer: 8)": ["4+4\n0900\n</think>\n\n8", "4+4\n0800\n</think>\n\n8"]}
    cfg = _cfg_stub(mode="system2", samples_per_problem=2, rationalize=True, max_per_problem=2)
    kept = {}
    for verify in (False, True):
        workers = (_scripted_worker(TASK, script, [], verify_steps=verify),
                   _scripted_worker(Hinted(TASK), script, [], verify_steps=verify))
        traces, _ = collect(*workers, [p], cfg, iteration=0)
        kept[verify] = [t.completion.split("\n")[1] for t in traces]
    assert kept == {False: ["0900", "0800"], True: ["0800"]}


def _cfg_stub(**kw):
    base = dict(max_new_tokens=8, temperature=1.0, seed=0, max_per_problem=1, hint=star.DEFAULT_HINT)
    return type("Cfg", (), {**base, **kw})()


def test_hint_wording_can_be_overridden_by_the_task():
    p = _add(4, 4)
    assert hinted_prompt(TASK, p, "system2", "Q: {question} A: {answer}")[-1]["content"] == "Q: 4+4 A: 8"
    assert TASK.prompt(p, "system2")[-1]["content"] == "4+4", "the task's own prompt is left alone"

    class Worded(Arithmetic):
        def hinted_prompt(self, problem, mode):
            return [{"role": "user", "content": f"{problem.question} equals {problem.answer}; show why"}]

    assert Hinted(Worded(op="add")).prompt(p, "system1")[-1]["content"] == "4+4 equals 8; show why"


# -- DPO ----------------------------------------------------------------------------------------------------

DPO = dict(num_problems=64, samples_per_problem=8, pairs_per_problem=2, batch_size=16, warmup_steps=2, lr=1e-3,
           eval_per_level=4, eval_every=0, checkpoint_every=1000, **FAST)


def test_dpo_learns_to_prefer_verified_answers(sft_model, tmp_path):
    run = dpo.train(DPOConfig(out=str(tmp_path / "run"), init=sft_model, steps=12, **DPO), task=TASK)
    assert not _same(sft_model, run / "model")
    pairs = dpo.read_pairs(run / "pairs.jsonl")
    assert len(pairs) > 16
    for p in pairs:  # chosen verified correct, rejected not; same prompt
        problem = _add(*map(int, p["key"].split("+")))
        assert TASK.score(problem, p["chosen"], "system1").correct and not TASK.score(problem, p["rejected"],
                                                                                        "system1").correct
    rows = [r for r in read_metrics(run) if "reward_acc" in r]
    assert [r["step"] for r in rows] == list(range(1, 13))
    # Policy == reference at the first step: loss log 2, margin 0 (the stored reference log-probs are right).
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-4) and abs(rows[0]["margin"]) < 1e-4
    # Measured (seeds 0-2): reward accuracy of the last 4 steps 0.7-0.9, margin > 0.05.
    early, late = (sum(r["reward_acc"] for r in rs) / 4 for rs in (rows[:4], rows[-4:]))
    assert late >= early + 0.2 and late >= 0.6, (early, late)
    assert sum(r["margin"] for r in rows[-4:]) / 4 > 0.03
    assert sum(r["loss"] for r in rows[-4:]) / 4 < math.log(2) - 0.02
    data = next(r for r in read_metrics(run) if "data/pairs" in r)
    assert data["step"] == 0 and data["data/pairs"] == len(pairs) and data["steps"] == 12
    assert [r["step"] for r in read_metrics(run) if "eval/system1_pass@1" in r] == [0, 12]


def test_dpo_resume_reuses_pairs_and_matches_uninterrupted_run(sft_model, tmp_path, monkeypatch):
    common = dict(init=sft_model, steps=4, nll_coef=0.5, **{**DPO, "eval_per_level": 0, "checkpoint_every": 2,
                                                             "micro_batch_size": 5, "num_problems": 24})
    straight = dpo.train(DPOConfig(out=str(tmp_path / "a"), **common), task=TASK)
    real_step, calls = dpo.dpo_step, []

    def killed_at_step_3(*args, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_step(*args, **kw)

    monkeypatch.setattr(dpo, "dpo_step", killed_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        dpo.train(DPOConfig(out=str(tmp_path / "b"), **common), task=TASK)
    monkeypatch.setattr(dpo, "dpo_step", real_step)
    monkeypatch.setattr(dpo, "build_pairs", lambda *a, **k: pytest.fail("resumed run sampled new pairs"))
    resumed = dpo.train(DPOConfig(out=str(tmp_path / "b"), **common), task=TASK)
    assert _same(straight / "model", resumed / "model") and not _same(sft_model, resumed / "model")
    rows = [r for r in read_metrics(resumed) if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    # the same steps on the same pairs, before the kill and after the resume: the same losses
    straight_rows = [r for r in read_metrics(straight) if "loss" in r]
    assert [(r["loss"], r["nll"]) for r in rows] == [(r["loss"], r["nll"]) for r in straight_rows]


def test_dpo_nan_halts_and_keeps_last_good_checkpoint(sft_model, tmp_path, monkeypatch):
    real, calls = dpo.dpo_loss, []

    def nan_on_second_step(*args, **kw):
        calls.append(1)
        loss, c, r = real(*args, **kw)
        return (loss * float("nan"), c, r) if len(calls) > 1 else (loss, c, r)

    monkeypatch.setattr(dpo, "dpo_loss", nan_on_second_step)
    cfg = DPOConfig(out=str(tmp_path / "run"), init=sft_model, steps=3, **{**DPO, "eval_per_level": 0,
                                                                           "checkpoint_every": 1, "num_problems": 24})
    with pytest.raises(TrainingHalted, match="non-finite loss.*step 2.*ckpt"):
        dpo.train(cfg, task=TASK)
    assert torch.load(tmp_path / "run" / "ckpt" / "state.pt", weights_only=False)["step"] == 1
    assert not (tmp_path / "run" / "model").exists()


def test_make_pairs_only_pairs_verified_against_unverified():
    p = _add(5, 7)
    texts = ["12", "12", "13", "x", "12", "11"]
    finish = ["stop", "stop", "stop", "stop", "length", "length"]
    comps = [Completion([i], [0.0], t, f) for i, (t, f) in enumerate(zip(texts, finish))]
    group = Group(p, "system1", [9], comps, [RewardFn()(TASK, p, t, 1, "system1") for t in texts])
    pairs = make_pairs([group], per_problem=10, seed=0)
    # chosen: "12" once (distinct texts; the cut "12" is not a solution); rejected: "13", "x", "11" (cut or not)
    assert sorted((q["chosen"], q["rejected"]) for q in pairs) == [("12", "11"), ("12", "13"), ("12", "x")]
    assert all(q["chosen_ids"] == [0] and q["prompt_ids"] == [9] for q in pairs)
    assert len(make_pairs([group], per_problem=2, seed=0)) == 2
    all_right = Group(p, "system1", [9], comps[:2], group.rewards[:2])
    assert make_pairs([all_right], per_problem=2, seed=0) == []


# -- config validation --------------------------------------------------------------------------------------

def test_config_errors_name_the_field(sft_model, tmp_path):
    for cls in (STaRConfig, DPOConfig):
        with pytest.raises(ConfigError, match="'init'.*give the model folder"):
            cls()
        with pytest.raises(ConfigError, match="'init'.*not a model folder"):
            cls(init=str(tmp_path / "nowhere"))
        with pytest.raises(ConfigError, match="'mode'"):
            cls(init=sft_model, mode="fast")
    for bad, field in [(dict(hint="{question} without the answer"), "hint"), (dict(hint="{answer} {oops}"), "hint"),
                       (dict(temperature=0.0, samples_per_problem=4), "temperature"), (dict(iterations=0), "iterations"),
                       (dict(epochs=0.0), "epochs"), (dict(micro_batches=64, batch_size=32), "micro_batches"),
                       (dict(max_per_problem=0), "max_per_problem"), (dict(lr=0.0), "lr")]:
        with pytest.raises(ConfigError, match=f"'{field}'"):
            STaRConfig(init=sft_model, **bad)
    STaRConfig(init=sft_model, temperature=0.0, samples_per_problem=1, epochs=0.0, steps_per_iteration=5)  # valid
    for bad, field in [(dict(samples_per_problem=1), "samples_per_problem"), (dict(beta=0.0), "beta"),
                       (dict(temperature=0.0), "temperature"), (dict(epochs=0.0), "epochs"),
                       (dict(micro_batch_size=-1), "micro_batch_size"), (dict(pairs_per_problem=0), "pairs_per_problem"),
                       (dict(nll_coef=-1.0), "nll_coef")]:
        with pytest.raises(ConfigError, match=f"'{field}'"):
            DPOConfig(init=sft_model, **bad)


def test_curriculum_adds_one_level_every_n_iterations():
    from slowthink.rl.star import curriculum_levels

    assert [curriculum_levels([1, 2, 3], 0, i) for i in range(3)] == [[1, 2, 3]] * 3
    assert [curriculum_levels([1, 2, 3], 2, i) for i in range(7)] == [[1], [1], [1, 2], [1, 2], [1, 2, 3],
                                                                     [1, 2, 3], [1, 2, 3]]
    problems = star.iteration_problems(TASK, 0, 0, 40, curriculum_levels([1, 2], 1, 0))
    assert problems and {p.level for p in problems} == {1}
