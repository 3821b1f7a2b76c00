"""Fast batched sampling with a KV cache: many completions per prompt, with tokens, log-probs and text.

Two backends behind one scheduler:

* **Native** (Llama, Qwen2 with q/k/v bias, Qwen3 with per-head q/k norms), in plain torch. One
  preallocated cache tensor ``[layers, slots, 2 (k|v), kv_heads, max_len, head_dim]``; a decode step
  writes each slot's new key/value at its own position (one ``index_put`` per layer) and attends with
  ``scaled_dot_product_attention`` over the cache sliced to the longest active slot, masked per slot.
  q/k/v and gate/up projections are fused into one matmul each; rotary tables come from the model's
  own rotary module, so numbers match Hugging Face. What makes HF ``generate`` slow on tiny models is
  Python overhead per step, so a step here is ~20 torch calls per layer and one device->host transfer.
  On the CPU in float32 (Llama, Qwen2) the decode step is one C++ call (``slowthink/engine/native``): the
  matmuls stay with ATen, and everything between them (RMSNorm, rotary, the cache write, attention of
  each row over its own length only, SiLU) is written out by hand instead of ~15 small kernels per
  layer. Compiled on first use; without a compiler (or with ``SLOWTHINK_NATIVE=0``) the torch step runs.
  On a GPU the torch step (embedding to LM head) is captured as CUDA graphs, one per bucket of rows and
  cache width, and replayed as one launch (``slowthink/engine/graphs.py``; ``SLOWTHINK_CUDA_GRAPHS=0`` to turn off).
* **Generic** (any other HF causal LM): the model's own forward and ``past_key_values``, left padding,
  explicit attention mask and position ids. Static batching: waiting requests are admitted only when
  the running batch has drained. Same ``Completion`` objects.

Scheduler (continuous batching). Rows of the batch are *slots*; the active slots are kept packed in
``[0, B)`` (a finished slot is refilled by moving the last active one into it, so only a few cache rows
are copied and decode never computes dead rows)::

    req = engine.add(prompt_ids, n=4, sampling=SamplingParams(...))   # queued, returns a Request handle
    finished = engine.step()      # one decode step for every running sequence, then admits waiting
                                  # requests into free slots (prefill once, KV copied to its n slots,
                                  # first token sampled); returns the Requests that completed
    req.sequences[i].token_ids    # grows while running (for streaming); req.completions when req.done
    engine.cancel(req)            # frees its slots now; its completions get finish_reason "cancelled"

Sampling params (temperature, top_p, seed, max_tokens, stop, ignore_eos) are per request, hence per
slot. ``generate()`` is just add-all then step-until-done. A request whose ``n`` exceeds ``max_batch``
is admitted in chunks of at most ``max_batch`` sequences (each chunk prefills the prompt once).
Sampling uses the exponential race (``argmax p / E``, E ~ Exp(1)), which is exact and lets each seeded
chunk draw its own noise from its own generator: a seeded request gives the same samples whatever else
is in the batch. Unseeded requests use torch's global RNG. Not thread-safe: drive it from one thread.

Weights: the fused projections (with the RMSNorm weight before each folded in) are copies, so they
double those weights' memory. They are rebuilt whenever a source parameter changed, checked every step
from each parameter's identity and in-place version counter (which optimizer steps and
``load_state_dict`` bump), so a trainer may call ``generate`` between optimizer steps. Embeddings, the
final norm and the LM head are used by reference. Each step runs under ``inference_mode`` with autocast
off, in the model's dtype and on its device, with the model in eval mode (each module's training flag restored after).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import deque
from dataclasses import dataclass, field
import math

import torch

from .backends import HFBackend, LlamaBackend

PREFILL_TOKENS = 16384  # padded prompt tokens per prefill forward (bounds activation memory)


def derive_seed(*parts) -> int:
    """A 62-bit seed that is a pure function of ``parts`` (e.g. run seed and step, or seed and prompt)."""
    digest = hashlib.blake2b("-".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % 2**62


@dataclass
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()  # stop strings, matched on the decoded text; excluded from the text returned
    seed: int | None = None  # reproducible sampling when set (independent of the rest of the batch)
    ignore_eos: bool = False  # keep going past eos (benchmarks, budget forcing)

    def __post_init__(self):
        if isinstance(self.stop, str):
            self.stop = (self.stop,)
        self.stop = tuple(self.stop)
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ValueError(f"max_tokens must be an integer >= 1, got {self.max_tokens!r}")
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)
                and self.temperature >= 0):
            raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {self.temperature!r}")
        if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not all(isinstance(s, str) and s for s in self.stop):
            raise ValueError(f"stop must be a tuple of non-empty strings, got {self.stop!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"seed must be an integer or None, got {self.seed!r}")


@dataclass
class Completion:
    token_ids: list[int]  # generated tokens, including the eos token if one ended it
    logprobs: list[float]  # per token, under the temperature-scaled distribution (before top-p); greedy: T=1
    text: str  # decoded, without the eos token and without the stop string (and what followed it)
    finish_reason: str  # "stop" (eos or stop string), "length", or "cancelled"


class Sequence:
    """One of a request's n samples while it runs; ``token_ids`` grows step by step."""

    __slots__ = ("request", "index", "chunk", "token_ids", "logprobs", "completion", "row", "scanned")

    def __init__(self, request: Request, index: int):
        self.request, self.index, self.chunk = request, index, None
        self.token_ids: list[int] = []
        self.logprobs: list[float] = []
        self.completion: Completion | None = None
        self.row: int | None = None  # slot in the running batch
        self.scanned = 0  # text length already searched for stop strings


