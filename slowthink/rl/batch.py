"""What the policy-gradient trainers (GRPO, RLOO, PPO) share: the problems of a step, the learner's
batch built from scored groups, the tempered log-probs of completion tokens, and rollout statistics.
"""

from __future__ import annotations

import inspect
import random
import threading
import time
from dataclasses import dataclass

import torch

from ..env.stats import tool_stats
from .losses import token_logprobs
from .rewards import is_truncated
from .rollout import Group


def on_policy_rollout(worker, task, model, cfg, step: int, seed_name: str) -> list[Group]:
    """One step's rollout: the learner's weights pushed to the worker (version ``step``), then
    ``sample_step``, checked to be on-policy."""
    worker.load_weights(model.state_dict(), version=step)
    groups = sample_step(worker, task, cfg, step, seed_name)
    if any(g.version != step for g in groups):
        raise RuntimeError(f"rollout at step {step} came from weights of another version (not on-policy)")
    return groups


def sample_step(worker, task, cfg, step: int, seed_name: str) -> list[Group]:
    """Step ``step``'s problems, n completions each at the configured temperature (seeded per step), from
    whatever weights the worker holds."""
    from ..engine import SamplingParams, derive_seed

    problems = sample_problems(task, cfg.seed, step, cfg.prompts_per_step, cfg.levels)
    sampling = SamplingParams(max_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                              top_p=getattr(cfg, "top_p", 1.0), seed=derive_seed(seed_name, cfg.seed, step))
    return worker.rollout(problems, cfg.mode, cfg.group_size, sampling)


class RolloutAhead:
    """Samples the next step's batch in a background thread while the learner trains on this one.

    ``submit(model, step)`` copies the learner's current weights (version ``step - 1``: before step
    ``step - 1``'s update) into the worker's own model, then samples step ``step`` on the thread;
    ``take(step)`` waits for it. The copy happens on the caller's thread before it returns, so which
    weights sample a batch never depends on timing: a run is as reproducible as an on-policy one. The
    thread runs the engine over a separate model, so it shares nothing mutable with the learner."""

    def __init__(self, worker, task, cfg, seed_name: str, threads: int):
        from concurrent.futures import ThreadPoolExecutor

        self.worker, self.task, self.cfg, self.seed_name = worker, task, cfg, seed_name
        # torch's intra-op thread count is per OS thread: the sampler's thread sets its own.
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="rollout",
                                       initializer=torch.set_num_threads, initargs=(threads,))
        self.pending = None  # (step, Future)

    def submit(self, model, step: int) -> None:
        if self.pending is not None:
            raise RuntimeError(f"step {self.pending[0]}'s rollout is still pending")
        self.worker.load_weights(model.state_dict(), version=step - 1)
        self.pending = (step, self.pool.submit(self._timed_sample, step))

    def _timed_sample(self, step: int) -> tuple[list[Group], float]:
        t0 = time.perf_counter()
        groups = sample_step(self.worker, self.task, self.cfg, step, self.seed_name)
        return groups, time.perf_counter() - t0

    def put(self, step: int, groups: list[Group]) -> None:
        """A batch sampled earlier (a resumed run's checkpointed pending batch)."""
        from concurrent.futures import Future

        future = Future()
        future.set_result((groups, None))
        self.pending = (step, future)

    def peek(self, step: int) -> list[Group] | None:
        """Step ``step``'s batch if one was submitted for it (None otherwise), waiting for it but leaving it
        pending; raises the thread's error."""
        return self.pending[1].result()[0] if self.pending is not None and self.pending[0] == step else None

    def take(self, step: int) -> tuple[list[Group] | None, float | None]:
        """``peek``, and the batch is no longer pending; also how long the thread took to sample it (None for
        a batch from a checkpoint)."""
        if self.pending is None or self.pending[0] != step:
            return None, None
        groups, seconds = self.pending[1].result()
        self.pending = None
        return groups, seconds

    def share(self, shared: SharedChunks) -> None:
        """The sampler's thread helps with the learner's micro-batches once its queued rollout is done."""
        self.pool.submit(shared.work)

    def close(self) -> None:
        """Wait for a running rollout (it uses the cores and the worker's model) and stop the thread."""
        if self.pending is not None:
            self.pending[1].exception()  # waits; an error in a batch nobody will use is dropped
            self.pending = None
        self.pool.shutdown(wait=True)


