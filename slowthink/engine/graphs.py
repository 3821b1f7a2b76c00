"""The native decode step at fixed shapes, captured once per shape as a CUDA graph and replayed.

On a GPU a small model's decode step is bound by the host: ~20 kernel launches per layer from Python,
each taking longer to issue than to run. A CUDA graph issues the whole step (embedding, every layer,
final norm and LM head) as one launch. A graph replays fixed shapes and addresses, so:

* rows are rounded up to a bucket (``ROW_BUCKETS``) and the attended cache width to a power of two
  (at least 64, at most the cache's length). Padding rows decode their stale token at position 0 of a
  free slot, which nothing reads: a slot's cache is rewritten by the prefill that admits a request into
  it, and the padded width is masked per row as in the eager step.
* inputs live in fixed buffers: the tokens here, positions in the backend's ``pos``.
* graphs are dropped when the cache is reallocated (it grew) or a weight the step reads by reference
  was replaced (``LlamaBackend.sync`` copies re-fused weights into the fused tensors in use, so optimizer
  steps between generations keep every graph valid).

The logits returned are a view of one output buffer shared by all graphs: valid until the next decode step,
which is all the engine needs (it samples from them at once). With ``capture=False`` the same fixed-shape
step runs eagerly, which is how the CPU tests check the padding and masking above.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ROW_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256)
MIN_WIDTH = 64


def row_bucket(rows: int, slots: int) -> int:
    """The captured batch size for ``rows`` running rows, within a cache of ``slots`` rows."""
    bucket = next((b for b in ROW_BUCKETS if b >= rows), -(-rows // 128) * 128)
    return min(bucket, slots)


def width_bucket(longest: int, length: int) -> int:
    """Cache positions attended when the longest row has ``longest`` tokens cached (it attends to
    ``longest + 1`` with the new one), within a cache of ``length`` positions."""
    return min(length, max(MIN_WIDTH, 1 << longest.bit_length()))


class DecodeGraphs:
    """``LlamaBackend.decode``'s layers and LM head for the running rows, through one graph per shape."""

    def __init__(self, backend, capture: bool = True):
        self.backend, self.capture = backend, capture
        self.graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph | None, torch.Tensor | None]] = {}
        self.state = None  # (cache generation, weights generation) the graphs were captured with
        self.tokens = torch.zeros(backend.max_rows, dtype=torch.long, device=backend.device)
        # Every graph writes its logits here, so that no graph keeps a [rows, vocab] block of the pool to itself
        # (with a 150k vocabulary that would be tens of MB per graph).
        vocab = backend.model.get_output_embeddings().weight.shape[0]
        self.logits = torch.empty(backend.max_rows, vocab, dtype=backend.dtype, device=backend.device)
        self.pool = torch.cuda.graph_pool_handle() if capture else None
        self.captured = 0  # graphs captured so far (diagnostics, tests)

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        b = self.backend
        n = len(b.lens)
        rows = row_bucket(n, b.cache.shape[1])
        width = width_bucket(max(b.lens), b.cache.shape[4])
        state = (b.cache_generation, b.weights_generation)
        if state != self.state:
            self.graphs.clear()
            self.state = state
            if self.capture:  # a pool whose graphs are all gone cannot be captured into again
                self.pool = torch.cuda.graph_pool_handle()
        self.tokens[:n].copy_(tokens)
        b.pos[n:rows].zero_()
        graph, out = self.graphs.get((rows, width)) or self._capture(rows, width)
        if graph is None:
            return self._step(rows, width)[:n]
        graph.replay()
        return out[:n]

    def _step(self, rows: int, width: int) -> torch.Tensor:
        b = self.backend
        x = F.embedding(self.tokens[:rows], b.base.embed_tokens.weight)
        return self.logits[:rows].copy_(b._logits(b._decode_layers(x, b.pos[:rows], width)))

    def _capture(self, rows: int, width: int):
        if not self.capture:
            return None, None
        # Warm up on a side stream first: lazy initialisation (cuBLAS workspaces, kernel selection) may not
        # happen during capture. The step is idempotent (it rewrites the same cache entries), so running it
        # here and again at replay changes nothing.
        side = torch.cuda.Stream(self.backend.device)
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self._step(rows, width)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            out = self._step(rows, width)
        self.graphs[(rows, width)] = graph, out
        self.captured += 1
        return graph, out
