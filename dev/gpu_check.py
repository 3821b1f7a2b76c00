"""GPU checks for the engine: greedy equality with HF generate on CUDA, and tokens/s side by side.

    python dev/gpu_check.py --json gpu_check.json
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch

from slowthink.engine import Engine, SamplingParams
from slowthink.models import build_model
from slowthink.tasks import Arithmetic
from slowthink.tokenizer import build_char_tokenizer, render_prompt


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--json", default="gpu_check.json")
    p.add_argument("--device", default="cuda")
    p.add_argument("--presets", default="tiny,small,medium")
    args = p.parse_args()
    tok = build_char_tokenizer()
    task = Arithmetic()
    rng = random.Random(0)
    prompts = [render_prompt(tok, task.prompt(task.sample(rng, rng.choice([1, 2, 3])), "system2"), "system2")
               for _ in range(64)]
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    out = {"device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu", "torch": torch.__version__, "presets": {}}
    for preset in args.presets.split(","):
        model = build_model(preset, tok, seed=0).to(args.device).eval()
        with torch.no_grad():  # sharpen random-init logits so greedy has no near-ties
            model.lm_head.weight.mul_(8.0) if not model.config.tie_word_embeddings else \
                model.model.embed_tokens.weight.mul_(4.0)
        engine = Engine(model, tok)
        sp = SamplingParams(max_tokens=96, temperature=0.0)
        ours = engine.generate(prompts, sampling=sp)
        pad = tok.pad_token_id
        width = max(map(len, prompts))
        ids = torch.tensor([[pad] * (width - len(x)) + x for x in prompts], device=args.device)
        mask = (ids != pad).long()
        with torch.no_grad():
            ref = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=96, do_sample=False,
                                 pad_token_id=pad, eos_token_id=tok.eos_token_id)[:, width:].tolist()
        equal = 0
        for r, o in zip(ref, ours):
            r = [t for t in r if t != pad]
            equal += r == o[0].token_ids
        # Throughput at a forced length of 96 new tokens, batch 64, greedy.
        forced = SamplingParams(max_tokens=96, temperature=0.0, ignore_eos=True)
        timings = {}
        for name, fn in (("hf_generate", lambda: model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=96,
                                                                 min_new_tokens=96, do_sample=False,
                                                                 pad_token_id=pad)),
                         ("slowthink", lambda: engine.generate(prompts, sampling=forced))):
            with torch.no_grad():
                fn()
                sync()
                ts = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    fn()
                    sync()
                    ts.append(time.perf_counter() - t0)
            timings[name] = 64 * 96 / sorted(ts)[1]
        out["presets"][preset] = {"greedy_equal": f"{equal}/64", "tokens_per_s": timings,
                                  "ratio": timings["slowthink"] / timings["hf_generate"]}
        print(preset, out["presets"][preset], flush=True)
    with open(args.json, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
