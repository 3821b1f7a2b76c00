"""RL beyond one process on Ray: rollout workers as Ray actors behind the ``RolloutWorker`` protocol, a learner
group running torch.distributed data parallel, bounded-staleness asynchronous rollouts, and the faults they
survive. Nothing here imports ray at module import time: a local run (no ``--ray``) never starts it.

- ``cluster``: connect to (or start) Ray, the loopback-only start used by tests and benchmarks;
- ``rollout_pool``: ``RayRolloutPool``, N actors each with its own engine; versioned weight sync through the object
  store; a killed or slow worker's problems are reassigned to a fresh actor;
- ``staleness``: ``StaleRollouts``, rollouts k steps ahead of the learner (version >= v - k trains step v);
- ``learners``: ``LearnerGroup``, M actors computing one gradient over a split batch (gloo / NCCL all-reduce);
- ``setup``: what a trainer calls to get its pool (and async sampler) from the config.

See docs/ray.md.
"""
