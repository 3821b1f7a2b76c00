"""How a trainer holds the model it trains: dtype, gradient checkpointing, dropout, and LoRA adapters (peft).

One entry point, :func:`prepare`, called where a trainer gets its starting model (``train.loop.load_init`` for the
RL/DPO family, ``train.sft``). With ``lora_r > 0`` the model becomes a ``peft.PeftModel`` (Hu et al. 2021,
arXiv:2106.09685): the base weights are frozen and only the adapters' ``lora_A``/``lora_B`` train.

- Sampling: the engine reads the adapted weights itself (``engine/backends.py``: each LoRA layer's weight is
  base + B A x scale, recomputed when an adapter changes), so rollouts come from the adapted policy at every
  step without merging into the base weights (merge/unmerge round trips would drift bf16 base weights).
- Checkpoints hold the adapter only (``adapter_config.json``, ``adapter_model.safetensors``): plain
  ``PeftModel.from_pretrained(base, RUN/ckpt)`` loads them. The final save writes ``adapter/`` (the same) and
  ``model/``, the merged plain model, which every other command (eval, serve, the next trainer's ``--init``)
  loads like any model folder. ``slowthink merge`` merges any adapter folder.
- KL reference: the base weights seen through a second module without adapters (:func:`reference_view`), no
  copy.
- Dropout: RL and DPO trainers switch every dropout off (:func:`disable_dropout`): the engine samples in eval
  mode, so a learner with dropout on would see another policy (on-policy ratio != 1, k3 KL != 0 at step 0).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..config import LORA_DEFAULT_TARGETS, ConfigError, require

TORCH_DTYPES = {"float32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DROPOUT_ATTRS = ("attention_dropout", "dropout", "attn_dropout", "hidden_dropout", "resid_dropout", "embd_pdrop",
                 "attn_pdrop", "resid_pdrop", "activation_dropout", "classifier_dropout")


def torch_dtype(cfg) -> torch.dtype:
    return TORCH_DTYPES[getattr(cfg, "dtype", "float32")]


def is_lora(model) -> bool:
    """Whether ``model`` is a peft model (LoRA adapters on a frozen base)."""
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def unwrap(model):
    """The transformers model inside a peft model (its layers carry the adapters), else ``model`` itself."""
    return model.get_base_model() if is_lora(model) else model


def disable_dropout(model) -> int:
    """Every dropout off, in place: ``nn.Dropout`` modules get p=0, float dropout attributes that attention code
    reads at call time (``attention_dropout`` in Llama/Qwen) and the config's dropout fields become 0. Returns how
    many were non-zero. (TRL's ``disable_dropout`` does the modules only; HF attention reads the float.)"""
    changed = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            changed += module.p != 0
            module.p = 0.0
        for name in DROPOUT_ATTRS:
            value = module.__dict__.get(name)
            if isinstance(value, float) and not isinstance(value, bool):
                changed += value != 0
                setattr(module, name, 0.0)
    config = getattr(unwrap(model), "config", None)
    for name, value in (vars(config).items() if config is not None else ()):
        if ("dropout" in name or name.endswith("pdrop")) and isinstance(value, float):
            setattr(config, name, 0.0)
    return changed


def default_targets(model) -> list[str]:
    """The attention and MLP projections ``model`` has (``LORA_DEFAULT_TARGETS``), as peft module-name suffixes."""
    names = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    found = [t for t in LORA_DEFAULT_TARGETS if t in names]
    require(bool(found), "lora_targets", f"the model has none of {list(LORA_DEFAULT_TARGETS)}; name its linear "
            f"layers to adapt, e.g. one of {sorted(names - {'lm_head'})[:12]}")
    return found


def apply_lora(model, cfg):
    """``model`` wrapped with fresh LoRA adapters as ``cfg`` (``LoraConfig`` block) says; the adapters' random
    init depends on ``cfg.seed`` only (the global RNG is left as it was), so a resumed run rebuilds the same."""
    from peft import LoraConfig, get_peft_model

    targets = list(cfg.lora_targets) or default_targets(model)
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in targets if t not in present]
    require(not missing, "lora_targets", f"{missing} not found in the model")
    require("lm_head" not in targets and "embed_tokens" not in targets, "lora_targets",
            "adapters on the embeddings or the LM head are not supported; adapt the attention/MLP projections")
    spec = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha or 2 * cfg.lora_r, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM", bias="none")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(getattr(cfg, "seed", 0))
        return get_peft_model(model, spec)


