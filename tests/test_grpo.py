"""GRPO: learner log-probs match the engine's, training raises the reward, dynamic sampling, exact resume,
halting on NaN / entropy collapse, config validation; rewards and the local rollout worker."""

import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from slowthink.config import ConfigError
from slowthink.engine import Completion, SamplingParams
from slowthink.models import build_model, load_model
from slowthink.rl import grpo, rloo
from slowthink.train.loop import TrainingHalted
from slowthink.rl.batch import Row, SharedChunks, micro_batches, rollout_stats, sample_step
from slowthink.rl.grpo import (GRPOConfig, collate_rows, drop_flat_groups, learner_logprobs, make_rows,
                               train)
from slowthink.rl.losses import group_advantages, rloo_advantages
from slowthink.rl.rewards import RewardFn, soft_overlong_penalty
from slowthink.rl.rollout import Group, LocalRolloutWorker
from slowthink.train.runlog import read_metrics
from slowthink.tasks import Arithmetic, Problem
from slowthink.tokenizer import render_prompt
from eval_helpers import greedy_accuracy

FAST = dict(levels=[1], mode="system1", max_new_tokens=6, eval_every=0, eval_per_level=0, checkpoint_every=1000,
            threads=1, progress=False)


pytestmark = pytest.mark.usefixtures("one_thread")




def _weights(folder) -> dict[str, torch.Tensor]:
    return load_file(str(next(Path(folder).glob("*.safetensors"))))


# -- (a) learner log-probs == engine log-probs ----------------------------------------------------------

