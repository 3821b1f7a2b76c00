"""Memory before a run starts, and what to lower when it runs out.

:func:`estimate` is pure arithmetic on the model's shape and the run's settings (unit-tested against hand-computed
numbers); :func:`run_estimate` reads them off a model and a trainer config. Rough by design: it counts

- weights: every parameter in the model's dtype, LoRA adapters in float32 (peft keeps them so);
- gradients: one per trainable parameter, in its dtype;
- optimizer: AdamW two float32 moments per trainable parameter, Muon/SGD(momentum) one, plain SGD none;
- activations kept for the backward pass, per token and layer: the inputs of the seven projections and of
  attention (q, k, v, its output), the MLP's gate/up outputs and their product, the residual stream: about
  ``5 h + 2 q + 2 kv + 3 i`` values (h hidden, q = heads x head_dim, kv = kv_heads x head_dim, i intermediate);
  peft's LoRA layers keep about two more tensors of each adapted projection's output size (measured,
  ``benchmarks/results/memory_estimate.json``); with gradient checkpointing each layer's input (``h``) plus two
  layers' full sets (the one recomputed and its gradients). Plus the float32 logits at the backward's peak:
  logits, log-softmax and their two gradients (``4 x vocab`` per token), often the largest part for a large
  vocabulary;
- the engine: its KV cache (``2 x layers x kv`` per token of every sampled row) and the fused q|k|v and gate|up
  copies of those weights it keeps (``engine/backends.py``).

Not counted: the allocator's slack, CUDA context (~0.5 GiB), temporary buffers inside kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024 ** 3
DTYPE_BYTES = {"float32": 4, "bf16": 2, "fp16": 2}
OPTIMIZER_STATES = {"adamw": 2, "muon": 1, "sgd": 1}  # float32 values per trainable parameter (SGD: momentum)


@dataclass(frozen=True)
class Shape:
    """What the estimate needs of a model: parameter counts and the transformer's dimensions."""

    params: int
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int


@dataclass(frozen=True)
class Estimate:
    weights: int
    grads: int
    optimizer: int
    activations: int
    kv_cache: int
    engine_weights: int

    @property
    def learner(self) -> int:
        return self.weights + self.grads + self.optimizer + self.activations

    @property
    def total(self) -> int:
        return self.learner + self.kv_cache + self.engine_weights

    def line(self) -> str:
        unit, size = ("GiB", GIB) if self.total >= GIB else ("MiB", 1024 ** 2)
        g = lambda b: f"{b / size:.2f}"  # noqa: E731
        return (f"memory estimate ({unit}): learner {g(self.learner)} = weights {g(self.weights)} + grads "
                f"{g(self.grads)}"
                f" + optimizer {g(self.optimizer)} + activations ~{g(self.activations)}; engine KV cache "
                f"{g(self.kv_cache)} + fused weights {g(self.engine_weights)}; total ~{g(self.total)}")


def estimate(shape: Shape, dtype: str, trainable: int, lora: bool, optimizer: str, rows: int, seq_len: int,
             gradient_checkpointing: bool, kv_rows: int, kv_len: int, adapted_out: int = 0) -> Estimate:
    """Bytes for a learner forward/backward over ``rows`` sequences of ``seq_len`` tokens (one micro-batch) with
    ``trainable`` parameters trained (``lora``: they are float32 adapters on top of ``shape.params``, on
    projections whose output sizes add up to ``adapted_out`` per layer), and an engine sampling ``kv_rows``
    sequences of up to ``kv_len`` tokens (0: no engine)."""
    b = DTYPE_BYTES[dtype]
    s = shape
    q, kv = s.heads * s.head_dim, s.kv_heads * s.head_dim
    weights = s.params * b + (trainable * 4 if lora else 0)
    grads = trainable * (4 if lora else b)
    opt = trainable * 4 * OPTIMIZER_STATES.get(optimizer, 2)
    tokens = rows * seq_len
    per_layer = 5 * s.hidden + 2 * q + 2 * kv + 3 * s.intermediate + (2 * adapted_out if lora else 0)
    kept = s.layers * s.hidden + 2 * per_layer if gradient_checkpointing else s.layers * per_layer
    activations = tokens * kept * b + tokens * 4 * s.vocab * 4
    kv_cache = 2 * s.layers * kv * kv_rows * kv_len * b
    engine_weights = s.layers * s.hidden * (q + 2 * kv + 2 * s.intermediate) * b if kv_rows else 0
    return Estimate(weights, grads, opt, activations, kv_cache, engine_weights)


