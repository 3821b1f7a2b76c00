"""The Ray checks, run by tests/test_ray.py in ONE subprocess inside a loopback-only network namespace (Ray starts
once, ~4 s). Usage: ray_checks.py SFT_MODEL_DIR OUT_DIR; prints one JSON line {check: "ok" | error text}."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path

import torch

from slowthink.chat import Mode


def weights(folder) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "model" / "model.safetensors"))


def metrics(folder) -> list[dict]:
    from slowthink.train.runlog import read_metrics

    return [m for m in read_metrics(Path(folder)) if "reward_mean" in m]


def grpo_cfg(sft, out, **kw):
    from slowthink.rl.grpo import GRPOConfig

    base = dict(init=sft, out=str(out), steps=1, prompts_per_step=4, group_size=4, max_new_tokens=12, lr=1e-3,
                eval_every=0, eval_per_level=0, checkpoint_every=1, progress=False, threads=1, seed=3,
                rollout_workers=2, worker_cpus=0.5)
    return GRPOConfig(**{**base, **kw})


def task():
    from slowthink.tasks import Arithmetic

    return Arithmetic(op="add", max_level=2)


def check_grpo_step_equals_local_then_versions_and_resume(sft, out):
    """One GRPO step through Ray equals the local step (same seed); the same command with more steps resumes
    from the checkpoint, syncs only what changed, and every sample carries the version that made it."""
    from slowthink.rl.grpo import train

    # SGD: the update is lr x gradient. (Adam divides by sqrt(v): a parameter whose gradient is ~0 moves by ~lr
    # on float noise, so Adam weights cannot be compared; the engines' log-probs differ in the last float bits
    # with the batch they were computed in.)
    sgd = dict(optimizer="sgd", lr=0.05)
    train(grpo_cfg(sft, out / "local", **sgd), task=task())
    train(grpo_cfg(sft, out / "ray", ray="local", **sgd), task=task())
    a, b = weights(out / "local"), weights(out / "ray")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=f"{k} differs after one step")
    ma, mb = metrics(out / "local")[0], metrics(out / "ray")[0]
    # the same samples: same rewards and lengths exactly; same loss and gradient up to float noise
    assert (ma["reward_mean"], ma["response_len"], ma["pass_rate"]) == \
        (mb["reward_mean"], mb["response_len"], mb["pass_rate"]), (ma, mb)
    assert abs(ma["loss"] - mb["loss"]) < 1e-5 and abs(ma["grad_norm"] - mb["grad_norm"]) < 1e-4, (ma, mb)
    assert mb["sync_tensors"] == 0 and "sync_s" in mb  # version 0 = the weights the actors started with
    # the learner "killed" after its step-1 checkpoint: the same command, 3 steps, continues at step 2
    assert torch.load(out / "ray" / "ckpt" / "state.pt", weights_only=False)["step"] == 1
    train(grpo_cfg(sft, out / "ray", ray="local", steps=3, **sgd), task=task())
    m = metrics(out / "ray")
    assert [x["step"] for x in m] == [1, 2, 3], m
    assert [x["policy_lag"] for x in m] == [0, 0, 0], m  # synchronous: every sample from the current version
    # new actors start from the checkpoint's weights (nothing to send at step 2); step 2's update moves at step 3
    assert m[1]["sync_tensors"] == 0 and m[2]["sync_tensors"] > 0 and m[2]["sync_mb"] > 0, m


def pool_and_problems(sft, workers=2, timeout_s=600.0):
    from slowthink.distributed.rollout_pool import RayRolloutPool
    from slowthink.engine import SamplingParams
    from slowthink.models import load_model
    from slowthink.rl.batch import sample_problems
    from slowthink.rl.rewards import RewardFn

    model, tok = load_model(sft)
    pool = RayRolloutPool(model, tok, task(), RewardFn(), workers, cpus=0.5, timeout_s=timeout_s)
    pool.load_weights(model.state_dict(), version=0)
    problems = sample_problems(task(), 0, 0, 4, [1])
    return pool, problems, SamplingParams(max_tokens=12, temperature=1.0, seed=11)


def as_data(groups):
    return [(g.problem.question, [c.token_ids for c in g.completions], g.totals, g.version) for g in groups]


def check_killed_and_slow_workers_are_replaced(sft, out):
    """A worker SIGKILLed mid-step, then a worker past the timeout, then one killed between steps: each time its
    slice is sampled again by a fresh worker, and the step's groups equal those of an undisturbed step (nothing
    lost, doubled or changed); a weight load that fails in a live worker is raised by the rollout after it."""
    pool, problems, sampling = pool_and_problems(sft, timeout_s=5.0)
    try:
        reference = as_data(pool.rollout(problems, Mode.SYSTEM1, 4, sampling))
        victim = pool.pids()[0]
        job = pool.submit(problems, Mode.SYSTEM1, 4, sampling)
        os.kill(victim, signal.SIGKILL)  # while its slice is being sampled
        assert as_data(pool.collect(job)) == reference, "a killed worker's problems came back different"
        m = pool.pop_metrics()
        assert m["replaced_workers"] >= 1 and m["reassigned_problems"] >= 2, m  # >=: see below
        assert victim not in pool.pids()
        slow = pool.pids()[1]
        pool.set_delay(1, 600.0)  # worker 1 now stalls ten minutes before each rollout
        assert as_data(pool.rollout(problems, Mode.SYSTEM1, 4, sampling)) == reference
        m = pool.pop_metrics()
        # >= : on a loaded machine the healthy worker may pass the timeout too; it is then replaced as well
        assert m["reassigned_problems"] >= 2 and m["replaced_workers"] >= 2, m
        assert slow not in pool.pids()
        between = pool.pids()[0]
        os.kill(between, signal.SIGKILL)  # between steps: the weight load, queued not waited for, meets a dead worker
        pool.load_weights(pool.model.state_dict(), version=0)
        assert as_data(pool.rollout(problems, Mode.SYSTEM1, 4, sampling)) == reference
        assert between not in pool.pids()
        bad = dict(pool.model.state_dict())
        key = next(n for n, p in pool.model.named_parameters() if p.requires_grad)
        bad[key] = torch.zeros(1)  # a load that raises in a live worker must not pass unnoticed behind the queue
        pool.load_weights(bad, version=1)
        try:
            pool.rollout(problems, Mode.SYSTEM1, 4, sampling)
        except Exception as e:  # noqa: BLE001 - Ray wraps the worker's error in its own exception type
            assert "size mismatch" in str(e), e
        else:
            raise AssertionError("a weight load that failed in a worker went unnoticed")
    finally:
        pool.close()


def check_async_staleness_bound(sft, out):
    from slowthink.rl.grpo import train

    folder = out / "async"
    train(grpo_cfg(sft, folder, ray="local", steps=3, async_rollout=True, max_staleness=2, is_correction="token"),
          task=task())
    m = metrics(folder)
    lags = [x["staleness_max"] for x in m]
    assert lags == [0, 1, 2], lags  # step 0 on-policy, then steps 1 and 2 both sampled by version 0: k = 2
    assert all("logp_diff_mean" in x and "is_weight_mean" in x for x in m), m[-1]


def check_two_learners_gradient(sft, out):
    from slowthink.distributed.learners import LearnerGroup
    from slowthink.models import load_model
    from slowthink.rl.batch import make_rows, sample_step
    from slowthink.rl.grpo import learner_update
    from slowthink.rl.losses import group_advantages
    from slowthink.rl.rewards import RewardFn
    from slowthink.rl.rollout import LocalRolloutWorker

    model, tok = load_model(sft)
    from slowthink.train.loop import resolve_task

    cfg, _ = resolve_task(grpo_cfg(sft, out / "unused", loss_agg="token_mean", prompts_per_step=8), task())
    worker = LocalRolloutWorker(model, tok, task(), RewardFn())
    worker.load_weights(None, 0)
    groups = sample_step(worker, task(), cfg, 0, "grpo")
    rows = make_rows(groups, group_advantages(torch.tensor([g.totals for g in groups])), False)
    assert any(r.advantage != 0 for r in rows), "no learning signal in the sampled batch"
    params = [p for p in model.parameters() if p.requires_grad]
    learner_update(model, None, rows, cfg, tok.pad_token_id)
    one = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    group = LearnerGroup(model, cfg, tok.pad_token_id, learners=2, cpus=0.5)
    try:
        group.update(model, None, rows, cfg, tok.pad_token_id)
    finally:
        group.close()
    for p, g in zip(params, one):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-6)


CHECKS = [check_grpo_step_equals_local_then_versions_and_resume, check_killed_and_slow_workers_are_replaced,
          check_async_staleness_bound, check_two_learners_gradient]


def main() -> None:
    import ray

    sft, out = sys.argv[1], Path(sys.argv[2])
    only = set(sys.argv[3:])
    torch.set_num_threads(1)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1")
    results = {}
    for check in CHECKS:
        name = check.__name__.removeprefix("check_")
        if only and name not in only:
            continue
        t0 = time.monotonic()
        try:
            check(sft, out)
            results[name] = "ok"
        except Exception:
            results[name] = traceback.format_exc()
        print(f"{name}: {time.monotonic() - t0:.1f}s", file=sys.stderr, flush=True)
    ray.shutdown()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