def sample_problems(task, seed: int, step: int, count: int, levels: list[int]) -> list:
    """The problems of one step: a pure function of ``(seed, step)``; held-out problems excluded."""
    rng = random.Random(f"grpo-{seed}-{step}")  # name kept: resumed runs see the same problems
    return [task.sample_split(rng, rng.choice(levels), "train") for _ in range(count)]


@dataclass
class Row:
    prompt_ids: list[int]
    token_ids: list[int]
    old_logprobs: list[float]
    advantage: float
    in_loss: bool  # False: overlong-filtered (still scored, no gradient)
    # per completion token, 1 where the model wrote it and 0 on a tool response (context the learner feeds but never
    # scores: out of the loss, the importance ratio and the KL); None: every token is the model's
    mask: list[int] | None = None

    @property
    def loss_tokens(self) -> int:
        """Completion tokens the model wrote (those a loss may count)."""
        return len(self.token_ids) if self.mask is None else sum(self.mask)


@dataclass
class Counts:
    sequences: int  # rows with tokens in the loss
    tokens: int  # tokens in the loss
    max_tokens: int


def make_rows(groups: list[Group], advantages: torch.Tensor, overlong_filter: bool) -> list[Row]:
    return [Row(g.prompt_ids, c.token_ids, c.logprobs, float(a),
                not (overlong_filter and is_truncated(c.finish_reason)), mask)
            for g, adv in zip(groups, advantages) for c, a, mask in zip(g.completions, adv, g.loss_masks)]


def collate_rows(rows: list[Row], pad_id: int, device) -> dict[str, torch.Tensor]:
    """Right-padded prompt+completion ids, and per completion token: the index of the logit that
    predicts it, the token, its old log-prob, the real-token mask (every completion token, tool responses
    included: the context), ``act`` (the tokens the model wrote) and the loss mask (``act`` of the rows in the
    loss)."""
    width = max(len(r.prompt_ids) + len(r.token_ids) for r in rows)
    length = max(len(r.token_ids) for r in rows)
    B = len(rows)
    ids = torch.full((B, width), pad_id, dtype=torch.long)
    attn = torch.zeros((B, width), dtype=torch.long)
    where = torch.zeros((B, length), dtype=torch.long)
    tokens = torch.zeros((B, length), dtype=torch.long)
    old = torch.zeros((B, length))
    real = torch.zeros((B, length), dtype=torch.bool)
    act = torch.zeros((B, length), dtype=torch.bool)
    for i, r in enumerate(rows):
        P, L = len(r.prompt_ids), len(r.token_ids)
        ids[i, :P + L] = torch.tensor(r.prompt_ids + r.token_ids)
        attn[i, :P + L] = 1
        where[i, :L] = torch.arange(P - 1, P - 1 + L)
        tokens[i, :L] = torch.tensor(r.token_ids)
        old[i, :L] = torch.tensor(r.old_logprobs)
        real[i, :L] = True
        act[i, :L] = True if r.mask is None else torch.tensor(r.mask, dtype=torch.bool)
    loss = act & torch.tensor([r.in_loss for r in rows])[:, None]
    adv = torch.tensor([r.advantage for r in rows])
    out = dict(input_ids=ids, attention_mask=attn, where=where, tokens=tokens, old_logp=old, real=real, act=act,
               loss_mask=loss, advantages=adv, **_distinct_prompts(rows, pad_id))
    return {k: v.to(device) for k, v in out.items()}


def _distinct_prompts(rows: list[Row], pad_id: int) -> dict[str, torch.Tensor]:
    """Each distinct prompt once (right-padded), its length, and which one each row continues (``src``)."""
    index: dict[tuple[int, ...], int] = {}
    src = torch.tensor([index.setdefault(tuple(r.prompt_ids), len(index)) for r in rows])
    width = max(len(p) for p in index)
    ids = torch.full((len(index), width), pad_id, dtype=torch.long)
    for p, i in index.items():
        ids[i, :len(p)] = torch.tensor(p)
    lens = torch.tensor([len(p) for p in index])
    return dict(prompt_ids=ids, prompt_mask=(torch.arange(width) < lens[:, None]).long(), prompt_lens=lens,
                src=src)