def test_learner_logprobs_match_engine_at_temperature(sft_model):
    model, tok = load_model(sft_model)
    task = Arithmetic(op="add", max_level=2)
    worker = LocalRolloutWorker(model, tok, task, RewardFn())
    worker.load_weights(model.state_dict(), version=0)
    rng = random.Random(0)
    problems = [task.sample_split(rng, lv, "train") for lv in (1, 2, 2, 1)]  # prompts of different lengths
    groups = worker.rollout(problems, "system2", 4, SamplingParams(max_tokens=20, temperature=0.7, seed=3))
    rows = make_rows(groups, torch.zeros(4, 4), overlong_filter=False)
    assert len({len(r.token_ids) for r in rows}) > 1, "completions of different lengths (padding is exercised)"
    batch = collate_rows(rows, tok.pad_token_id, "cpu")
    with torch.no_grad():
        learner = learner_logprobs(model, batch, temperature=0.7)
    torch.testing.assert_close(learner, batch["old_logp"], atol=1e-4, rtol=0)
    with torch.no_grad():  # at T=1 they would differ: the temperature really is applied on both sides
        untempered = learner_logprobs(model, batch, temperature=1.0)
    assert (untempered - batch["old_logp"]).abs().max() > 1e-2


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_shared_prompt_forward_equals_whole_rows(tok, tiny_model, kind):
    """Each distinct prompt once, its cache indexed out to its rows: same logits and same gradient as
    running every row's prompt + completion (prompts of 3 lengths, completions of 1 to 9 tokens)."""
    import copy

    from transformers import GPT2Config, GPT2LMHeadModel

    from slowthink.rl.batch import completion_logits
    from slowthink.rl.losses import token_logprobs

    if kind == "llama":
        model = copy.deepcopy(tiny_model)
    else:
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=64, n_layer=2, n_head=2, n_positions=64,
                                           pad_token_id=tok.pad_token_id)).eval()  # no dropout: same noise
    g = torch.Generator().manual_seed(1)
    ids = lambda n: torch.randint(5, len(tok), (n,), generator=g).tolist()  # noqa: E731
    prompts = [ids(7), ids(4), ids(11), ids(5)]
    rows = [Row(prompts[i], ids(n), [0.0] * n, float(a), True)
            for i, n, a in [(0, 5, 1.0), (1, 9, -0.5), (0, 3, 0.3), (2, 1, 2.0), (1, 2, 0.7), (2, 6, -1.0),
                            (0, 8, 0.1), (3, 4, 1.5)]]
    batch = collate_rows(rows, tok.pad_token_id, "cpu")
    assert batch["prompt_ids"].shape[0] == 4 and batch["src"].tolist() == [0, 1, 0, 2, 1, 2, 0, 3]
    shapes = []
    hook = model.register_forward_pre_hook(lambda m, a, kw: shapes.append(tuple(kw["input_ids"].shape)),
                                           with_kwargs=True)
    out = {}
    for share in (True, False):
        model.zero_grad()
        logits = completion_logits(model, batch, 0.7, share_prompts=share)
        logp = token_logprobs(logits, batch["tokens"])
        (logp * batch["real"] * batch["advantages"][:, None]).sum().backward()
        out[share] = (logits[batch["real"]], {n: p.grad.clone() for n, p in model.named_parameters()})
    hook.remove()
    assert shapes[:2] == [(4, 11), (8, 8)] and shapes[2] == (8, 17)  # shared: prompts, then completions
    torch.testing.assert_close(out[True][0], out[False][0], atol=2e-5, rtol=1e-4)
    for name, grad in out[False][1].items():
        torch.testing.assert_close(out[True][1][name], grad, atol=2e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("loss_agg", ["token_mean", "sequence_mean", "constant_normalizer"])
def test_learner_skips_zero_advantage_rows_without_changing_the_gradient(sft_model, loss_agg):
    model, tok = load_model(sft_model)
    task = Arithmetic(op="add", max_level=2)
    worker = LocalRolloutWorker(model, tok, task, RewardFn())
    worker.load_weights(model.state_dict(), version=0)
    rng = random.Random(1)
    problems = [task.sample_split(rng, lv, "train") for lv in (1, 2, 2, 1)]
    groups = worker.rollout(problems, "system2", 4, SamplingParams(max_tokens=20, temperature=1.0, seed=3))
    rows = make_rows(groups, torch.zeros(4, 4), overlong_filter=False)
    gen = torch.Generator().manual_seed(0)
    for i, r in enumerate(rows):  # the second group's rows stay at 0, as a flat group's would
        r.advantage = 0.0 if 4 <= i < 8 else float(torch.randn((), generator=gen))
    cfg = GRPOConfig(init=sft_model, loss_agg=loss_agg, max_new_tokens=20, temperature=1.0)
    grads, stats = [], []
    for skip in (True, False):
        model.zero_grad(set_to_none=True)
        stats.append(grpo.learner_update(model, None, rows, cfg, tok.pad_token_id, skip_zero_advantage=skip))
        grads.append([p.grad.clone() for p in model.parameters()])
    assert stats[0]["learner_rows"] == 12 and stats[1]["learner_rows"] == 16
    assert stats[0]["loss"] == pytest.approx(stats[1]["loss"], abs=1e-6)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-7, rtol=1e-5)
    assert any(g.abs().sum() > 0 for g in grads[0])
    # Every row flat: no forward at all, and a zero gradient on every parameter (AdamW still steps).
    model.zero_grad(set_to_none=True)
    flat = make_rows(groups, torch.zeros(4, 4), overlong_filter=False)
    assert grpo.learner_update(model, None, flat, cfg, tok.pad_token_id)["learner_rows"] == 0
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())


def _linear_chunks():
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 3)
    chunks = [torch.randn(n, 8) for n in (5, 3, 7, 2, 4)]

    def compute(x):
        return model(x).pow(2).mean() * len(x), {"rows": len(x)}
    return model, chunks, compute