def model_shape(model) -> Shape:
    from .lora import unwrap

    base = unwrap(model)
    c = base.config
    heads = c.num_attention_heads
    params = sum(p.numel() for name, p in base.named_parameters() if "lora_" not in name)
    return Shape(params=params, layers=c.num_hidden_layers, hidden=c.hidden_size, heads=heads,
                 kv_heads=getattr(c, "num_key_value_heads", None) or heads,
                 head_dim=getattr(c, "head_dim", None) or c.hidden_size // heads,
                 intermediate=getattr(c, "intermediate_size", None) or 4 * c.hidden_size, vocab=c.vocab_size)


def run_estimate(model, cfg, prompt_len: int) -> Estimate:
    """The estimate for a trainer's config: RL (``group_size``): the learner's micro-batch of completions and an
    engine sampling the whole step; SFT (``batch_size``): one micro-batch; with the model's own numbers."""
    from .lora import is_lora

    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    seq = prompt_len + cfg.max_new_tokens
    if hasattr(cfg, "group_size"):
        sampled = cfg.prompts_per_step * cfg.group_size
        rows, kv_rows = cfg.micro_batch_size or sampled, min(sampled, 256)
    else:
        rows = -(-getattr(cfg, "batch_size", 1) // getattr(cfg, "micro_batches", 1))
        kv_rows = 0
    return estimate(model_shape(model), getattr(cfg, "dtype", "float32"), trainable, is_lora(model),
                    getattr(cfg, "optimizer", "adamw"), rows, seq, getattr(cfg, "gradient_checkpointing", False),
                    kv_rows, seq, adapted_outputs(model))


def adapted_outputs(model) -> int:
    """The output sizes of a LoRA model's adapted projections, added up, per layer (0 without LoRA)."""
    from .lora import unwrap

    outs = [m.base_layer.out_features for m in unwrap(model).modules()
            if hasattr(m, "base_layer") and hasattr(m.base_layer, "out_features")]
    return sum(outs) // max(1, unwrap(model).config.num_hidden_layers)


def is_out_of_memory(exc: BaseException) -> bool:
    """A GPU's ``torch.OutOfMemoryError``, or the CPU's MemoryError / allocator RuntimeError."""
    import torch

    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("not enough memory" in text or "out of memory" in text)


def out_of_memory_advice(cfg) -> str:
    """What to lower, naming the settings this trainer has, with their values."""
    names = ("micro_batch_size", "micro_batches", "batch_size", "group_size", "prompts_per_step", "max_new_tokens")
    have = [f"{n}={getattr(cfg, n)}" for n in names if hasattr(cfg, n)]
    tips = [f"lower {', '.join(have)}" if have else "lower the batch"]
    if hasattr(cfg, "micro_batch_size"):
        tips.append("set micro_batch_size (0 runs the whole batch at once)" if not cfg.micro_batch_size else
                    "a smaller micro_batch_size")
    if hasattr(cfg, "micro_batches"):
        tips.append("more micro_batches")
    if hasattr(cfg, "lora_r") and not cfg.lora_r:
        tips.append("train LoRA adapters instead of every weight (lora_r=16)")
    if hasattr(cfg, "gradient_checkpointing") and not cfg.gradient_checkpointing:
        tips.append("gradient_checkpointing=true")
    if getattr(cfg, "dtype", None) == "float32" and getattr(cfg, "device", "cpu") != "cpu":
        tips.append("dtype=bf16")
    return "out of memory: " + "; ".join(tips)