def completion_logits(model, batch: dict, temperature: float, share_prompts: bool = True) -> torch.Tensor:
    """Logits predicting each completion token, divided by the sampling temperature: [B, T, V].

    When rows share prompts (a GRPO group, a DPO pair), each distinct prompt goes through the model
    once and its KV cache is indexed out to its rows, whose completions then run on top of it; the
    gradient reaching the prompt's cache is the sum over its rows, as when each row recomputes the
    prompt. Otherwise (or with ``share_prompts=False``, or a model whose forward has no cache) every
    row runs prompt + completion; there, where the model supports ``logits_to_keep``, the LM head runs
    only from the first position that predicts a completion token onwards."""
    shared = share_prompts and len(batch["prompt_ids"]) < len(batch["src"])
    if shared:
        logits = _shared_prompt_logits(model, batch)
        if logits is not None:
            return logits.float() / temperature
    where, width = batch["where"], batch["input_ids"].shape[1]
    kw = {}
    if _takes(model, "logits_to_keep"):
        kw["logits_to_keep"] = width - int(where[batch["real"]].min())
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **kw).logits
    index = (where - (width - logits.shape[1])).clamp(min=0)  # padding positions: any valid index
    return logits.gather(1, index[..., None].expand(-1, -1, logits.shape[-1])).float() / temperature


def _takes(model, name: str) -> bool:
    # a peft (LoRA) model's forward passes its keyword arguments through to the transformers model inside it
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return name in inspect.signature(inner.forward).parameters


def _shared_prompt_logits(model, batch: dict) -> torch.Tensor | None:
    """``completion_logits`` (untempered) with one forward per distinct prompt; None if the model's
    forward gives no cache that can be indexed by row (then the caller runs every row whole)."""
    if not all(_takes(model, k) for k in ("past_key_values", "position_ids", "use_cache")):
        return None
    prompts, lens, src, tokens = batch["prompt_ids"], batch["prompt_lens"], batch["src"], batch["tokens"]
    last = lens - 1  # the position whose logits predict the first completion token
    kw = {}
    if _takes(model, "logits_to_keep"):  # only the prompts' last positions need the LM head
        keep = torch.unique(last)
        kw["logits_to_keep"] = keep
        column = torch.searchsorted(keep, last)
    else:
        column = last
    out = model(input_ids=prompts, attention_mask=batch["prompt_mask"], use_cache=True, **kw)
    cache = out.past_key_values
    if not hasattr(cache, "batch_select_indices"):
        return None
    first = out.logits[torch.arange(len(prompts), device=prompts.device), column][src]  # [B, V]
    if tokens.shape[1] == 1:
        return first[:, None]
    cache.batch_select_indices(src)  # each row's own view of its prompt's keys and values (autograd-tracked)
    body = tokens[:, :-1]  # the last completion token predicts nothing
    positions = lens[src, None] + torch.arange(body.shape[1], device=body.device)
    mask = torch.cat([batch["prompt_mask"][src], torch.ones_like(body)], dim=1)
    rest = model(input_ids=body, attention_mask=mask, position_ids=positions, past_key_values=cache,
                 use_cache=True).logits
    return torch.cat([first[:, None], rest], dim=1)


def learner_logprobs(model, batch: dict, temperature: float) -> torch.Tensor:
    """Log-probs of the completion tokens under the tempered policy: [B, T] (0 on padding)."""
    logp = token_logprobs(completion_logits(model, batch, temperature), batch["tokens"])
    return torch.where(batch["real"], logp, torch.zeros_like(logp))


