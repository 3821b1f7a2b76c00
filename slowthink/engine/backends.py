"""Model runners behind ``slowthink.engine.Engine``: each holds a batch's KV cache and runs the model.

``prefill(prompts, counts, reserve)`` appends rows, ``decode(tokens)`` advances every row by one token,
``keep(order)`` keeps rows ``order`` as the new ``[0, len(order))``; each returns last-position
logits. ``LlamaBackend`` is the native fast path (Llama, Qwen2, Qwen3) in plain torch, with its decode step
in C++ on the CPU (``slowthink/engine/native``) and captured as CUDA graphs on a GPU (``slowthink/engine/graphs.py``);
``HFBackend`` runs any other Hugging Face causal LM through its own forward and cache. The design
notes are in ``slowthink/engine/core.py``'s docstring.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

NATIVE_ARCHS = ("llama", "qwen2", "qwen3")
STATIC_ROPE = ("default", "linear", "llama3", "yarn")  # rope types whose tables do not depend on length


@dataclass
class _Layer:
    qkv: torch.Tensor  # [q; k; v] weights fused, input RMSNorm weight folded in
    qkv_b: torch.Tensor | None
    q_norm: object | None  # Qwen3's per-head RMSNorm modules (None for Llama/Qwen2)
    k_norm: object | None
    o_t: torch.Tensor  # o_proj weight, transposed view (for addmm into the residual)
    o_b: torch.Tensor | None
    gate_up: torch.Tensor  # [gate; up] weights fused, post-attention RMSNorm weight folded in
    gate_up_b: torch.Tensor | None
    down_t: torch.Tensor
    down_b: torch.Tensor | None


def _rms(x: torch.Tensor, eps: float) -> torch.Tensor:
    """HF's RMSNorm without its weight (folded into the next matmul), in float32 as HF computes it."""
    if x.dtype != torch.float32:
        return _rms(x.float(), eps).to(x.dtype)
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True).add_(eps))


_FIELDS = [f.name for f in fields(_Layer)]
_OWNED = ("qkv", "qkv_b", "gate_up", "gate_up_b")  # fused copies; the other fields are the model's own tensors


def _tensors(layers: list[_Layer]) -> list[torch.Tensor | None]:
    return [getattr(w, name) for w in layers for name in _FIELDS if name not in ("q_norm", "k_norm")]


def _weight(m) -> torch.Tensor:
    """A linear layer's weight as its forward applies it: a peft LoRA layer's (``base_layer``) is the base weight
    plus each active adapter's B A x scale, unless merged or disabled; any other layer's is its own."""
    base = getattr(m, "base_layer", None)
    if base is None:
        return m.weight
    w = base.weight
    if getattr(m, "merged", False) or getattr(m, "disable_adapters", False):
        return w
    for name in m.active_adapters:
        if name in m.lora_A:
            w = w + m.get_delta_weight(name).to(w.dtype)
    return w


def _computed(t: torch.Tensor | None) -> bool:
    """A weight view over a tensor computed here (a LoRA layer's base + delta), not over the model's parameter."""
    return t is not None and t._base is not None and not isinstance(t._base, torch.nn.Parameter)


def _bias(m) -> torch.Tensor | None:
    return getattr(m, "base_layer", m).bias


def _fold(norm, *linears) -> torch.Tensor:
    """Concatenated weights of `linears`, each input column scaled by the RMSNorm weight before them."""
    w = torch.cat([_weight(m) for m in linears])
    return (w.float() * norm.weight.float()).to(w.dtype)


