"""``LearnerGroup``: M Ray actors computing one gradient of the policy loss together (data parallel).

Each step the driver's weights go to every learner through the object store (``ray.put`` once), the batch's
rows are split into M shards, each learner computes its shard's share of the batch loss (normalised by the
whole batch's counts, ``grpo.batch_counts``) and its gradient, and the learners sum their gradients with
``torch.distributed.all_reduce`` (gloo on CPU, NCCL on GPU), the collective that DDP runs in its backward hooks.
Rank 0 returns the sum; the driver sets it as ``.grad``, clips and steps its optimizer as in a local run, so
the trainer keeps one code path (``update`` has ``grpo.learner_update``'s signature) and checkpoints stay the
driver's. The sum of the shard shares equals the one-learner gradient of the union batch (tested).

Not done: the DDP module wrapper (our forward reads the model's signature to share prompt KV caches, which
DDP's ``forward(*inputs, **kwargs)`` hides) and FSDP2 ``fully_shard`` (each learner holds a full replica, fine for
the models this project trains; big models would need it), and the optimizer step stays on the driver (the
gradient, the size of the model, comes back each step).
"""

from __future__ import annotations

import os
import socket

import torch

from .cluster import kill_actors, ray_module
from .rollout_pool import pack, unpack


class LearnerActor:
    def __init__(self, spec: dict, rank: int, world: int):
        torch.set_num_threads(spec["threads"])
        self.rank, self.world = rank, world
        self.device = spec["device"]
        self.model = spec["model"].to(self.device).train()
        self.cfg, self.pad_id = spec["cfg"], spec["pad_id"]

    def address(self) -> tuple[str, int]:
        """This node's address and a free port on it (rank 0 hosts the process group's rendezvous)."""
        ray = ray_module()
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return ray.util.get_node_ip_address(), port

    def join(self, host: str, port: int, backend: str) -> int:
        import torch.distributed as dist

        os.environ.update(MASTER_ADDR=host, MASTER_PORT=str(port))
        dist.init_process_group(backend, rank=self.rank, world_size=self.world)
        return self.rank

    def gradient(self, state: dict, rows, counts) -> tuple[list | None, dict]:
        """Load ``state``, compute this shard's gradient, all-reduce (sum) with the other learners; rank 0
        returns the summed gradient (CPU tensors, None for parameters without one) and every rank its stats."""
        import torch.distributed as dist

        from ..rl.grpo import learner_update

        if state:
            self.model.load_state_dict(unpack(state), strict=False)
        params = [p for p in self.model.parameters() if p.requires_grad]
        for p in params:
            p.grad = None
        stats = learner_update(self.model, None, rows, self.cfg, self.pad_id, counts=counts) if rows else \
            {"loss": 0.0, "learner_rows": 0, "rows": 0}
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        if self.rank != 0:
            return None, stats
        out, at = [], 0
        for p in params:
            out.append(flat[at:at + p.numel()].view_as(p).cpu())
            at += p.numel()
        return out, stats


def shards(rows: list, m: int) -> list[list]:
    """``rows`` as ``m`` contiguous shards of near-equal token counts (learners finish together)."""
    total = sum(len(r.token_ids) for r in rows) or 1
    out, at = [[] for _ in range(m)], 0
    for r in rows:
        out[min(m - 1, at * m // total)].append(r)
        at += len(r.token_ids)
    return out


class LearnerGroup:
    def __init__(self, model, cfg, pad_id: int, learners: int, cpus: float = 1.0, gpus: float = 0.0):
        ray = ray_module()
        if getattr(cfg, "kl_coef", 0) > 0:
            raise ValueError("learners > 1 with kl_coef > 0 is not supported (the learners hold no reference model)")
        self.ray, self.model = ray, model
        import copy

        spec = ray.put(dict(model=copy.deepcopy(model).cpu(), cfg=cfg, pad_id=pad_id, threads=max(1, int(cpus)),
                            device="cuda" if gpus > 0 else "cpu"))
        remote = ray.remote(num_cpus=cpus, num_gpus=gpus, max_restarts=0)(LearnerActor)
        self.actors = [remote.remote(spec, rank, learners) for rank in range(learners)]
        host, port = ray.get(self.actors[0].address.remote())
        ray.get([a.join.remote(host, port, "nccl" if gpus > 0 else "gloo") for a in self.actors])

    def update(self, model, ref_model, rows, cfg, pad_id: int, helper=None) -> dict[str, float]:
        """``grpo.learner_update`` over the group: the summed gradient lands in ``model``'s ``.grad``."""
        from ..rl.grpo import batch_counts

        counts = batch_counts(rows, cfg)
        state = self.ray.put(pack(model.state_dict()))  # byte arrays: read without a copy from the object store
        results = self.ray.get([a.gradient.remote(state, part, counts)
                                for a, part in zip(self.actors, shards(rows, len(self.actors)))])
        grads = results[0][0]
        for p, g in zip([p for p in model.parameters() if p.requires_grad], grads):
            p.grad = g.to(p.device)
        stats = [s for _, s in results]
        n = sum(s.get("learner_rows", 0) for s in stats) or 1
        out = {"loss": sum(s["loss"] for s in stats), "rows": len(rows),
               "learner_rows": sum(s.get("learner_rows", 0) for s in stats)}
        for k in ("entropy", "clip_frac", "approx_kl"):  # averaged over learners, weighted by the rows each ran
            if any(k in s for s in stats):
                out[k] = sum(s.get(k, 0.0) * s.get("learner_rows", 0) for s in stats) / n
        return out

    def close(self) -> None:
        kill_actors(self.actors)
