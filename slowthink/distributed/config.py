"""The config block of a trainer that can run its rollout workers (and learners) as Ray actors (``--ray``)."""

from __future__ import annotations

import dataclasses

from ..config import ConfigBlock, arg, check_non_negative, check_positive, require


@dataclasses.dataclass
class RayConfig(ConfigBlock):
    ray: str = arg("", "run rollout workers as Ray actors: 'local' starts a Ray on this machine, else the address "
                   "of a running head (HOST:6379 or ray://HOST:10001); empty: no Ray (one process)")
    rollout_workers: int = arg(2, "--ray: rollout worker actors (each its own engine and copy of the weights)")
    learners: int = arg(1, "--ray: learner actors computing each gradient together (torch.distributed all-reduce; "
                        "1: the driver learns)")
    worker_cpus: float = arg(1.0, "--ray: CPUs reserved per rollout worker and per learner")
    worker_gpus: float = arg(0.0, "--ray: GPUs per rollout worker and per learner (fractions share a GPU)")
    worker_timeout_s: float = arg(600.0, "--ray: a worker that has not returned its problems after this long is "
                                  "replaced and its problems reassigned")
    max_staleness: int = arg(1, "--ray with async_rollout: the learner trains step v on samples of weights version "
                             ">= v - max_staleness while the workers sample ahead")

    def __post_init__(self):
        super().__post_init__()
        check_positive(self, "rollout_workers", "learners", "worker_timeout_s", "max_staleness")
        check_non_negative(self, "worker_cpus", "worker_gpus")
        for name in ("learners", "max_staleness"):
            require(bool(self.ray) or getattr(self, name) == 1, name, "needs --ray (one process has one learner and "
                    "samples at most one step ahead)")
