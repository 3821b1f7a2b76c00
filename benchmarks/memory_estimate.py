"""The learner memory estimate (slowthink/train/memory.py) against what one learner step really takes on the CPU.

For a Qwen3-shaped model built from a config (no download) and a batch of ``rows`` x ``seq`` tokens, each setting
(full fine-tune, LoRA, LoRA + gradient checkpointing) runs in its own process: the model is built and prepared
(``train.lora.prepare``), then one forward + backward + AdamW step. Measured: the process's peak resident memory
(``VmHWM``, reset to the current RSS just before the step with Linux's ``clear_refs``) minus that RSS; estimated:
gradients + optimizer state + activations (the weights are there already). The peak also holds the backward's
transient buffers, which the estimate does not count.

    python benchmarks/memory_estimate.py            # writes benchmarks/results/memory_estimate.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPE = dict(vocab_size=16384, hidden_size=512, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=8,
             num_key_value_heads=4, head_dim=64, tie_word_embeddings=True)
SETTINGS = {"full": dict(lora_r=0, gradient_checkpointing=False),
            "lora16": dict(lora_r=16, gradient_checkpointing=False),
            "lora16_checkpointing": dict(lora_r=16, gradient_checkpointing=True)}


def status_kib(field: str) -> int:
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field + ":"))


def reset_peak() -> int:
    """Reset the process's peak RSS (VmHWM) to its current RSS (Linux: clear_refs 5); returns that RSS in bytes."""
    import gc

    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    return status_kib("VmRSS") * 1024


def one(setting: str, rows: int, seq: int) -> dict:
    """Runs in a child process: build, prepare, one step; peak memory before and after."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen3Config

    from slowthink.config import build
    from slowthink.rl.grpo import GRPOConfig
    from slowthink.train.lora import prepare
    from slowthink.train.memory import adapted_outputs, estimate, model_shape

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(Qwen3Config(**SHAPE))
    model.save_pretrained("/tmp/memory_estimate_model")  # InitConfig wants a folder
    cfg = build(GRPOConfig, dict(init="/tmp/memory_estimate_model", **SETTINGS[setting]))
    model = prepare(model, cfg, rl=True).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4)
    ids = torch.randint(0, SHAPE["vocab_size"], (rows, seq))
    base = reset_peak()
    logits = model(input_ids=ids).logits.float()
    loss = torch.log_softmax(logits, -1).mean()
    loss.backward()
    opt.step()
    peak = status_kib("VmHWM") * 1024
    est = estimate(model_shape(model), "float32", sum(p.numel() for p in trainable), bool(cfg.lora_r), "adamw", rows,
                   seq, cfg.gradient_checkpointing, 0, 0, adapted_outputs(model))
    return {"setting": setting, **SETTINGS[setting], "rows": rows, "seq": seq,
            "trainable": sum(p.numel() for p in trainable),
            "measured_step_mib": round((peak - base) / 2**20, 1),
            "estimated_step_mib": round((est.grads + est.optimizer + est.activations) / 2**20, 1),
            "estimated": {k: round(getattr(est, k) / 2**20, 1)
                          for k in ("weights", "grads", "optimizer", "activations")}}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--child", default="")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "memory_estimate.json"))
    a = p.parse_args()
    if a.child:
        print(json.dumps(one(a.child, a.rows, a.seq)))
        return
    from slowthink.train.runlog import machine_info

    results = []
    for setting in SETTINGS:
        cmd = [sys.executable, __file__, "--child", setting, "--rows", str(a.rows), "--seq", str(a.seq)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(results[-1])
    Path(a.out).write_text(json.dumps({
        "what": "learner step memory: estimate (train/memory.py) vs rise of peak RSS over one forward+backward+AdamW "
                "step, Qwen3-shaped model from a config, float32 on the CPU",
        "command": "python benchmarks/memory_estimate.py " + f"--rows {a.rows} --seq {a.seq}",
        "shape": SHAPE, "machine": machine_info(threads=2, load_avg_at_end=[round(v, 2) for v in os.getloadavg()]),
        "results": results}, indent=2))


if __name__ == "__main__":
    main()