def test_shared_chunks_add_gradients_in_chunk_order_whichever_thread_computes_them():
    import threading

    model, chunks, compute = _linear_chunks()
    for x in chunks:  # the reference: one thread, backward() accumulating in order
        compute(x)[0].backward()
    reference = [p.grad.clone() for p in model.parameters()]

    # A helper thread claims chunk 0 first and is slow with it, so the owner computes chunks 1-4 and must
    # hold their gradients until chunk 0's is added.
    model.zero_grad(set_to_none=True)
    claimed, go = threading.Event(), threading.Event()

    def slow_for_the_helper(x):
        if threading.current_thread() is not threading.main_thread() and not claimed.is_set():
            claimed.set()
            go.wait(10)
        return compute(x)
    shared = SharedChunks(chunks, slow_for_the_helper, list(model.parameters()))
    helper = threading.Thread(target=shared.work)
    helper.start()
    assert claimed.wait(10)
    threading.Timer(0.2, go.set).start()
    stats = shared.finish()
    helper.join()
    assert [s["rows"] for s in stats] == [5, 3, 7, 2, 4]  # chunk order, not completion order
    assert all(torch.equal(p.grad, r) for p, r in zip(model.parameters(), reference))


def test_shared_chunks_raise_a_helpers_error_in_the_owner():
    import threading

    model, chunks, compute = _linear_chunks()

    def fails_on_chunk_2(x):
        if len(x) == 7:
            raise ValueError("chunk 2 broke")
        return compute(x)
    shared = SharedChunks(chunks, fails_on_chunk_2, list(model.parameters()))
    helper = threading.Thread(target=shared.work)
    helper.start()
    with pytest.raises(ValueError, match="chunk 2 broke"):
        shared.finish()
    helper.join()


def test_micro_batches_leave_a_separate_tail_for_a_late_thread():
    rows = [Row([1], [2] * n, [0.0] * n, 1.0, True) for n in (5, 1, 9, 3, 7, 2, 8, 4, 6, 10)]
    sizes = lambda chunks: [[len(r.token_ids) for r in c] for c in chunks]  # noqa: E731
    assert sizes(micro_batches(rows, 0)) == [list(range(1, 11))]
    assert sizes(micro_batches(rows, 0, tail_share=0.2)) == [list(range(1, 9)), [9, 10]]
    assert sizes(micro_batches(rows, 3, tail_share=0.4)) == [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10]]
    assert sizes(micro_batches(rows[:1], 0, tail_share=0.9)) == [[5]]  # never an empty chunk


# -- (b) a few steps raise the reward -----------------------------------------------------------------

def test_grpo_moves_parameters_and_raises_reward(sft_model, tmp_path):
    # The reward here is correctness + a format bonus of 1.0. Correctness alone barely moves in a few
    # steps on a tiny model (measured: sampled pass rate +0.02..0.08 after 30 steps, noisy), but being
    # well formed is one skill shared by every problem, and it rises within ~5 steps for every seed
    # tried (0-3: reward of the first 3 steps 0.81-0.89, last 3 steps 0.94-0.97).
    cfg = GRPOConfig(out=str(tmp_path / "run"), init=sft_model, steps=10, prompts_per_step=16, group_size=8,
                     temperature=1.0, lr=1e-3, format_reward=1.0, seed=0, **{**FAST, "eval_per_level": 4})
    task = Arithmetic(op="add", max_level=2)
    run = train(cfg, task=task)
    before, after = _weights(sft_model), _weights(run / "model")
    assert all(not torch.equal(before[k], after[k]) for k in before), "every tensor was updated"
    rows = [r for r in read_metrics(run) if "reward_mean" in r]
    assert [r["step"] for r in rows] == list(range(1, 11))
    first, last = (sum(r["reward_mean"] for r in rs) / 3 for rs in (rows[:3], rows[-3:]))
    assert last >= first + 0.05, (first, last)
    assert sum(r["well_formed"] for r in rows[-3:]) > sum(r["well_formed"] for r in rows[:3])
    # One update per batch: the learner's ratio to the engine's log-probs is 1, so the clip never binds.
    assert all(r["clip_frac"] == 0.0 and abs(r["approx_kl"]) < 1e-6 for r in rows)
    for key in ("reward_std", "pass_rate", "zero_var_groups", "response_len", "entropy", "grad_norm", "lr",
                "samples_per_s"):
        assert key in rows[-1], key
    evals = [r for r in read_metrics(run) if "eval/system1_pass@1" in r]
    assert [r["step"] for r in evals] == [0, 10]  # the starting model's held-out accuracy, then the trained one's
    heldout = task.heldout_set(4, tuple(cfg.levels))
    assert [r["eval/system1_pass@1"] for r in evals] == [
        greedy_accuracy(m, task, heldout, "system1", cfg.max_new_tokens) for m in (sft_model, run / "model")]
    assert rows[-1]["samples"] == 10 * cfg.prompts_per_step * cfg.group_size
    assert (run / "ckpt" / "state.pt").exists() and list((run / "tb").iterdir())


