"""``RayRolloutPool``: rollout workers as Ray actors, each with its own engine, behind the ``RolloutWorker``
protocol (``load_weights(state_dict, version)``, ``rollout(problems, mode, n, sampling) -> groups``), so a
trainer is handed the pool instead of a ``LocalRolloutWorker`` and its code does not change.

What moves where:
- weights: ``load_weights`` sends only the tensors that changed since the last sync among the model's trainable
  parameters and its buffers (with LoRA only the adapters move; a frozen base never does), as byte arrays
  (``pack``: Ray reads them back without a copy), ``ray.put`` once, every actor gets the same object reference and
  copies it into its model, queued ahead of the step's rollout rather than waited for. Each sync is timed
  (``sync_s``: the driver's share) and sized (``sync_mb``); each actor records the version it holds and stamps it
  on every ``Group`` it samples.
- problems: each actor is assigned a contiguous slice of the step's problems (its position in the whole list
  keeps the per-problem sampling seed, so a split rollout samples what one worker would); groups come back as
  plain picklable data and are put back in problem order.
- faults: an actor that dies (SIGKILL, node loss) or has not answered within ``timeout_s`` is killed and replaced
  by a fresh actor loaded with the current weights, and only its slice is sampled again. A slice's result is
  taken once, from the actor it is assigned to at that moment: a late answer from a replaced actor is dropped,
  so no sample is lost or counted twice (``rollout`` checks that every problem came back exactly once).
"""

from __future__ import annotations

import os
import time

import torch

from ..rl.rollout import Group, LocalRolloutWorker
from .cluster import kill_actors, ray_module


class RolloutActor:
    """One rollout worker in its own process (wrapped by ``ray.remote`` at pool start)."""

    def __init__(self, spec: dict):
        torch.set_num_threads(spec["threads"])
        model = spec["model"].to(spec["device"]).eval()
        self.worker = LocalRolloutWorker(model, spec["tok"], spec["task"], spec["reward_fn"], **spec["worker_kw"])
        self.delay_s = 0.0

    def pid(self) -> int:
        return os.getpid()

    def load_weights(self, packed: dict, version: int) -> int:
        """Copy the changed tensors (a subset of the state dict, ``pack``ed) into the model; returns the version
        held."""
        if packed:
            self.worker.model.load_state_dict(unpack(packed), strict=False)
        self.worker.load_weights(None, version)
        return version

    def set_delay(self, seconds: float) -> None:
        """Fault injection for tests and benchmarks: this worker stalls ``seconds`` before each rollout (a slow
        node)."""
        self.delay_s = seconds

    def rollout(self, problems, mode, n, sampling, first: int) -> list[Group]:
        if self.delay_s:
            time.sleep(self.delay_s)
        return self.worker.rollout(problems, mode, n, sampling, first=first)


def pack(tensors: dict[str, torch.Tensor]) -> dict:
    """Tensors as raw byte arrays with their dtype and shape. Ray serialises numpy arrays out of band and reads them
    back without a copy from its object store, where a pickled torch tensor is copied on both sides (measured on a
    3.3 MB tiny model: ``ray.put`` 7 ms and the actors' load 8 ms per sync). Bytes, not ``tensor.numpy()``, so
    bfloat16 (which numpy lacks) travels too. A contiguous CPU tensor's array shares its memory: ``ray.put`` it
    before the tensor changes (it copies into the store)."""
    return {k: (v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy(), v.dtype, tuple(v.shape))
            for k, v in tensors.items()}


def unpack(packed: dict) -> dict[str, torch.Tensor]:
    """``pack``'s tensors again (an empty one made anew: numpy gives it no usable stride); they share the
    (read-only) arrays' memory, so callers copy them into a model."""
    import warnings

    with warnings.catch_warnings():  # the object store's arrays are read-only; load_state_dict only reads them
        warnings.simplefilter("ignore", UserWarning)
        return {k: torch.from_numpy(a).view(dtype).reshape(shape) if a.size else torch.empty(shape, dtype=dtype)
                for k, (a, dtype, shape) in packed.items()}


