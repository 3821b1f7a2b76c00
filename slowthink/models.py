"""Tiny Llama presets built from a config, and loading of any Hugging Face causal LM.

Everything is saved with ``save_pretrained`` (safetensors), so a run folder's ``model/`` loads with
plain ``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class Preset:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    kv_heads: int | None = None


# Parameter counts are for the 103-token character vocabulary (tied embeddings).
PRESETS: dict[str, Preset] = {
    "tiny": Preset(hidden=128, layers=4, heads=4, intermediate=384),  # ~0.8M
    "small": Preset(hidden=192, layers=6, heads=6, intermediate=512),  # ~2.7M
    "medium": Preset(hidden=256, layers=8, heads=8, intermediate=768),  # ~6.8M
    "large": Preset(hidden=384, layers=10, heads=6, intermediate=1024),  # ~17.7M
}


def preset_config(name: str, tokenizer, max_positions: int = 512):
    from transformers import LlamaConfig

    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)} or give a model path")
    p = PRESETS[name]
    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=p.hidden, intermediate_size=p.intermediate,
        num_hidden_layers=p.layers, num_attention_heads=p.heads, num_key_value_heads=p.kv_heads or p.heads,
        max_position_embeddings=max_positions, rms_norm_eps=1e-5, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, attention_bias=False, mlp_bias=False,
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )


def build_model(name: str, tokenizer, seed: int = 0, max_positions: int = 512):
    """A freshly initialised model from a preset (deterministic in ``seed``)."""
    return init_from_config(preset_config(name, tokenizer, max_positions), tokenizer, seed)


def init_from_config(config, tokenizer, seed: int = 0):
    """A freshly initialised float32 causal LM of any Hugging Face architecture from its config (deterministic
    in ``seed``, the global RNG left as it was), generating with ``tokenizer``'s end and padding tokens."""
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def is_model_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / "config.json").is_file()


def load_model(path: str | os.PathLike, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """Any Hugging Face causal LM and its tokenizer from a local folder (no downloads)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .config import check_device

    check_device(device)
    if not is_model_dir(path):
        raise FileNotFoundError(f"{path}: not a model folder (no config.json). Give a folder written by "
                                "save_pretrained, e.g. RUN_DIR/model")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
    return model, tok


def build_or_load(spec: str, tokenizer=None, seed: int = 0):
    """``spec`` is a preset name (needs ``tokenizer``) or a model folder. Returns (model, tokenizer)."""
    if spec in PRESETS:
        from .tokenizer import build_char_tokenizer

        tok = tokenizer or build_char_tokenizer()
        return build_model(spec, tok, seed=seed), tok
    return load_model(spec)


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def save(model, tokenizer, path: str | os.PathLike) -> None:
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