# -- (c) dynamic sampling --------------------------------------------------------------------------------

def _group(task, texts: list[str]) -> Group:
    p = Problem(key="5+7", level=1, question="5+7", answer="12", data={"a": 5, "b": 7, "op": "add"})
    comps = [Completion([1, 2], [-0.1, -0.2], t, "stop") for t in texts]
    return Group(p, "system1", [3, 4], comps, [RewardFn()(task, p, t, 2, "system1") for t in texts])


def test_dynamic_sampling_drops_groups_with_equal_rewards():
    task = Arithmetic(op="add")
    all_right, all_wrong = _group(task, ["12"] * 3), _group(task, ["1", "x", "13"])
    mixed = _group(task, ["12", "3", "12"])
    assert all_right.all_equal and all_wrong.all_equal and not mixed.all_equal
    kept = drop_flat_groups([all_right, mixed, all_wrong])
    assert kept == [mixed]
    adv = group_advantages(torch.tensor([g.totals for g in (all_right, mixed, all_wrong)]))
    assert adv[0].abs().sum() == 0 and adv[2].abs().sum() == 0 and adv[1].abs().sum() > 0
    for advantages in (group_advantages, rloo_advantages):  # a flat group's rows reach the learner as exact 0
        rows = make_rows([all_right, mixed], advantages(torch.tensor([all_right.totals, mixed.totals])), False)
        assert [r.advantage for r in rows[:3]] == [0.0] * 3 and any(r.advantage != 0.0 for r in rows[3:])


# -- (d) resume is exact -------------------------------------------------------------------------------

