"""What a trainer calls with ``--ray``: connect, start the rollout pool (and the async sampler and learner group
the config asks for), and have the run close them."""

from __future__ import annotations

import os

from .cluster import connect, ray_module


def ray_rollouts(run, cfg, model, tok, task, reward_fn, seed_name: str, pending=None, worker_kw: dict | None = None):
    """``(pool, ahead, learners)`` for a run with ``cfg.ray`` set: the ``RayRolloutPool`` that stands in for the
    local rollout worker, a ``StaleRollouts`` when ``cfg.async_rollout`` (its checkpointed ``pending`` batch
    first; None otherwise), and a ``LearnerGroup`` when ``cfg.learners > 1`` (None: the driver learns). The run
    closes them when it ends (``ray_pool``)."""
    from .learners import LearnerGroup
    from .staleness import StaleRollouts

    pool = ray_pool(run, cfg, model, tok, task, reward_fn, worker_kw)
    ahead = learners = None
    if getattr(cfg, "async_rollout", False):
        ahead = StaleRollouts(pool, task, cfg, seed_name, cfg.max_staleness)
        if pending is not None:
            ahead.put(run.start, pending)
        run.on_close(ahead.close)
    if cfg.learners > 1:
        learners = LearnerGroup(model, cfg, tok.pad_token_id, cfg.learners, cfg.worker_cpus, cfg.worker_gpus)
        run.on_close(learners.close)
    return pool, ahead, learners


def ray_pool(run, cfg, model, tok, task, reward_fn, worker_kw: dict | None = None):
    """A ``RayRolloutPool`` of ``cfg.rollout_workers`` actors, connecting to (or starting) Ray first; the run
    kills its actors when it closes, and shuts Ray down then if this call started it."""
    from .rollout_pool import RayRolloutPool

    learners = getattr(cfg, "learners", 1)
    need = cfg.rollout_workers * cfg.worker_cpus + (learners * cfg.worker_cpus if learners > 1 else 0)
    started = connect(cfg.ray, num_cpus=max(os.cpu_count() or 1, int(need + 0.999)))
    pool = RayRolloutPool(model, tok, task, reward_fn, cfg.rollout_workers, cfg.worker_cpus, cfg.worker_gpus,
                          cfg.worker_timeout_s, worker_kw)
    run.on_close(pool.close)
    if started:  # a learner group or async sampler closed after this finds Ray gone: their close() allows it
        run.on_close(ray_module().shutdown)
    return pool
