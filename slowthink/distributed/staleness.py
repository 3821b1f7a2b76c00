"""``StaleRollouts``: asynchronous rollouts on a worker pool with bounded staleness k.

The learner trains step v on a batch sampled by weights of version >= v - k while the pool samples the next
ones. A Ray actor runs its calls in order, so queuing "load weights v" and then "sample step v + k" on every
actor pipelines without locks: the sample is taken from exactly those weights, whatever the timing, and a run is
as reproducible as a synchronous one. k = 1 is the one-step off-policy scheme of ``grpo.async_rollout``; the
importance ratio is against the sampler's log-probs (and with ``is_correction`` reweighted towards the
learner's, ``slowthink.rl.correction``).

Same interface as ``rl.batch.RolloutAhead`` (take / submit / peek / put / share / close), so the GRPO loop is
unchanged. A checkpoint keeps only the next step's batch (``peek``): a run resumed with k > 1 samples the other
in-flight steps again from the resumed weights (still within the bound).
"""

from __future__ import annotations

import time

from ..rl.batch import sample_problems
from ..engine import SamplingParams, derive_seed


class StaleRollouts:
    def __init__(self, pool, task, cfg, seed_name: str, max_staleness: int):
        if max_staleness < 1:
            raise ValueError(f"max_staleness must be >= 1 for asynchronous rollouts, got {max_staleness}")
        self.pool, self.task, self.cfg, self.seed_name, self.k = pool, task, cfg, seed_name, max_staleness
        self.jobs: dict[int, tuple] = {}  # step -> (job or ready groups, submit time)

    def _submit_step(self, step: int) -> None:
        cfg = self.cfg
        problems = sample_problems(self.task, cfg.seed, step, cfg.prompts_per_step, cfg.levels)
        sampling = SamplingParams(max_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                  top_p=getattr(cfg, "top_p", 1.0), seed=derive_seed(self.seed_name, cfg.seed, step))
        self.jobs[step] = (self.pool.submit(problems, cfg.mode, cfg.group_size, sampling), time.perf_counter())

    def submit(self, model, step: int) -> None:
        """The learner's current weights (version ``step - 1``) go to the pool, then every step up to
        ``step - 1 + k`` not yet in flight is queued behind them (staleness at most k)."""
        self.pool.load_weights(model.state_dict(), version=step - 1, wait=False)
        for s in range(step, min(step + self.k, self.cfg.steps)):
            if s not in self.jobs:
                self._submit_step(s)

    def put(self, step: int, groups) -> None:
        """A batch sampled earlier (a resumed run's checkpointed pending batch)."""
        self.jobs[step] = (groups, None)

    def _wait(self, step: int):
        job, t0 = self.jobs[step]
        if isinstance(job, dict):
            job = self.pool.collect(job)
            self.jobs[step] = (job, t0)
        return job, t0

    def peek(self, step: int):
        return self._wait(step)[0] if step in self.jobs else None

    def take(self, step: int):
        if step not in self.jobs:
            return None, None
        groups, t0 = self._wait(step)
        del self.jobs[step]
        return groups, None  # sampled in other processes: the wait is the trainer's rollout_s

    def share(self, shared) -> None:
        """The sampler runs elsewhere: the learner's thread computes all its micro-batches."""

    def close(self) -> None:
        self.jobs.clear()
