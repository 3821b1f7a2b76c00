"""Behaviour fingerprint of every trainer: short, seeded runs through the CLI, then a hash of each final model's
weights and of its metrics (timings left out). Two checkouts that print the same fingerprints train the same
way, bit for bit; the CLI is the interface, so the check survives any reorganisation of the code.

    python dev/fingerprint.py --out /tmp/fp_a.json          # in one checkout
    python dev/fingerprint.py --out /tmp/fp_b.json          # in another
    python dev/fingerprint.py --compare /tmp/fp_a.json /tmp/fp_b.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

TIMING = ("time", "_s", "per_s")
COMMON = ["--threads", "1", "--progress", "false", "--levels", "1", "--seed", "3"]
RL = ["--steps", "3", "--prompts-per-step", "4", "--max-new-tokens", "24", "--eval-every", "0",
      "--eval-per-level", "4", "--checkpoint-every", "2", "--lr", "1e-3"]


def runs(root: Path) -> dict[str, list[str]]:
    init = str(root / "sft" / "model")
    return {
        "sft": ["sft", "--model", "tiny", "--optimizer", "adamw", "--system2-fraction", "0.5", "--steps", "80",
                "--batch-size", "32", "--eval-every", "40",
                "--eval-per-level", "4", "--max-new-tokens", "24", "--checkpoint-every", "30", "--lr", "3e-3"],
        "grpo": ["grpo", "--init", init, *RL, "--group-size", "4"],
        "grpo_async": ["grpo", "--init", init, *RL, "--group-size", "4", "--async-rollout", "true",
                       "--kl-coef", "0.05"],
        "rloo": ["rloo", "--init", init, *RL, "--group-size", "4"],
        "ppo": ["ppo", "--init", init, *RL, "--group-size", "2", "--epochs-per-step", "2"],
        "star": ["star", "--init", init, "--iterations", "2", "--problems-per-iteration", "8",
                 "--samples-per-problem", "2", "--max-new-tokens", "24", "--eval-per-level", "4",
                 "--steps-per-iteration", "3", "--batch-size", "8"],
        "dpo": ["dpo", "--init", init, "--num-problems", "12", "--samples-per-problem", "3", "--max-new-tokens", "24",
                "--steps", "3", "--batch-size", "4", "--eval-every", "0", "--eval-per-level", "4"],
        "revise": ["revise", "--init", init, "--steps-per-iteration", "3", "--batch-size", "8", "--max-new-tokens", "24",
                   "--eval-per-level", "4"],
        "prm": ["prm", "--init", init, "--max-new-tokens", "24"],
        "orm": ["orm", "--init", init, "--max-new-tokens", "24"],
    }


def digest_model(folder: Path) -> str | None:
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.pt"))
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        if f.suffix == ".safetensors":
            tensors = load_file(f)
            for k in sorted(tensors):
                h.update(k.encode())
                h.update(tensors[k].float().numpy().tobytes())
        else:
            h.update(f.name.encode())
    return h.hexdigest()[:16]


def digest_metrics(run: Path) -> str:
    rows = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        rows.append({k: v for k, v in sorted(row.items()) if not any(t in k for t in TIMING)})
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16]


def fingerprint(only: list[str] | None) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, args in runs(root).items():
            if only and name not in only and name != "sft":
                continue
            extra = [] if name in ("prm", "orm") else []
            cmd = [sys.executable, "-m", "slowthink.cli", "train", *args, "--out", str(root / name), *COMMON, *extra]
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
            if proc.returncode != 0:
                out[name] = {"error": proc.stderr[-2000:]}
                print(name, "FAILED", proc.stderr[-600:], file=sys.stderr)
                continue
            run = root / name
            models = {p.parent.name if p.parent != run else ".": digest_model(p.parent)
                      for p in run.rglob("config.json") if p.parent != run and "ckpt" not in str(p.parent)}
            out[name] = {"metrics": digest_metrics(run), "models": models}
            print(name, out[name], flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out")
    p.add_argument("--only", default="")
    p.add_argument("--compare", nargs=2)
    a = p.parse_args()
    if a.compare:
        x, y = (json.loads(Path(f).read_text()) for f in a.compare)
        same = all(x.get(k) == y.get(k) for k in x)
        for k in x:
            print(f"{k:12s} {'same' if x.get(k) == y.get(k) else 'DIFFERENT'}")
        sys.exit(0 if same else 1)
    fp = fingerprint([s for s in a.only.split(",") if s])
    Path(a.out).write_text(json.dumps(fp, indent=2))


if __name__ == "__main__":
    main()
