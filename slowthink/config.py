"""Flat config dataclasses built from shared blocks: help text and validation written once per field,
validated on creation, YAML-loadable, CLI-overridable.

A config is a plain ``@dataclass`` whose fields carry their help in ``field(metadata={"help": ...})``
(use :func:`arg`). A command's config inherits the blocks it needs (:class:`RunConfig`,
:class:`OptimConfig`, :class:`SamplingConfig`, ...) and adds its own fields; the fields stay flat, so the
CLI's ``--lr`` and a YAML recipe's ``lr:`` name the same field whichever block holds it. Redeclaring a
block's field with ``arg(new_default)`` changes its default and keeps the block's help and checks.
``load_config(Cls, yaml_path, overrides)`` merges, in order: defaults, the YAML file, then ``key=value``
overrides from the command line. Each block validates its own fields in ``__post_init__`` (every block
calls the next one's first) and raises :class:`ConfigError` with the field name and what would be valid.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import types
import typing
from pathlib import Path
from typing import Any

from .chat import MODES


class ConfigError(ValueError):
    """A config value is invalid; the message names the field and what would be valid."""


def arg(default: Any, help: str | None = None, **kw):
    """A dataclass field with help text (``default`` may be a list/dict: it is copied per instance). Without
    ``help`` it redeclares a block's field with another default, and the block's help stands."""
    metadata = {"help": help} if help else {}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=metadata, **kw)
    return dataclasses.field(default=default, metadata=metadata, **kw)


def field_help(cls, name: str) -> str:
    """The help of field ``name``: from the nearest class in ``cls``'s hierarchy that gives it."""
    for klass in cls.__mro__:
        f = vars(klass).get("__dataclass_fields__", {}).get(name)
        if f is not None and f.metadata.get("help"):
            return f.metadata["help"]
    raise TypeError(f"{cls.__name__}.{name} has no help text: give it with arg(default, help)")


def require(cond: bool, name: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"config field '{name}': {message}")


def check_device(name: str, field: str = "device") -> None:
    """A clear error for a torch device string that does not parse or names a device this machine lacks, before
    any work starts (torch's own error comes later, mid-run, and reads 'Torch not compiled with CUDA enabled')."""
    import torch

    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"config field '{field}': {name!r} is not a torch device (cpu, cuda, cuda:1, mps): {e}")
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"config field '{field}': {name!r} asked for, but no CUDA device is visible here "
                              f"(torch {torch.__version__}); use cpu")
        if dev.index is not None and dev.index >= count:
            raise ConfigError(f"config field '{field}': {name!r} asked for, but only {count} CUDA device(s) exist")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"config field '{field}': 'mps' asked for, but MPS is not available here")


def _field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(name: str, value: Any, typ: Any) -> Any:
    """Turn a YAML/CLI value into the field's type, with a clear error when it cannot."""
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(name, value, inner[0])
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()] if value.strip() else []
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config field '{name}': expected a list, got {value!r}")
        items = [_coerce(name, v, args[0]) if args else v for v in value]
        return items if origin is list else tuple(items)
    if origin is dict or typ is dict:
        if isinstance(value, str):
            value = parse_mapping(value)
        if not isinstance(value, dict):
            raise ConfigError(f"config field '{name}': expected a mapping, got {value!r}")
        return dict(value)
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise ConfigError(f"config field '{name}': expected true/false, got {value!r}")
    if typ in (int, float, str):
        try:
            if typ is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return typ(float(value)) if typ is int and isinstance(value, str) and "e" in value.lower() else typ(value)
        except (TypeError, ValueError):
            raise ConfigError(f"config field '{name}': expected {typ.__name__}, got {value!r}") from None
    return value


def parse_scalar(text: str) -> Any:
    """A command-line value as int, float, bool (true/yes, false/no), None (none/null) or str."""
    lowered = text.lower()
    if lowered in ("true", "yes", "false", "no"):
        return lowered in ("true", "yes")
    if lowered in ("none", "null"):
        return None
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def parse_mapping(text: str | None) -> dict[str, Any]:
    """``"op=mul,max_level=5"`` (empty items ignored, values as :func:`parse_scalar`) or a JSON object."""
    text = (text or "").strip()
    if text.startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"not a valid JSON object: {text!r} ({e})") from None
    out: dict[str, Any] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ConfigError(f"argument {item.strip()!r} is not of the form name=value (e.g. 'op=mul,max_level=5')")
        out[key.strip()] = parse_scalar(value.strip())
    return out