class LlamaBackend:
    admits_while_running = True

    @staticmethod
    def supports(model) -> bool:
        c = model.config
        rope = getattr(c, "rope_parameters", None) or {}
        return (getattr(c, "model_type", None) in NATIVE_ARCHS and getattr(c, "hidden_act", None) == "silu"
                and all(t == "full_attention" for t in (getattr(c, "layer_types", None) or []))
                and rope.get("rope_type", "default") in STATIC_ROPE
                and hasattr(getattr(model, "model", None), "rotary_emb"))

    def __init__(self, model, max_rows: int, cuda_graphs: bool | None = None):
        c = model.config
        self.model, self.base, self.max_rows = model, model.model, max_rows
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        attn = self.base.layers[0].self_attn
        self.H, self.KV, self.D = c.num_attention_heads, c.num_key_value_heads, attn.head_dim
        self.scale, self.gqa = attn.scaling, c.num_attention_heads != c.num_key_value_heads
        self.eps = c.rms_norm_eps
        self.cache: torch.Tensor | None = None  # [layers, slots, 2, kv_heads, max_len, head_dim]
        self.lens: list[int] = []  # tokens cached per running row
        self.pos: torch.Tensor | None = None  # the same, on the device
        # Modules whose parameters are copied into fused weights or read by a captured CUDA graph (watched
        # for changes by sync()).
        self._watched = [m for layer in self.base.layers for m in (
            layer.input_layernorm, layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj,
            layer.post_attention_layernorm, layer.mlp.gate_proj, layer.mlp.up_proj,
            getattr(layer.self_attn, "q_norm", None), getattr(layer.self_attn, "k_norm", None)) if m is not None]
        self._by_reference = [self.base.embed_tokens, self.base.norm, model.get_output_embeddings()]
        self._watched += self._by_reference
        # LoRA layers (peft) hold their parameters in submodules (base_layer, lora_A, lora_B); their effective
        # o_proj/down_proj weights are computed copies, refreshed in place like the fused ones.
        self._lora = [m for layer in self.base.layers for m in layer.modules() if hasattr(m, "base_layer")]
        self._param_dicts = [sub._parameters for m in self._watched for sub in m.modules()]
        self._signature, self._addresses = None, None
        self.layers: list[_Layer] = []
        # Bumped when the cache is reallocated / when a weight the decode step reads moved to a new address:
        # captured CUDA graphs hold addresses, so either makes them stale.
        self.cache_generation = self.weights_generation = 0
        # The C++ decode step (slowthink/engine/native) where it applies: float32 on the CPU, no Qwen3 q/k norms.
        self.kernels = None
        if self.device.type == "cpu" and self.dtype == torch.float32 and getattr(attn, "q_norm", None) is None:
            from .native import decode_kernels

            self.kernels = decode_kernels()
        # CUDA graphs of the decode step (slowthink/engine/graphs.py) on a GPU, unless SLOWTHINK_CUDA_GRAPHS=0.
        if cuda_graphs is None:
            cuda_graphs = self.device.type == "cuda" and os.environ.get("SLOWTHINK_CUDA_GRAPHS", "1") != "0"
        self.graphs = None
        if cuda_graphs:
            from .graphs import DecodeGraphs

            self.graphs = DecodeGraphs(self)
        self._ninf = torch.tensor(float("-inf"), device=self.device, dtype=self.dtype)
        self._zero = torch.tensor(0.0, device=self.device, dtype=self.dtype)

    # Weights ---------------------------------------------------------------------------------------
    def sync(self) -> None:
        """Re-fuse projections if any source parameter was replaced or changed in place since the last call
        (optimizer steps and load_state_dict bump a tensor's version counter)."""
        signature = [(id(t), t._version) for d in self._param_dicts for t in d.values() if t is not None]
        # an adapter switched off or merged changes the weights without touching a tensor
        signature += [(m.merged, m.disable_adapters, tuple(m.active_adapters)) for m in self._lora]
        if signature == self._signature:
            return
        fresh = []
        for layer in self.base.layers:
            a, mlp, ln1, ln2 = layer.self_attn, layer.mlp, layer.input_layernorm, layer.post_attention_layernorm
            qkv_b = None if _bias(a.q_proj) is None else torch.cat([_bias(a.q_proj), _bias(a.k_proj),
                                                                     _bias(a.v_proj)])
            gu_b = None if _bias(mlp.gate_proj) is None else torch.cat([_bias(mlp.gate_proj), _bias(mlp.up_proj)])
            fresh.append(_Layer(
                _fold(ln1, a.q_proj, a.k_proj, a.v_proj), qkv_b, getattr(a, "q_norm", None),
                getattr(a, "k_norm", None), _weight(a.o_proj).t(), _bias(a.o_proj),
                _fold(ln2, mlp.gate_proj, mlp.up_proj), gu_b, _weight(mlp.down_proj).t(), _bias(mlp.down_proj)))
        if len(fresh) != len(self.layers):
            self.layers = fresh
        else:
            for w, f in zip(self.layers, fresh):
                for name in _FIELDS:
                    old, new = getattr(w, name), getattr(f, name)
                    owned = name in _OWNED or (name in ("o_t", "down_t") and _computed(new))
                    if owned and old is not None and new is not None and old.shape == new.shape \
                            and old.dtype == new.dtype:
                        # Copy into the fused tensors in use: captured CUDA graphs hold their addresses, so
                        # optimizer steps between generations keep every graph valid.
                        old.copy_(new)
                    else:  # the model's own tensors (o_proj/down_proj views, biases, norm modules) by reference
                        setattr(w, name, new)
        none = torch.empty(0, device=self.device, dtype=self.dtype)
        self._flat = [t.detach() if t is not None else none for w in self.layers for t in (
            w.qkv, w.qkv_b, w.o_t, w.o_b, w.gate_up, w.gate_up_b, w.down_t, w.down_b)]
        # Everything the decode step reads by address: the fused weights and the modules used by reference.
        modules = [*self._by_reference, *(m for w in self.layers for m in (w.q_norm, w.k_norm) if m is not None)]
        by_reference = [p for m in modules for p in m._parameters.values() if p is not None]
        addresses = [t.data_ptr() for t in (*_tensors(self.layers), *by_reference) if t is not None]
        if addresses != self._addresses:
            self._addresses = addresses
            self.weights_generation += 1
        self._signature = signature

    # Cache -----------------------------------------------------------------------------------------
    def _reserve(self, rows: int, length: int) -> None:
        """Grow the cache (and rotary tables) to at least rows x length, keeping the running rows."""
        old = self.cache
        s0, t0 = (old.shape[1], old.shape[4]) if old is not None else (0, 0)
        if rows <= s0 and length <= t0:
            return
        s = s0 if rows <= s0 else min(self.max_rows, max(rows, 2 * s0))
        t = t0 if length <= t0 else -(-max(length, t0 + t0 // 2) // 16) * 16
        dev, kv2 = self.device, 2 * self.KV
        # Zeros, not empty: masked positions get 0 attention weight, and 0 * NaN would still be NaN.
        self.cache = torch.zeros(len(self.layers), s, 2, self.KV, t, self.D, device=dev, dtype=self.dtype)
        pos = torch.zeros(s, dtype=torch.long, device=dev)
        if old is not None and self.lens:
            b, m = len(self.lens), max(self.lens)
            self.cache[:, :b, :, :, :m] = old[:, :b, :, :, :m]
            pos[:b] = self.pos[:b]
        self.pos = pos
        self.cache_generation += 1
        # Row r's k|v head j at position p is row (r * 2KV + j) * t + p of a layer's cache seen as [-1, D].
        self._write_base = torch.arange(s * kv2, device=dev).view(s, kv2) * t
        if t > t0:
            positions = torch.arange(t, device=dev)
            cos, sin = self.base.rotary_emb(self.cache[0, 0, 0, 0, :1], positions[None])
            # rotate_half(x) * sin == roll(x, D/2) * (sin with its first half negated)
            sign = torch.tensor([-1.0] * (self.D // 2) + [1.0] * (self.D // 2), device=dev, dtype=self.dtype)
            self.rope, self.positions = torch.stack([cos[0], sin[0] * sign], 1), positions  # [max_len, 2, D]

    def keep(self, order: list[int]) -> None:
        moves = [(i, o) for i, o in enumerate(order) if i != o]
        if moves:
            dst = torch.tensor([i for i, _ in moves], device=self.device)
            src = torch.tensor([o for _, o in moves], device=self.device)
            m = max(self.lens[o] for _, o in moves)
            self.cache[:, dst, :, :, :m] = self.cache[:, src, :, :, :m]
            self.pos[dst] = self.pos[src]
        self.lens = [self.lens[o] for o in order]

    # Forward ---------------------------------------------------------------------------------------
    def _qk(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, w: _Layer) -> torch.Tensor:
        """Fused q|k|v projection with rotary (and Qwen3's q/k norms) applied in place to q and k."""
        H, KV, D = self.H, self.KV, self.D
        qkv = F.linear(_rms(x, self.eps), w.qkv, w.qkv_b)
        qk = qkv[..., : (H + KV) * D].unflatten(-1, (H + KV, D))
        if w.q_norm is not None:
            qk[..., :H, :] = w.q_norm(qk[..., :H, :])
            qk[..., H:, :] = w.k_norm(qk[..., H:, :])
        torch.addcmul(qk * cos, qk.roll(D // 2, -1), sin, out=qk)
        return qkv

    def _attn_out_mlp(self, x: torch.Tensor, a: torch.Tensor, w: _Layer) -> torch.Tensor:
        """Residual + o_proj(attention), then residual + SwiGLU MLP; matmuls add into the residual."""
        shape, x = x.shape, x.flatten(0, -2)
        x = torch.addmm(x, a.flatten(0, -2), w.o_t)
        if w.o_b is not None:
            x = x + w.o_b
        gu = F.linear(_rms(x, self.eps), w.gate_up, w.gate_up_b)
        inter = gu.shape[-1] // 2
        x = torch.addmm(x, F.silu(gu[:, :inter]).mul_(gu[:, inter:]), w.down_t)
        if w.down_b is not None:
            x = x + w.down_b
        return x.view(shape)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        head = self.model.get_output_embeddings()
        return F.linear(_rms(x, self.eps) * self.base.norm.weight, head.weight, head.bias)

    def prefill(self, prompts: list[list[int]], counts: list[int], reserve: list[int]) -> torch.Tensor:
        lo, lens = len(self.lens), [len(p) for p in prompts]
        rows, length = sum(counts), max(lens)
        self._reserve(lo + rows, max([*reserve, *(n + 1 for n in self.lens)]))
        dev, H, KV, D = self.device, self.H, self.KV, self.D
        src = torch.repeat_interleave(torch.arange(len(prompts), device=dev), torch.tensor(counts, device=dev))
        # Right padding: with a causal mask, real tokens never attend to the padding after them.
        ids = torch.tensor([p + [0] * (length - len(p)) for p in prompts], device=dev)
        cos, sin = self.rope[:length, 0, None], self.rope[:length, 1, None]  # [length, 1, D]
        x = F.embedding(ids, self.base.embed_tokens.weight)
        for layer, w in enumerate(self.layers):
            qkv = self._qk(x, cos, sin, w)
            q = qkv[..., : H * D].unflatten(-1, (H, D)).transpose(1, 2)
            kv = qkv[..., H * D:].unflatten(-1, (2, KV, D)).permute(0, 2, 3, 1, 4)  # [P, 2, KV, len, D]
            self.cache[layer, lo:lo + rows, :, :, :length] = kv[src]
            a = F.scaled_dot_product_attention(q, kv[:, 0], kv[:, 1], is_causal=True, scale=self.scale,
                                               enable_gqa=self.gqa)
            x = self._attn_out_mlp(x, a.transpose(1, 2).flatten(2), w)
        last = x[torch.arange(len(prompts), device=dev), torch.tensor(lens, device=dev) - 1]
        self.lens += [lens[i] for i in src.tolist()]
        self.pos[lo:lo + rows] = torch.tensor(lens, device=dev)[src]
        return self._logits(last)[src]

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        B, H, KV = len(self.lens), self.H, self.KV
        pos = self.pos[:B]
        if self.graphs is not None:
            logits = self.graphs(tokens)
        else:
            x = F.embedding(tokens, self.base.embed_tokens.weight)
            if self.kernels is not None:
                x = self.kernels.decode_layers(x, self._flat, self.cache, pos, self.rope, H, KV, self.eps,
                                               self.scale)
            else:
                x = self._decode_layers(x, pos, max(self.lens) + 1)
            logits = self._logits(x)
        pos += 1
        self.lens = [n + 1 for n in self.lens]
        return logits

    def _decode_layers(self, x: torch.Tensor, pos: torch.Tensor, width: int) -> torch.Tensor:
        """The plain-torch decode step (any device and dtype), what the C++ kernel does on the CPU: rows
        ``x`` at positions ``pos`` attend to the first ``width`` cache positions, masked per row."""
        B, H, KV, D = len(x), self.H, self.KV, self.D
        rope = self.rope[pos]  # [B, 2, D]
        cos, sin = rope[:, 0, None], rope[:, 1, None]
        # Additive mask, built once per step rather than converted from bool inside every SDPA call.
        mask = torch.where(self.positions[:width] <= pos[:, None], self._zero, self._ninf)[:, None, None]
        where = (self._write_base[:B] + pos[:, None],)  # [B, 2KV] rows of the cache seen as [-1, D]
        for layer, w in enumerate(self.layers):
            qkv = self._qk(x, cos, sin, w)
            cache = self.cache[layer]
            cache.view(-1, D).index_put_(where, qkv[:, H * D:].view(B, 2 * KV, D))
            a = F.scaled_dot_product_attention(qkv[:, : H * D].view(B, H, 1, D), cache[:B, 0, :, :width],
                                               cache[:B, 1, :, :width], attn_mask=mask, scale=self.scale,
                                               enable_gqa=self.gqa)
            x = self._attn_out_mlp(x, a.view(B, H * D), w)
        return x


class HFBackend:
    """Any HF causal LM through its own forward and cache. Rows are admitted only into an empty batch."""

    admits_while_running = False

    def __init__(self, model):
        self.model = model
        self.device = next(model.parameters()).device
        params = inspect.signature(model.forward).parameters
        self.takes_positions = "position_ids" in params
        self.extra = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        self.cache, self.rows = None, 0

    def sync(self) -> None:
        """Nothing to re-fuse: the model's own forward always reads its current weights."""

    def _forward(self, ids, mask, positions, cache):
        kw = {"position_ids": positions} if self.takes_positions else {}
        out = self.model(input_ids=ids, attention_mask=mask, past_key_values=cache, use_cache=True, **kw,
                         **self.extra)
        return out.logits[:, -1], out.past_key_values

    def prefill(self, prompts: list[list[int]], counts: list[int], reserve: list[int]) -> torch.Tensor:
        assert not self.rows, "generic backend admits only into an empty batch"
        dev, length = self.device, max(len(p) for p in prompts)
        ids = torch.tensor([[0] * (length - len(p)) + p for p in prompts], device=dev)
        mask = torch.tensor([[0] * (length - len(p)) + [1] * len(p) for p in prompts], device=dev)
        logits, cache = self._forward(ids, mask, (mask.cumsum(-1) - 1).clamp(min=0), None)
        src = torch.repeat_interleave(torch.arange(len(prompts), device=dev), torch.tensor(counts, device=dev))
        cache.batch_select_indices(src)
        self.cache, self.mask = cache, mask[src]
        self.next_pos, self.rows = torch.tensor([len(p) for p in prompts], device=dev)[src], len(src)
        return logits[src]

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(tokens), 1)], 1)
        logits, self.cache = self._forward(tokens[:, None], self.mask, self.next_pos[:, None], self.cache)
        self.next_pos = self.next_pos + 1
        return logits

    def keep(self, order: list[int]) -> None:
        self.rows = len(order)
        if not order:
            self.cache = None
            return
        idx = torch.tensor(order, device=self.device)
        self.cache.batch_select_indices(idx)
        self.mask, self.next_pos = self.mask[idx], self.next_pos[idx]
