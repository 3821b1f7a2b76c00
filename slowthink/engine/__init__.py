"""The engine: batched sampling with a KV cache. ``core`` schedules requests and samples; ``backends`` run the
model (plain torch, the C++ decode step of ``native``, CUDA graphs of ``graphs``)."""

from .core import Completion, Engine, Request, SamplingParams, derive_seed

__all__ = ["Engine", "SamplingParams", "Completion", "Request", "derive_seed"]