def split(count: int, parts: int) -> list[tuple[int, int]]:
    """``count`` items as at most ``parts`` contiguous ``(start, stop)`` slices of near-equal size, none empty."""
    parts = max(1, min(parts, count))
    base, extra = divmod(count, parts)
    out, start = [], 0
    for i in range(parts):
        stop = start + base + (i < extra)
        out.append((start, stop))
        start = stop
    return out


class RayRolloutPool:
    def __init__(self, model, tok, task, reward_fn, workers: int, cpus: float = 1.0, gpus: float = 0.0,
                 timeout_s: float = 600.0, worker_kw: dict | None = None):
        ray = ray_module()
        self.ray, self.model, self.timeout_s = ray, model, timeout_s
        device = "cuda" if gpus > 0 else "cpu"
        cpu_model = model if next(model.parameters()).device.type == "cpu" else None
        if cpu_model is None:
            import copy
            cpu_model = copy.deepcopy(model).cpu()
        self.spec = ray.put(dict(model=cpu_model, tok=tok, task=task, reward_fn=reward_fn, device=device,
                                 worker_kw=dict(worker_kw or {}),
                                 threads=max(1, int(cpus))))
        self.remote = ray.remote(num_cpus=cpus, num_gpus=gpus, max_restarts=0, max_task_retries=0)(RolloutActor)
        # what every actor holds now (the model at pool start, then each sync's changes); a fresh actor gets it all
        self.sent = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        self.version = -1
        self.metrics: dict[str, float] = {}
        self.replaced = 0
        self.unchecked_loads: list = []  # queued weight loads not yet seen to succeed
        self.actors = [self.remote.remote(self.spec) for _ in range(workers)]
        for slot, actor in enumerate(self.actors):  # started (sync_s then measures the sync alone); one that dies
            if not self._ready(actor.pid.remote()):  # while starting is started again
                self.actors[slot] = self._fresh_actor()

    # -- weights

    def _synced(self) -> set[str]:
        """State-dict names that can change during training: trainable parameters and buffers."""
        names = {n for n, p in self.model.named_parameters() if p.requires_grad}
        return names | {n for n, _ in self.model.named_buffers()}

    def load_weights(self, state_dict: dict[str, torch.Tensor] | None, version: int, wait: bool = False) -> None:
        """Send the changed tensors to every actor. By default the copy is only queued behind each actor's
        earlier calls: an actor runs its calls in order, so a rollout submitted after it samples from these
        weights, and waiting here would cost a round trip per step. ``sync_s`` is then the driver's share (diff
        and ``ray.put``); an actor that died is replaced when its rollout fails, and a load that raised is
        raised by the next ``collect``. ``wait=True`` waits for every actor and replaces the dead ones now."""
        if version < self.version:
            raise ValueError(f"weights version {version} is older than the pool's version {self.version}")
        t0 = time.perf_counter()
        delta = {}
        if state_dict is not None:
            for k in self._synced() & state_dict.keys():
                v = state_dict[k].detach()
                if not torch.equal(v.cpu(), self.sent[k]):
                    delta[k] = v.cpu().clone()
        self.sent.update(delta)
        ref = self.ray.put(pack(delta))  # once; every actor gets the same reference
        self.version = version
        loads = [a.load_weights.remote(ref, version) for a in self.actors]
        if not wait:
            self.unchecked_loads += loads
        for slot, done in enumerate(loads if wait else []):
            if not self._ready(done):
                self._replace(slot)  # died between steps: a fresh actor gets the whole current state
        self.metrics.update(sync_s=time.perf_counter() - t0, sync_tensors=len(delta),
                            sync_mb=sum(v.numel() * v.element_size() for v in delta.values()) / 2**20)

    def _ready(self, ref) -> bool:
        """Whether the actor call ``ref`` finished (False: the actor died)."""
        try:
            self.ray.get(ref)
            return True
        except (self.ray.exceptions.RayActorError, self.ray.exceptions.WorkerCrashedError):
            return False

    def _fresh_actor(self, attempts: int = 5):
        """A replacement actor holding the current weights and version, waited for: its start-up (a process,
        imports, the model) must not count against the time its slice is given, or a slow start under load would
        be taken for a straggler again. One that dies while starting is started again (``attempts`` in all)."""
        state = self.ray.put(pack(self.sent))
        for _ in range(attempts):
            actor = self.remote.remote(self.spec)
            if self._ready(actor.load_weights.remote(state, self.version)):
                self.replaced += 1
                return actor
        raise RuntimeError(f"no rollout worker could be started in {attempts} attempts")

    def _replace(self, slot: int) -> None:
        kill_actors([self.actors[slot]])
        self.actors[slot] = self._fresh_actor()

    # -- rollout

    def submit(self, problems, mode, n, sampling) -> dict:
        """Start a rollout without waiting: each actor gets its slice (queued behind whatever it was given
        before, e.g. a weight sync). ``collect`` waits for it."""
        slices = split(len(problems), len(self.actors))
        pending = {}
        for slot, (start, stop) in enumerate(slices):
            ref = self.actors[slot].rollout.remote(problems[start:stop], mode, n, sampling, start)
            pending[ref] = (slot, start, stop, time.monotonic())
        return dict(problems=problems, mode=mode, n=n, sampling=sampling, pending=pending, done={}, reassigned=0)

    def collect(self, job: dict) -> list[Group]:
        """The groups of a submitted rollout in problem order, replacing dead or late actors on the way."""
        ray, pending, done = self.ray, job["pending"], job["done"]
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                slot, start, stop, _ = pending.pop(ref)
                try:
                    done[start] = ray.get(ref)
                except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError):
                    self._reassign(job, slot, start, stop)
            now = time.monotonic()
            for ref, (slot, start, stop, t0) in list(pending.items()):
                if now - t0 > self.timeout_s:  # a straggler: its slice goes to a fresh actor
                    del pending[ref]
                    self._reassign(job, slot, start, stop)
        groups = [g for start in sorted(done) for g in done[start]]
        if len(groups) != len(job["problems"]):
            raise RuntimeError(f"rollout returned {len(groups)} groups for {len(job['problems'])} problems")
        self.metrics.update(reassigned_problems=job["reassigned"], replaced_workers=self.replaced)
        self._raise_failed_loads()
        return groups

    def _raise_failed_loads(self) -> None:
        """Raise the error of a queued weight load that failed in a live actor (a rollout after it would have
        sampled from stale weights); loads still running stay queued, a dead actor's load is its rollout's
        concern (reassigned)."""
        if not self.unchecked_loads:
            return
        ray = self.ray
        done, self.unchecked_loads = ray.wait(self.unchecked_loads, num_returns=len(self.unchecked_loads), timeout=0)
        for ref in done:
            try:
                ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError):
                continue  # the actor died: its rollout fails and is reassigned to a fresh actor with all weights

    def _reassign(self, job: dict, slot: int, start: int, stop: int) -> None:
        self._replace(slot)
        ref = self.actors[slot].rollout.remote(job["problems"][start:stop], job["mode"], job["n"], job["sampling"],
                                               start)
        job["pending"][ref] = (slot, start, stop, time.monotonic())
        job["reassigned"] += stop - start

    def rollout(self, problems, mode, n, sampling) -> list[Group]:
        if self.version < 0:
            raise RuntimeError("load_weights() before rollout(): the pool does not know its policy version")
        return self.collect(self.submit(problems, mode, n, sampling))

    # -- bookkeeping

    def pop_metrics(self) -> dict[str, float]:
        """Sync and fault metrics since the last call (logged with the step)."""
        out, self.metrics = self.metrics, {}
        return out

    def pids(self) -> list[int]:
        return self.ray.get([a.pid.remote() for a in self.actors])

    def set_delay(self, slot: int, seconds: float) -> None:
        self.ray.get(self.actors[slot].set_delay.remote(seconds))

    def close(self) -> None:
        kill_actors(self.actors)
        self.actors = []
