"""How often greedy rows agree in bfloat16 on a deep random-init model: ours vs HF batched, and HF batched vs HF
one prompt at a time (rounding alone), then ours vs HF in float32. The numbers behind the bf16 note in
benchmarks/README.md (the 358M `qwen2-0.5b` shape of benchmarks/engine_bench.py, 16 prompts x 32 tokens, CPU).

    python dev/bf16_agreement.py      # ~2 min on 2 cores
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import engine_bench as eb  # noqa: E402

from slowthink.engine import Engine  # noqa: E402
from slowthink.tokenizer import build_char_tokenizer  # noqa: E402


def equal(a, b) -> int:
    return sum(x == y for x, y in zip(a, b))


def main() -> None:
    torch.set_num_threads(2)
    tok = build_char_tokenizer()
    model = eb.make_model("qwen2-0.5b", tok, "cpu").to(torch.bfloat16)
    prompts = eb.prompts_for(tok, 16)
    eb.NEW_TOKENS = 32
    hf_batched, ours, hf_alone = [], [], []
    eb.hf_run(model, tok, prompts, 1, False, hf_batched)
    eb.our_run(Engine(model, tok), prompts, 1, False, ours)
    for p in prompts:
        eb.hf_run(model, tok, [p], 1, False, hf_alone)
    print(f"bf16: ours == HF batched {equal(ours, hf_batched)}/16, HF alone == HF batched "
          f"{equal(hf_alone, hf_batched)}/16, ours == HF alone {equal(ours, hf_alone)}/16")
    model = model.float()
    hf_batched, ours = [], []
    eb.hf_run(model, tok, prompts, 1, False, hf_batched)
    eb.our_run(Engine(model, tok), prompts, 1, False, ours)
    print(f"fp32: ours == HF batched {equal(ours, hf_batched)}/16")


if __name__ == "__main__":
    main()