def test_resume_matches_uninterrupted_run(sft_model, tmp_path):
    # Exercises the optional paths too: KL to the reference, 2 inner epochs, micro-batches, sequence-mean
    # aggregation, overlong filter and penalty, dynamic sampling.
    # max_new_tokens=2 cuts every two-digit answer ("12" + end of turn is 3 tokens).
    common = dict(init=sft_model, prompts_per_step=4, group_size=4, lr=1e-3, kl_coef=0.1, epochs_per_step=2,
                  micro_batch_size=5, loss_agg="sequence_mean", overlong_filter=True, overlong_buffer=1,
                  dynamic_sampling=True, **{**FAST, "max_new_tokens": 2})
    task = Arithmetic(op="add", max_level=2)
    straight = train(GRPOConfig(out=str(tmp_path / "a"), steps=4, **common), task=task)
    train(GRPOConfig(out=str(tmp_path / "b"), steps=2, **common), task=task)
    resumed = train(GRPOConfig(out=str(tmp_path / "b"), steps=4, resume=True, **common), task=task)
    a, b = _weights(straight / "model"), _weights(resumed / "model")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], _weights(sft_model)[k]) for k in a), "training did something"
    rows = [r for r in read_metrics(resumed) if "reward_mean" in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all("kl_ref" in r for r in rows if r["groups_used"])
    assert any(r["truncated"] > 0 for r in rows) and any(r["groups_used"] for r in rows)


@pytest.mark.parametrize("sampler_share", [0.0, 0.5])
def test_async_rollout_samples_from_the_previous_weights_and_resumes_exactly_after_a_kill(sft_model, tmp_path,
                                                                                         monkeypatch, sampler_share):
    # sampler_share 0.5: the sampler's thread computes the learner's second micro-batch whenever it is free
    # first; the weights must not depend on which thread took it.
    common = dict(init=sft_model, prompts_per_step=4, group_size=4, lr=1e-3, async_rollout=True,
                  sampler_share=sampler_share, **{**FAST, "max_new_tokens": 4, "checkpoint_every": 2})
    task = Arithmetic(op="add", max_level=2)
    trained = []  # each step's batch, as the trainer sees it
    monkeypatch.setattr(grpo, "rollout_stats", lambda groups: trained.append(groups) or rollout_stats(groups))
    straight = train(GRPOConfig(out=str(tmp_path / "a"), steps=5, **common), task=task)
    rows = [r for r in read_metrics(straight) if "reward_mean" in r]
    assert [r["policy_lag"] for r in rows] == [0, 1, 1, 1, 1]

    # Step 2's batch is what the init weights sample for step 2's problems and seed, not what the weights
    # after step 1's update sample.
    def tokens_of_step_2(init):
        model, tok = load_model(init)
        worker = LocalRolloutWorker(model, tok, task, RewardFn())
        worker.load_weights(None, version=0)
        groups = sample_step(worker, task, GRPOConfig(out=str(tmp_path / "x"), steps=5, **common), 1, "grpo")
        return [c.token_ids for g in groups for c in g.completions]

    after_one = train(GRPOConfig(out=str(tmp_path / "one"), steps=1, **common), task=task) / "model"
    assert [c.token_ids for g in trained[1] for c in g.completions] == tokens_of_step_2(sft_model) \
        != tokens_of_step_2(str(after_one))

    real, calls = grpo.learner_update, []

    def killed_in_step_4(*args, **kw):  # after the checkpoint at step 2, with step 5's batch in flight
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(grpo, "learner_update", killed_in_step_4)
    with pytest.raises(KeyboardInterrupt):
        train(GRPOConfig(out=str(tmp_path / "b"), steps=5, **common), task=task)
    monkeypatch.setattr(grpo, "learner_update", real)
    resumed = train(GRPOConfig(out=str(tmp_path / "b"), steps=5, **common), task=task)
    a, b = _weights(straight / "model"), _weights(resumed / "model")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["policy_lag"] for r in read_metrics(resumed) if "reward_mean" in r] == [0, 1, 1, 1, 1]
    # The two threads split the configured count while training; the caller gets it back.
    train(GRPOConfig(out=str(tmp_path / "c"), steps=2, **{**common, "threads": 2}), task=task)
    assert torch.get_num_threads() == 2


def test_rloo_uses_leave_one_out_advantages_and_learns(sft_model, tmp_path, monkeypatch):
    seen = []
    real = rloo.rloo_advantages
    monkeypatch.setattr(rloo, "rloo_advantages", lambda r: seen.append(r.clone()) or real(r))
    cfg = rloo.RLOOConfig(out=str(tmp_path / "run"), init=sft_model, steps=10, prompts_per_step=16, group_size=8,
                          lr=1e-3, format_reward=1.0, seed=0, **FAST)
    run = rloo.train(cfg, task=Arithmetic(op="add", max_level=2))
    assert len(seen) == 10 and seen[0].shape == (16, 8)
    r = seen[0][0]
    assert torch.allclose(real(seen[0])[0], r - (r.sum() - r) / 7)  # each sample against the other 7
    rows = [m for m in read_metrics(run) if "reward_mean" in m]
    first, last = (sum(m["reward_mean"] for m in ms) / 3 for ms in (rows[:3], rows[-3:]))
    assert last >= first + 0.05, (first, last)
    assert (run / "config.json").read_text().count('"trainer": "rloo"') == 1
    with pytest.raises(ConfigError, match="'scale_by_std'"):
        rloo.RLOOConfig(init=sft_model, scale_by_std=False)


