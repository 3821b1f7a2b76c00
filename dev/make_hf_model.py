"""A randomly initialised Hugging Face causal LM of another architecture than our presets, saved with the
character tokenizer, so that every command can be run on it by path (``--model DIR`` / ``--init DIR``).

    python dev/make_hf_model.py --arch qwen3 --hidden 512 --layers 8 --heads 8 --kv-heads 2 --out runs/qwen3_40m

Qwen3 has per-head q/k RMSNorm and GQA, which the engine's native path handles; gpt2 goes through the generic
Hugging Face path. No weights are downloaded: the config is built here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from slowthink.models import count_parameters, init_from_config, save  # noqa: E402
from slowthink.tokenizer import build_char_tokenizer  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", choices=["qwen3", "qwen2", "llama", "gpt2"], default="qwen3")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--max-positions", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    args = p.parse_args()

    from transformers import GPT2Config, LlamaConfig, Qwen2Config, Qwen3Config

    tok = build_char_tokenizer()
    common = dict(vocab_size=len(tok), eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                  bos_token_id=None, tie_word_embeddings=True)
    if args.arch == "gpt2":
        config = GPT2Config(n_embd=args.hidden, n_layer=args.layers, n_head=args.heads,
                            n_positions=args.max_positions, **common)
    else:
        cls = {"qwen3": Qwen3Config, "qwen2": Qwen2Config, "llama": LlamaConfig}[args.arch]
        config = cls(hidden_size=args.hidden, intermediate_size=int(args.hidden * 8 / 3) // 64 * 64,
                     num_hidden_layers=args.layers, num_attention_heads=args.heads,
                     num_key_value_heads=args.kv_heads, max_position_embeddings=args.max_positions, **common)
    model = init_from_config(config, tok, args.seed)
    save(model, tok, args.out)
    print(f"{args.arch}: {count_parameters(model) / 1e6:.1f}M parameters -> {args.out}")


if __name__ == "__main__":
    main()