def micro_batches(rows: list[Row], size: int, tail_share: float = 0.0) -> list[list[Row]]:
    """Rows sorted by length (less padding), in chunks of ``size`` (0: one chunk). With ``tail_share`` > 0
    the last ``round(tail_share * len(rows))`` rows are chunked on their own, after the others: a piece
    sized for a thread that joins late (``SharedChunks``)."""
    rows = sorted(rows, key=lambda r: len(r.prompt_ids) + len(r.token_ids))
    cut = len(rows) - min(len(rows) - 1, round(tail_share * len(rows)))
    chunks = []
    for part in (rows[:cut], rows[cut:]):
        step = size or len(part) or 1
        chunks += [part[i:i + step] for i in range(0, len(part), step)]
    return chunks


class SharedChunks:
    """A learner's micro-batches, which any thread that calls ``work()`` helps compute; each chunk's gradient
    is added to ``.grad`` in chunk order by the thread that called ``finish()``.

    ``compute(chunk)`` returns ``(loss, stats)``: a scalar loss whose gradient is the chunk's share, and
    numbers to sum. Its gradient is taken with ``torch.autograd.grad`` (nothing is written to ``.grad`` from a
    helper thread) and the sums run in chunk order, so the result does not depend on which thread took which
    chunk or when: a run stays bit-reproducible. Chunk gradients that arrive out of order wait until the
    ones before them are added, so at most those are held in memory (none when one thread does all)."""

    def __init__(self, chunks: list, compute, params: list[torch.Tensor]):
        self.chunks, self.compute, self.params = chunks, compute, params
        self.cond = threading.Condition()
        self.claimed = self.added = 0
        self.ready: dict[int, tuple] = {}  # chunk index -> (grads, stats), not yet added
        self.stats: list[dict] = []  # per chunk, in chunk order
        self.error: BaseException | None = None

    def work(self, owner: bool = False) -> None:
        """Claim and compute chunks until none is left (or a thread failed); the ``owner`` (the thread that
        will call ``finish``) also adds, between its chunks, the gradients that are next in order."""
        while True:
            with self.cond:
                if self.claimed == len(self.chunks) or self.error is not None:
                    return
                i, self.claimed = self.claimed, self.claimed + 1
            try:
                loss, stats = self.compute(self.chunks[i])
                grads = torch.autograd.grad(loss, self.params, allow_unused=True)
            except BaseException as e:  # handed to finish(): the owner's thread raises it
                with self.cond:
                    self.error = e
                    self.cond.notify_all()
                return
            with self.cond:
                self.ready[i] = (grads, stats)
                self.cond.notify_all()
            if owner:
                self._add_ready(wait=False)

    def finish(self) -> list[dict]:
        """Work until no chunk is left, add every chunk's gradient in order, and return the chunks' stats."""
        self.work(owner=True)
        self._add_ready(wait=True)
        return self.stats

    def _add_ready(self, wait: bool) -> None:
        while self.added < len(self.chunks):
            with self.cond:
                while wait and self.added not in self.ready and self.error is None:
                    self.cond.wait()
                if self.error is not None:
                    raise self.error
                if self.added not in self.ready:
                    return
                grads, stats = self.ready.pop(self.added)
            for p, g in zip(self.params, grads):
                if g is not None:
                    p.grad = g if p.grad is None else p.grad.add_(g)
            self.stats.append(stats)
            self.added += 1


def rollout_stats(groups: list[Group]) -> dict[str, float]:
    totals = torch.tensor([g.totals for g in groups], dtype=torch.float64)
    comps = [c for g in groups for c in g.completions]
    scores = [s for g in groups for s in g.scores]
    return {"reward_mean": float(totals.mean()), "reward_std": float(totals.std(unbiased=False)),
            "pass_rate": sum(s.correct for s in scores) / len(scores),
            "wrong_steps": sum(r.steps_ok is False for g in groups for r in g.rewards) / len(scores),
            "well_formed": sum(s.well_formed for s in scores) / len(scores),
            "zero_var_groups": sum(g.all_equal for g in groups) / len(groups),
            "response_len": sum(len(c.token_ids) for c in comps) / len(comps),
            "truncated": sum(is_truncated(c.finish_reason) for c in comps) / len(comps),
            **tool_stats([e for g in groups for e in g.episodes])}