def prepare(model, cfg, rl: bool):
    """The model a trainer trains, from its starting model: in ``cfg.dtype`` on ``cfg.device``, every dropout off
    for RL/DPO (``rl``), gradient checkpointing if asked, LoRA adapters if ``cfg.lora_r`` > 0."""
    model = model.to(device=cfg.device, dtype=torch_dtype(cfg))
    if getattr(cfg, "lora_r", 0) and not is_lora(model):
        model = apply_lora(model, cfg)
    if rl:
        disable_dropout(model)
    if getattr(cfg, "gradient_checkpointing", False):  # non-reentrant: works with a frozen (LoRA) base
        inner = unwrap(model)
        if hasattr(inner, "activation_checkpointing_enable"):  # transformers >= 5.x's name
            inner.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def reference_view(model):
    """The KL reference for a LoRA model: a second transformers model built around the *same* base tensors (no
    copy), without adapters. Not ``peft``'s ``disable_adapter()``: that switches the shared layers off (and their
    ``requires_grad``) for everyone while it is open, which a learner thread running beside it (``async_rollout``'s
    shared micro-batches) would see."""
    from transformers import AutoModelForCausalLM

    inner = unwrap(model)
    with torch.device("meta"):
        ref = AutoModelForCausalLM.from_config(inner.config)
    tensors = {name.replace(".base_layer", ""): p for name, p in inner.named_parameters(remove_duplicate=False)
               if "lora_" not in name}
    buffers = {name.replace(".base_layer", ""): b for name, b in inner.named_buffers()}
    missing, unexpected = ref.load_state_dict(tensors, strict=False, assign=True)
    missing = [m for m in missing if m not in buffers]
    if missing or unexpected:
        raise RuntimeError(f"reference model does not match the base: missing {missing}, unexpected {unexpected}")
    for name, buf in buffers.items():  # rotary tables and the like, shared too
        module, _, leaf = name.rpartition(".")
        ref.get_submodule(module)._buffers[leaf] = buf
    return ref.eval().requires_grad_(False)


def merged_copy(model):
    """A plain transformers model with the adapters merged in (``model`` itself is left as it is)."""
    import copy

    return copy.deepcopy(model).merge_and_unload()


def adapter_folder(folder: Path) -> Path:
    """Where a LoRA run saves the adapter beside the merged model ``folder``: RUN/model -> RUN/adapter,
    snapshots/step_N -> snapshots/step_N_adapter."""
    folder = Path(folder)
    return folder.parent / "adapter" if folder.name == "model" else folder.with_name(folder.name + "_adapter")


def save_lora_model(model, tok, folder: Path) -> Path:
    """The final save of a LoRA run: ``folder`` gets the merged plain model, :func:`adapter_folder` the adapter
    (returned)."""
    from ..models import save

    adapter = adapter_folder(folder)
    save(model, tok, adapter)
    save(merged_copy(model), tok, folder)
    return adapter


def load_adapter_state(model, folder: Path) -> None:
    """A checkpoint's adapter weights into ``model`` (a peft model of the same LoRA settings)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    if not is_lora(model):
        raise ConfigError(f"config field 'lora_r': checkpoint {folder} holds a LoRA adapter; resume with the same "
                          "lora_r/lora_targets it was written with, or start a new run folder")
    saved = json.loads((folder / "adapter_config.json").read_text())
    ours = model.peft_config["default"]
    if saved.get("r") != ours.r or sorted(saved.get("target_modules") or []) != sorted(ours.target_modules or []):
        raise ConfigError(f"config field 'lora_r': checkpoint {folder} was written with lora_r={saved.get('r')}, "
                          f"targets {sorted(saved.get('target_modules') or [])}; this run has lora_r={ours.r}, "
                          f"targets {sorted(ours.target_modules)}: resume with the same, or start a new run folder")
    result = set_peft_model_state_dict(model, load_file(folder / "adapter_model.safetensors"))
    if result.unexpected_keys:
        raise RuntimeError(f"checkpoint {folder} does not match the model: unexpected {result.unexpected_keys}")


def merge_folder(adapter: str | Path, out: str | Path, base: str | Path | None = None, device: str = "cpu") -> Path:
    """``slowthink merge``: the adapter folder ``adapter`` (a LoRA run's ``adapter/`` or ``ckpt/``) merged into
    its base model (``base``, default: the one its adapter_config.json names), written to ``out`` as a plain model
    folder with the tokenizer (and the task record, when the adapter folder's run has one)."""
    from peft import PeftModel

    from ..models import load_model, save

    adapter, out = Path(adapter), Path(out)
    if not (adapter / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter}: no adapter_config.json (give a LoRA run's adapter/ or ckpt/ folder)")
    base = base or json.loads((adapter / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base:
        raise ConfigError(f"{adapter}: its adapter_config.json names no base model; give --base MODEL_DIR")
    model, tok = load_model(base, device=device)
    if any(adapter.glob("tokenizer*")):
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(adapter)
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    save(merged, tok, out)
    for name in ("task.json",):  # what the run trained on, when beside the adapter (final save) or in the run
        for src in (adapter / name, adapter.parent / "model" / name):
            if src.is_file():
                (out / name).write_text(src.read_text())
                break
    return out
