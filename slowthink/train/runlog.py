"""Run folders: config, metrics.jsonl, TensorBoard events and atomic, resumable checkpoints.

A checkpoint is a folder ``ckpt/`` holding the model (safetensors, Hugging Face layout), the tokenizer
and ``state.pt`` (optimizer, scheduler, RNG states, step). It is written to ``ckpt.tmp/`` and renamed
over the old one, so a run killed at any instant leaves either the previous or the new checkpoint,
never a half-written one.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

CKPT, CKPT_TMP, CKPT_OLD = "ckpt", "ckpt.tmp", "ckpt.old"


class RunLog:
    """Append-only metrics to ``metrics.jsonl`` and TensorBoard."""

    def __init__(self, run_dir: str | Path, tensorboard: bool = True):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._file = open(self.dir / "metrics.jsonl", "a", buffering=1)
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.dir / "tb"))

    def log(self, step: int, **metrics: Any) -> None:
        row = {"step": step, "time": round(time.time(), 3), **metrics}
        self._file.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a kill mid-write
    return rows


def truncate_metrics(run_dir: str | Path, after_step: int) -> None:
    """Drop rows logged after the checkpoint we resume from, so a resumed run's log has no duplicates."""
    path = Path(run_dir) / "metrics.jsonl"
    rows = [r for r in read_metrics(run_dir) if r.get("step", 0) <= after_step]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, path)


def write_json(path: str | Path, obj: Any) -> None:
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what ``platform`` knows."""
    import platform

    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine() or "unknown"


def machine_info(threads: int | None = None, **extra) -> dict:
    """What a measurement ran on, for results files: CPU model, cores, torch threads, versions, load average."""
    import platform

    import transformers

    return {"cpu": cpu_model(), "cores": len(os.sched_getaffinity(0)), "torch_threads": threads or torch.get_num_threads(),
            "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
            "load_avg_at_start": [round(v, 2) for v in os.getloadavg()], **extra}


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_checkpoint(run_dir: str | Path, model, tokenizer, state: dict) -> Path:
    run_dir = Path(run_dir)
    tmp, final, old = run_dir / CKPT_TMP, run_dir / CKPT, run_dir / CKPT_OLD
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    torch.save({**state, "rng": rng_state()}, tmp / "state.pt")
    with open(tmp / "state.pt", "rb") as f:
        os.fsync(f.fileno())
    # Swap in two renames; a kill between them leaves ckpt.old, which load_checkpoint falls back to.
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    for name in (CKPT, CKPT_OLD):
        path = Path(run_dir) / name
        if (path / "state.pt").is_file():
            return path
    return None


def load_checkpoint(path: str | Path, model) -> dict:
    """Load weights into ``model`` in place and return the saved trainer state (RNG restored)."""
    from safetensors.torch import load_file

    path = Path(path)
    if (path / "adapter_config.json").is_file():  # a LoRA run's checkpoint: the adapter only (train/lora.py)
        from .lora import load_adapter_state

        load_adapter_state(model, path)
        return _load_state(path)
    from .lora import is_lora

    if is_lora(model):
        from ..config import ConfigError

        raise ConfigError(f"config field 'lora_r': checkpoint {path} holds full weights, not a LoRA adapter; resume "
                          "without lora_r, or start a new run folder")
    weights = {}
    for f in sorted(path.glob("*.safetensors")):
        weights.update(load_file(f))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    # Tied embeddings are saved once; anything else missing means the checkpoint doesn't fit the model.
    missing = [m for m in missing if "lm_head" not in m]
    if missing or unexpected:
        raise RuntimeError(f"checkpoint {path} does not match the model: missing {missing}, unexpected {unexpected}")
    if getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()
    return _load_state(path)


def _load_state(path: Path) -> dict:
    state = torch.load(path / "state.pt", weights_only=False)
    set_rng_state(state["rng"])
    return state