def test_time_budget_ends_the_run_early_with_a_final_eval_and_model(sft_model, tmp_path):
    cfg = GRPOConfig(out=str(tmp_path / "run"), init=sft_model, steps=1000, prompts_per_step=4, group_size=4,
                     time_budget_s=0.5, **{**FAST, "eval_per_level": 2})
    run = train(cfg, task=Arithmetic(op="add", max_level=2))
    rows = read_metrics(run)
    last = max(r["step"] for r in rows)
    assert 1 <= last < 1000 and (run / "model").exists()
    assert [r["step"] for r in rows if "eval/system1_pass@1" in r] == [0, last]
    assert torch.load(run / "ckpt" / "state.pt", weights_only=False)["step"] == last


# -- halting -----------------------------------------------------------------------------------------

def test_nan_loss_stops_and_keeps_last_good_checkpoint(sft_model, tmp_path, monkeypatch):
    real, calls = grpo.OBJECTIVES["ppo_clip"], []

    def nan_on_second_step(*args, **kw):
        calls.append(1)
        out = real(*args, **kw)
        return out * float("nan") if len(calls) > 1 else out

    monkeypatch.setitem(grpo.OBJECTIVES, "ppo_clip", nan_on_second_step)
    cfg = GRPOConfig(out=str(tmp_path / "run"), init=sft_model, steps=3, prompts_per_step=4, group_size=4,
                     **{**FAST, "checkpoint_every": 1})
    with pytest.raises(TrainingHalted, match="non-finite loss.*step 2.*ckpt"):
        train(cfg, task=Arithmetic(op="add", max_level=2))
    assert torch.load(tmp_path / "run" / "ckpt" / "state.pt", weights_only=False)["step"] == 1
    assert not (tmp_path / "run" / "model").exists()


def test_entropy_collapse_stops(sft_model, tmp_path):
    cfg = GRPOConfig(out=str(tmp_path / "run"), init=sft_model, steps=5, prompts_per_step=4, group_size=4,
                     entropy_floor=100.0, entropy_patience=2, **{**FAST, "checkpoint_every": 1})
    with pytest.raises(TrainingHalted, match="entropy collapse.*step 2"):
        train(cfg, task=Arithmetic(op="add", max_level=2))
    assert torch.load(tmp_path / "run" / "ckpt" / "state.pt", weights_only=False)["step"] == 1


# -- (e) config validation -------------------------------------------------------------------------------

def test_config_errors(sft_model, tmp_path):
    with pytest.raises(ConfigError, match="'init'.*give the model folder"):
        GRPOConfig()
    with pytest.raises(ConfigError, match="'init'.*not a model folder"):
        GRPOConfig(init=str(tmp_path / "nowhere"))
    for bad, field in [(dict(clip_low=-0.1), "clip_low"), (dict(clip_high=-0.2), "clip_high"),
                       (dict(loss_agg="mean"), "loss_agg"), (dict(group_size=1), "group_size"),
                       (dict(temperature=0.0), "temperature"), (dict(mode="fast"), "mode"),
                       (dict(overlong_buffer=99, max_new_tokens=8), "overlong_buffer"),
                       (dict(sampler_share=1.0), "sampler_share")]:
        with pytest.raises(ConfigError, match=f"'{field}'"):
            GRPOConfig(init=sft_model, **bad)
    with pytest.raises(ConfigError, match="sequence_mean"):  # the error lists the valid choices
        GRPOConfig(init=sft_model, loss_agg="mean")
    assert set(grpo.AGGREGATIONS) == {"sequence_mean", "token_mean", "constant_normalizer"}


# -- rewards and the rollout worker ----------------------------------------------------------------------