class Request:
    """Handle returned by ``Engine.add``: n completions of one prompt."""

    def __init__(self, prompt_ids: list[int], n: int, sampling: SamplingParams):
        self.prompt_ids, self.n, self.sampling = prompt_ids, n, sampling
        self.sequences = [Sequence(self, i) for i in range(n)]
        self.unfinished = n

    @property
    def done(self) -> bool:
        return self.unfinished == 0

    @property
    def completions(self) -> list[Completion]:
        if not self.done:
            raise RuntimeError("request still running; step() the engine until request.done")
        return [s.completion for s in self.sequences]


@dataclass(eq=False)
class _Chunk:
    """Sequences of one request admitted together: one prefill, one seeded generator."""

    request: Request
    seqs: list[Sequence]
    generator: torch.Generator | None = None  # seeded requests only


@dataclass
class _RowParams:
    """Per-slot sampling parameters as tensors, rebuilt whenever the set of running slots changes."""

    all_greedy: bool
    temp: torch.Tensor | None = None
    greedy: torch.Tensor | None = None  # None when no row is greedy
    top_p: torch.Tensor | None = None  # None when no row truncates
    seeded: list = field(default_factory=list)  # (chunk, its first row, rows tensor, index-in-chunk tensor)


class Engine:
    """Sampler over one HF causal LM; ``max_batch`` caps the sequences decoded together (cache rows)."""

    def __init__(self, model, tokenizer, max_batch: int = 256):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        # A peft (LoRA) model runs as the transformers model inside it, whose layers carry the adapters.
        model = model.get_base_model() if hasattr(model, "peft_config") and hasattr(model, "get_base_model") else model
        self.model, self.tokenizer, self.max_batch = model, tokenizer, max_batch
        # Positions the model was built for: a sequence ends ("length") there rather than decode at positions it
        # never trained on (rotary embeddings would run on, silently, past them).
        self.context: int | None = getattr(model.config, "max_position_embeddings", None)
        self.device = next(model.parameters()).device
        native = LlamaBackend.supports(model)
        self.backend = LlamaBackend(model, max_batch) if native else HFBackend(model)
        ids = getattr(model.generation_config, "eos_token_id", None)
        ids = [ids] if isinstance(ids, int) else list(ids or [])
        self.eos_ids = {i for i in (*ids, tokenizer.eos_token_id) if i is not None}
        self.rows: list[Sequence] = []  # row i of the running batch
        self.waiting: deque[_Chunk] = deque()
        self._last: torch.Tensor | None = None  # each row's newest token: the next decode input
        self._params: _RowParams | None = None
        self._pieces: dict[int, str] = {}  # token id -> its text alone (for the stop-string shortcut)
        self._modules = list(model.modules())  # for the eval-mode switch around each step

    @property
    def native(self) -> bool:
        return isinstance(self.backend, LlamaBackend)

    # -- scheduler --------------------------------------------------------------------------------
    def add(self, prompt_ids: list[int], n: int = 1, sampling: SamplingParams | None = None) -> Request:
        """Queue n completions of a prompt; they start at the next ``step()`` with enough free slots."""
        prompt_ids = [int(t) for t in prompt_ids]
        if not prompt_ids:
            raise ValueError("prompt_ids is empty: give at least one token")
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if self.context is not None and len(prompt_ids) >= self.context:
            raise ValueError(f"the prompt has {len(prompt_ids)} tokens and the model's context is {self.context} "
                             "(max_position_embeddings): no room for a completion")
        sampling = sampling or SamplingParams()
        req = Request(prompt_ids, n, sampling)
        for c, start in enumerate(range(0, n, self.max_batch)):
            chunk = _Chunk(req, req.sequences[start:start + self.max_batch])
            for s in chunk.seqs:
                s.chunk = chunk
            if sampling.seed is not None and sampling.temperature > 0:
                chunk.generator = torch.Generator(self.device)
                chunk.generator.manual_seed((sampling.seed * 1_000_003 + c) % 2**63)
            self.waiting.append(chunk)
        return req

    def has_unfinished(self) -> bool:
        return bool(self.rows or self.waiting)

    def step(self) -> list[Request]:
        """One decode step over the running slots, then admission of waiting requests. Returns the
        requests that completed during this step."""
        finished: list[Request] = []
        if not self.has_unfinished():
            return finished
        # Eval mode for the step, each module's own flag restored after. Set directly: ``Module.train()``
        # walks the tree through ``__setattr__`` (~1 ms for a 4-layer model, a quarter of a tiny model's
        # rollout when done twice per token).
        training = [m for m in self._modules if m.training]
        for m in training:
            m.__dict__["training"] = False
        try:
            with torch.inference_mode(), torch.autocast(self.device.type, enabled=False):
                self.backend.sync()
                if self.rows:
                    self._emit(self.backend.decode(self._last), 0, finished)
                self._admit(finished)
        finally:
            for m in training:
                m.__dict__["training"] = True
        return finished

    def cancel(self, request: Request) -> None:
        """Stop a request now: queued chunks are dropped, running slots freed, unfinished sequences
        completed with finish_reason "cancelled"."""
        self.waiting = deque(c for c in self.waiting if c.request is not request)
        rows = [s.row for s in request.sequences if s.completion is None and s.row is not None]
        for s in request.sequences:
            if s.completion is None:
                s.completion = Completion(s.token_ids, s.logprobs, self._decode(s.token_ids), "cancelled")
        request.unfinished = 0
        if rows:
            with torch.inference_mode():
                self._compact(rows)

    def generate(self, prompts: list[list[int]], n: int = 1, sampling: SamplingParams | None = None,
                 progress: bool = False) -> list[list[Completion]]:
        """For each prompt (token ids), n completions. Each distinct prompt is prefilled once (per chunk of
        at most ``max_batch`` sequences) and its KV cache copied to its n sequences."""
        from tqdm.auto import tqdm

        sampling = sampling or SamplingParams()
        # A seeded batch is reproducible, but each prompt draws its own noise: sharing one seed would
        # correlate the samples of different prompts (and bias pass@k / majority-vote estimates).
        requests = [self.add(p, n, sampling if sampling.seed is None else
                             dataclasses.replace(sampling, seed=derive_seed(sampling.seed, i)))
                    for i, p in enumerate(prompts)]
        with tqdm(total=len(requests) * n, unit="seq", desc="generate", disable=not progress) as bar:
            while not all(r.done for r in requests):
                if not self.has_unfinished():
                    raise RuntimeError("engine went idle with requests unfinished")
                bar.update(sum(r.n for r in self.step()))
        return [r.completions for r in requests]

    # -- internals --------------------------------------------------------------------------------
    def _admit(self, finished: list[Request]) -> None:
        continuous = self.backend.admits_while_running
        while self.waiting and (continuous or not self.rows):
            free = self.max_batch - len(self.rows)
            batch: list[_Chunk] = []
            longest = 0
            # FIFO: stop at the first chunk that does not fit, so big requests are not starved.
            while self.waiting and len(self.waiting[0].seqs) <= free:
                nxt = self.waiting[0]
                longest = max(longest, len(nxt.request.prompt_ids))
                if continuous and batch and longest * (len(batch) + 1) > PREFILL_TOKENS:
                    break
                batch.append(self.waiting.popleft())
                free -= len(nxt.seqs)
            if not batch:
                return
            lo = len(self.rows)
            logits = self.backend.prefill(
                [c.request.prompt_ids for c in batch], [len(c.seqs) for c in batch],
                [len(c.request.prompt_ids) + c.request.sampling.max_tokens for c in batch])
            for c in batch:
                for s in c.seqs:
                    s.row = len(self.rows)
                    self.rows.append(s)
            self._params = None
            self._emit(logits, lo, finished)

    def _emit(self, logits: torch.Tensor, lo: int, finished: list[Request]) -> None:
        """Sample one token for rows [lo, lo + len(logits)), record it, retire the finished rows."""
        tokens, logprobs = self._sample(logits.float(), lo)
        self._last = tokens if lo == 0 else torch.cat([self._last[:lo], tokens])
        done = []
        for row, t, lp in zip(range(lo, lo + len(tokens)), tokens.tolist(), logprobs.tolist()):
            seq = self.rows[row]
            seq.token_ids.append(t)
            seq.logprobs.append(lp)
            if self._check_finished(seq, t):
                done.append(row)
                seq.request.unfinished -= 1
                if seq.request.done:
                    finished.append(seq.request)
        if done:
            self._compact(done)

    def _check_finished(self, seq: Sequence, token: int) -> bool:
        p = seq.request.sampling
        ids = seq.token_ids
        if token in self.eos_ids and not p.ignore_eos:
            seq.completion = Completion(ids, seq.logprobs, self._decode(ids[:-1]), "stop")
        elif p.stop and (cut := self._find_stop(seq, p.stop)) is not None:
            seq.completion = Completion(ids, seq.logprobs, cut, "stop")
        elif len(ids) >= p.max_tokens or (self.context is not None
                                          and len(seq.request.prompt_ids) + len(ids) >= self.context):
            seq.completion = Completion(ids, seq.logprobs, self._decode(ids), "length")
        return seq.completion is not None

    def _find_stop(self, seq: Sequence, stops: tuple[str, ...]) -> str | None:
        # Decoding the whole completion every step costs O(length) per row; most tokens cannot end a stop
        # string, and that is known from the token alone.
        token = seq.token_ids[-1]
        if (piece := self._pieces.get(token)) is None:
            piece = self._pieces[token] = self._decode([token])
        if not could_end_stop(piece, stops):
            return None
        text = self._decode(seq.token_ids)
        hits = [i for s in stops if (i := text.find(s, max(0, seq.scanned - len(s) + 1))) >= 0]
        seq.scanned = len(text.rstrip("\ufffd"))  # a trailing partial character may still change
        return text[:min(hits)] if hits else None

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def _compact(self, rows: list[int]) -> None:
        """Free finished rows: the last running rows move into the holes, keeping [0, B) packed."""
        gone = set(rows)
        keep_n = len(self.rows) - len(gone)
        movers = [r for r in range(keep_n, len(self.rows)) if r not in gone]
        order = list(range(keep_n))
        for hole, src in zip(sorted(r for r in gone if r < keep_n), movers):
            order[hole] = src
        self.backend.keep(order)
        moved = any(i != o for i, o in enumerate(order))
        self._last = self._last[torch.tensor(order, device=self.device)] if moved else self._last[:keep_n]
        for r in gone:
            self.rows[r].row = None
        self.rows = [self.rows[o] for o in order]
        for i, s in enumerate(self.rows):
            s.row = i
        self._params = None

    def _row_params(self) -> _RowParams:
        if self._params is not None:
            return self._params
        ps = [s.request.sampling for s in self.rows]
        if all(p.temperature == 0 for p in ps):
            self._params = _RowParams(all_greedy=True)
            return self._params
        dev = self.device
        out = _RowParams(all_greedy=False, temp=torch.tensor([p.temperature or 1.0 for p in ps], device=dev))
        if any(p.temperature == 0 for p in ps):
            out.greedy = torch.tensor([p.temperature == 0 for p in ps], device=dev)
        if any(p.top_p < 1 for p in ps):
            out.top_p = torch.tensor([p.top_p for p in ps], device=dev)
        chunks: dict[int, tuple[_Chunk, list[int], list[int]]] = {}
        for s in self.rows:
            if s.chunk.generator is not None:
                entry = chunks.setdefault(id(s.chunk), (s.chunk, [], []))
                entry[1].append(s.row)
                entry[2].append(s.index - s.chunk.seqs[0].index)
        out.seeded = [(c, r[0], torch.tensor(r, device=dev), torch.tensor(i, device=dev))
                      for c, r, i in chunks.values()]
        self._params = out
        return out

    def _sample(self, logits: torch.Tensor, lo: int) -> tuple[torch.Tensor, torch.Tensor]:
        p = self._row_params()
        n = logits.shape[0]
        if p.all_greedy:
            tokens = logits.argmax(-1)
            logp = logits.log_softmax(-1)
        else:
            logp = (logits / p.temp[lo:lo + n, None]).log_softmax(-1)
            probs = logp.exp()
            if p.top_p is not None:
                probs = _top_p(probs, p.top_p[lo:lo + n])
            noise = torch.empty_like(probs).exponential_()
            # Each seeded chunk draws noise for all its sequences (finished or not) every step, so
            # its stream depends on nothing but the request itself.
            for chunk, first_row, rows, idx in p.seeded:
                if lo <= first_row < lo + n:
                    draw = torch.empty(len(chunk.seqs), probs.shape[1], device=probs.device)
                    noise[rows - lo] = draw.exponential_(generator=chunk.generator)[idx]
            tokens = (probs / noise).argmax(-1)
            if p.greedy is not None:
                tokens = torch.where(p.greedy[lo:lo + n], logits.argmax(-1), tokens)
        return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1)


def could_end_stop(piece: str, stops: tuple[str, ...]) -> bool:
    """Whether a token that decodes (alone) to ``piece`` can be the one that completes a stop string: only if
    it writes some stop's last character. Conservative where decoding one token alone is not the text it
    adds: part of a multi-byte character (U+FFFD), nothing at all, or a stop ending in whitespace
    (SentencePiece writes a word's leading space with the word's token, which alone decodes without it)."""
    return not piece or "\ufffd" in piece or any(s[-1] in piece or s[-1].isspace() for s in stops)


def _top_p(probs: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Zero every token outside each row's nucleus: the smallest set of most likely tokens with mass
    >= top_p (the first token is always kept)."""
    sorted_p, order = probs.sort(-1, descending=True)
    outside = (sorted_p.cumsum(-1) - sorted_p) >= top_p[:, None]
    return torch.zeros_like(probs).scatter_(-1, order, sorted_p.masked_fill(outside, 0.0))