def build(cls, values: dict[str, Any]):
    """Instantiate ``cls`` from a dict, rejecting unknown keys with the list of known ones."""
    types_ = _field_types(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown config field(s) {unknown} for {cls.__name__}; known: {sorted(known)}")
    return cls(**{k: _coerce(k, v, types_[k]) for k, v in values.items()})


def load_config(cls, yaml_path: str | Path | None = None, overrides: dict[str, Any] | None = None):
    values: dict[str, Any] = {}
    if yaml_path:
        import yaml

        path = Path(yaml_path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of config fields at the top level")
        values.update(loaded)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return build(cls, values)


def to_dict(cfg) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def add_arguments(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """One ``--field`` option per dataclass field (values parsed later by :func:`build`)."""
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        text = f"{field_help(cls, f.name)} (default: {default!r})"
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=None, metavar="V",
                            help=text.replace("%", "%%"))  # argparse %-formats help text


def overrides_from_args(ns: argparse.Namespace, cls) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(ns).items() if k in names and v is not None}


# ----------------------------------------------------------------------------- blocks

class ConfigBlock:
    """Where the chain of ``__post_init__`` checks ends: every block checks the blocks it builds on first."""

    def __post_init__(self) -> None:
        pass


def check_positive(cfg, *names: str) -> None:
    for name in names:
        require(getattr(cfg, name) > 0, name, "must be > 0")


def check_non_negative(cfg, *names: str) -> None:
    for name in names:
        require(getattr(cfg, name) >= 0, name, "must be >= 0")


@dataclasses.dataclass
class RunConfig(ConfigBlock):
    """Where a command writes, what task it works on, and the machine it runs on."""

    out: str = arg("runs/run", "run folder (config.json, metrics.jsonl, tb/, ckpt/, model/)")
    task: str = arg("", "task name or path/to/file.py:ClassName (default: the task the starting model was trained "
                    "on, from its task.json; else arithmetic)")
    task_args: dict = arg({}, "task constructor arguments, e.g. op=mul,max_level=5 (with the starting model's task: "
                              "laid over the ones it was trained with)")
    levels: list[int] = arg([], "difficulty levels of the training problems, drawn uniformly (default: the levels "
                                "the starting model was trained on, else all of the task's)")
    seed: int = arg(0, "seed for model init, problems, sampling and data order")
    threads: int = arg(0, "torch threads (0: all cores)")
    device: str = arg("cpu", "torch device (cpu, cuda, cuda:1, ...)")
    progress: bool = arg(True, "show a progress bar")
    strict_verifier: bool = arg(False, "stop when the task's score() or step_labels() raises on a completion "
                                "(default: count that completion as malformed, report the crash once per line, go on)")

    def __post_init__(self):
        super().__post_init__()
        check_device(self.device)
        check_non_negative(self, "threads")


@dataclasses.dataclass
class ResumeConfig(ConfigBlock):
    """A trainer that writes resumable checkpoints."""

    resume: bool = arg(True, "continue from out/ckpt if it exists")


@dataclasses.dataclass
class InitConfig(ConfigBlock):
    """A trainer that starts from a trained model folder (RL, STaR, DPO, revise)."""

    init: str = arg("", "model folder to start from (required), e.g. runs/sft/model")

    def __post_init__(self):
        super().__post_init__()
        from .models import is_model_dir

        require(bool(self.init), "init", "give the model folder to start from (one that already writes the task's "
                "format), e.g. init=runs/sft/model")
        require(is_model_dir(self.init), "init", f"{self.init!r} is not a model folder (no config.json); give a "
                "folder written by save_pretrained, e.g. runs/sft/model")


LORA_DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DTYPES = ("float32", "bf16", "fp16")


@dataclasses.dataclass
class WeightsConfig(ConfigBlock):
    """How the trained model's weights are held: dtype and gradient checkpointing (``slowthink/train/lora.py``)."""

    dtype: str = arg("float32", f"weights dtype of the model trained: {', '.join(DTYPES)} (bf16/fp16 on a GPU only; "
                                "the CPU stays float32)")
    gradient_checkpointing: bool = arg(False, "recompute activations in the backward pass (less memory, ~30% "
                                       "more compute)")

    def __post_init__(self):
        super().__post_init__()
        require(self.dtype in DTYPES, "dtype", f"must be one of {list(DTYPES)}")
        require(self.dtype == "float32" or getattr(self, "device", "cuda") != "cpu", "dtype",
                f"{self.dtype} asked for on the CPU: use float32 there (bf16 is for a GPU, device=cuda)")


@dataclasses.dataclass
class LoraConfig(ConfigBlock):
    """LoRA adapters (Hu et al. 2021) with peft, applied when the trainer loads its starting model
    (``slowthink/train/lora.py``); lora_r 0 trains every weight."""

    lora_r: int = arg(0, "LoRA rank (0: no LoRA, full fine-tuning)")
    lora_alpha: float = arg(0.0, "LoRA scale numerator: updates are scaled by lora_alpha / lora_r (0: 2 x lora_r)")
    lora_dropout: float = arg(0.0, "dropout on the LoRA input (SFT only: RL and DPO trainers run without dropout)")
    lora_targets: list[str] = arg([], "module names to adapt (default: the attention and MLP projections the model "
                                      f"has among {list(LORA_DEFAULT_TARGETS)})")

    def __post_init__(self):
        super().__post_init__()
        check_non_negative(self, "lora_r", "lora_alpha")
        require(0 <= self.lora_dropout < 1, "lora_dropout", "must be in [0, 1)")
        require(self.lora_r > 0 or not self.lora_targets, "lora_targets", "given without lora_r (> 0)")


@dataclasses.dataclass
class ModeConfig(ConfigBlock):
    mode: str = arg("", "system2 (think first) or system1 (answer directly); default: system2 when the starting "
                        "model learned it, else system1")

    def __post_init__(self):
        super().__post_init__()
        require(self.mode in MODES or self.mode == "", "mode", f"must be one of {[m.value for m in MODES]}")


@dataclasses.dataclass
class AdamWConfig(ConfigBlock):
    lr: float = arg(1e-5, "learning rate (AdamW)")
    weight_decay: float = arg(0.0, "AdamW weight decay (weight matrices only)")
    betas: list[float] = arg([0.9, 0.99], "AdamW betas")

    def __post_init__(self):
        super().__post_init__()
        require(self.lr > 0 and math.isfinite(self.lr), "lr", "must be > 0")
        check_non_negative(self, "weight_decay")
        require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas", "two values in [0, 1)")


@dataclasses.dataclass
class OptimConfig(AdamWConfig):
    warmup_steps: int = arg(0, "linear warm-up steps")
    grad_clip: float = arg(1.0, "clip the global gradient norm to this value (0: off)")

    def __post_init__(self):
        super().__post_init__()
        check_non_negative(self, "warmup_steps", "grad_clip")


@dataclasses.dataclass
class GenerationConfig(ConfigBlock):
    max_new_tokens: int = arg(160, "generation limit per completion (also for evaluation)")

    def __post_init__(self):
        super().__post_init__()
        check_positive(self, "max_new_tokens")


@dataclasses.dataclass
class SamplingConfig(GenerationConfig):
    temperature: float = arg(1.0, "sampling temperature")

    def __post_init__(self):
        super().__post_init__()
        require(self.temperature >= 0 and math.isfinite(self.temperature), "temperature", "must be >= 0")


@dataclasses.dataclass
class HeldoutConfig(ConfigBlock):
    eval_per_level: int = arg(32, "held-out problems per level for evaluation (0: no evaluation)")

    def __post_init__(self):
        super().__post_init__()
        check_non_negative(self, "eval_per_level")


@dataclasses.dataclass
class EvalConfig(HeldoutConfig):
    """A trainer counted in steps: held-out evaluation and checkpoints every so many."""

    eval_every: int = arg(50, "held-out greedy pass@1 every N steps (0: only at the end)")
    checkpoint_every: int = arg(25, "write a resumable checkpoint every N steps")

    def __post_init__(self):
        super().__post_init__()
        check_non_negative(self, "eval_every")
        check_positive(self, "checkpoint_every")


@dataclasses.dataclass
class ToolsConfig(ConfigBlock):
    """Tools the model may call while it reasons: multi-turn episodes (``slowthink/env``, docs/environments.md)."""

    tools: str = arg("", "tools the model may call while it reasons, comma-separated: calculator, python, memory, "
                         "retrieve (empty, and no tools_file: one-turn episodes)")
    tools_file: str = arg("", "a Python file of your own tool functions (typed arguments, docstring), added to tools")
    tool_args: dict = arg({}, "tool options, e.g. python_timeout_s=5,memory_db=runs/x/memory.sqlite")
    tools_prompt: str = arg("full", "full: the tool instructions and schemas in a system message (Qwen3's text); "
                                    "none: the task's prompt as it is")
    max_tool_calls: int = arg(4, "tool calls per episode; a turn that would make more ends the episode")
    max_turns: int = arg(8, "assistant turns per episode (each tool call starts a new one)")
    max_episode_tokens: int = arg(0, "completion tokens per episode, tool responses included (0: only "
                                     "max_new_tokens, which counts the model's tokens over all turns)")

    def __post_init__(self):
        super().__post_init__()
        import os

        check_positive(self, "max_tool_calls", "max_turns")
        check_non_negative(self, "max_episode_tokens")
        require(self.tools_prompt in ("full", "none"), "tools_prompt", "must be full or none")
        require(not self.tools_file or os.path.isfile(self.tools_file), "tools_file",
                f"{self.tools_file!r} is not a file")
        if self.tools:
            from .tools.base import BUILTIN_TOOLS

            unknown = [t for t in self.tools.split(",") if t.strip() and t.strip() not in BUILTIN_TOOLS]
            require(not unknown, "tools", f"unknown tool(s) {unknown}; built-in tools: {sorted(BUILTIN_TOOLS)} "
                    "(your own go in tools_file)")


@dataclasses.dataclass
class FromModelConfig(LoraConfig, WeightsConfig, SamplingConfig, InitConfig, ResumeConfig, RunConfig):
    """A resumable trainer that starts from a model folder and samples it."""