def test_rewards_compose_and_reject_several_answers():
    task = Arithmetic(op="add")
    p = Problem(key="5+7", level=1, question="5+7", answer="12", data={"a": 5, "b": 7, "op": "add"})
    fn = RewardFn(format_bonus=0.1)
    right = fn(task, p, "12", 2, "system1")
    assert right.total == pytest.approx(1.1) and right.correctness == 1.0 and right.format == 0.1
    for text, mode in [("12 13", "system1"), ("5+7\n</think>\n\n12 13", "system2")]:
        r = fn(task, p, text, 5, mode)
        assert r.correctness == 0.0 and r.total == 0.0 and not r.score.correct, text
    assert fn(task, p, "13", 2, "system1").total == pytest.approx(0.1)  # well formed, wrong
    # DAPO soft overlong punishment: max 10 tokens, buffer 4 -> free up to 6, then linear to -1 at 10.
    assert [soft_overlong_penalty(n, 10, 4) for n in (5, 6, 8, 10, 12)] == [0.0, 0.0, -0.5, -1.0, -1.0]
    assert soft_overlong_penalty(10, 10, 0) == 0.0
    long = RewardFn(format_bonus=0.1, overlong_buffer=4, max_tokens=10)(task, p, "12", 9, "system1")
    assert long.total == pytest.approx(1.1 - 0.75) and long.length == pytest.approx(-0.75)


def test_verify_steps_takes_credit_from_right_answers_reached_by_wrong_steps():
    task = Arithmetic(op="mul")
    p = task.sample(random.Random(3), 2)
    ref = task.reference(p, "system2").completion()
    lines = ref.split("\n")
    # Corrupt one digit of the first partial-product line; the final answer stays right.
    i = next(k for k, line in enumerate(lines) if ":" in line)
    head, cells = lines[i].split(":", 1)
    j = next(k for k, ch in enumerate(cells) if ch.isdigit())
    lines[i] = head + ":" + cells[:j] + str((int(cells[j]) + 1) % 10) + cells[j + 1:]
    wrong_step = "\n".join(lines)
    outcome, process = RewardFn(), RewardFn(verify_steps=True)
    assert outcome(task, p, wrong_step, 50).correctness == 1.0  # outcome reward cannot tell
    r = process(task, p, wrong_step, 50)
    assert r.correctness == 0.0 and r.steps_ok is False and r.score.correct
    ok = process(task, p, ref, 50)
    assert ok.correctness == 1.0 and ok.steps_ok is True
    assert process(task, p, task.reference(p, "system1").completion(), 5, "system1").correctness == 1.0
    no_steps = Arithmetic(op="mul")
    no_steps.step_labels = lambda problem, reasoning: None
    with pytest.raises(ValueError, match="cannot label steps"):
        process(no_steps, p, ref, 50)


def test_local_worker_versions_seeds_and_weight_loading(tok):
    model = build_model("tiny", tok, seed=1)
    task = Arithmetic(op="add", max_level=1)
    worker = LocalRolloutWorker(model, tok, task, RewardFn())
    problems = [task.sample(random.Random(i), 1) for i in range(3)]
    sampling = SamplingParams(max_tokens=5, temperature=1.0, seed=7)
    with pytest.raises(RuntimeError, match="load_weights"):
        worker.rollout(problems, "system1", 2, sampling)
    worker.load_weights(model.state_dict(), version=3)
    g1 = worker.rollout(problems, "system1", 2, sampling)
    g2 = worker.rollout(problems, "system1", 2, sampling)
    assert [c.token_ids for g in g1 for c in g.completions] == [c.token_ids for g in g2 for c in g.completions]
    assert all(g.version == 3 and len(g.completions) == len(g.rewards) == 2 for g in g1)
    assert g1[0].prompt_ids == render_prompt(tok, task.prompt(problems[0], "system1"), "system1")
    with pytest.raises(ValueError, match="older"):
        worker.load_weights(None, version=2)
    other = build_model("tiny", tok, seed=2).state_dict()
    worker.load_weights(other, version=4)  # foreign weights are copied in
    assert torch.equal(model.model.embed_tokens.weight, other["model.embed_tokens.weight"])
