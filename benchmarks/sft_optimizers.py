"""Muon vs AdamW for the quickstart's SFT: held-out accuracy after the same steps on the same data.

    python benchmarks/sft_optimizers.py                       # the committed run (~25 min on 2 CPU cores)
    python benchmarks/sft_optimizers.py --arms muon:3e-3,adamw:1.5e-3 --steps 200

Every arm trains ``small`` from scratch with the quickstart's SFT recipe (``recipes/quickstart.yaml``: 3x3-digit
multiplication and below, levels weighted 1:3:1, batch 64, 30 warm-up steps, cosine to 0.1 x lr, 75% System-2
examples, same seed, so the same model init and the same batches) and differs only in optimizer and peak lr.
AdamW gets two lrs: 6e-4, the levels-1-2 recipe's (tuned for 900 steps on levels 1-2), and 1.5e-3 (a short
run may want more); 3e-3 fails for AdamW here (dev/LOG.md). Held-out greedy pass@1 of both modes,
by level, every ``--eval-every`` steps on the same ``--eval-per-level`` problems per level. Arms run one after
another in this process on all cores; seconds per step are reported beside the accuracies (the machine's
speed drifts, so compare them loosely; accuracy at equal steps is the measurement).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import fields
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from slowthink.config import load_config  # noqa: E402
from slowthink.quickstart import QuickstartConfig  # noqa: E402
from slowthink.train.sft import SFTConfig, train
from slowthink.train.runlog import machine_info, read_metrics


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[1:]))
    p.add_argument("--arms", default="adamw:6e-4,adamw:1.5e-3,muon:3e-3", help="optimizer:lr, comma-separated")
    p.add_argument("--recipe", default=str(ROOT / "recipes/quickstart.yaml"))
    p.add_argument("--steps", type=int, default=0, help="SFT steps (0: the recipe's)")
    p.add_argument("--eval-every", type=int, default=70)
    p.add_argument("--eval-per-level", type=int, default=100)
    p.add_argument("--runs", default=str(ROOT / "runs/sft_optimizers"))
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/sft_optimizers.json"))
    return p.parse_args(argv)


def arm_config(recipe: QuickstartConfig, optimizer: str, lr: float, args) -> SFTConfig:
    """The recipe's SFT fields, with this arm's optimizer and lr."""
    shared = {f.name: getattr(recipe, f.name) for f in fields(SFTConfig) if hasattr(recipe, f.name)}
    shared.update(out=str(Path(args.runs) / f"{optimizer}_{lr:g}"), optimizer=optimizer, lr=lr,
                  steps=args.steps or recipe.steps, eval_every=args.eval_every, eval_per_level=args.eval_per_level,
                  threads=args.threads, progress=False, resume=False, checkpoint_every=10**9, device="cpu")
    return SFTConfig(**shared)


def curves(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k == "step" or k.startswith("eval/")}
            for r in read_metrics(run) if "eval/system2_pass@1" in r]


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = result["levels"]
    fig, axes = plt.subplots(1, len(levels) + 1, figsize=(4 * (len(levels) + 1), 3.6), sharey=True)
    keys = ["eval/system2_pass@1"] + [f"eval/system2_L{lv}" for lv in levels]
    titles = ["all levels"] + [f"level {lv}" for lv in levels]
    for ax, key, title in zip(axes, keys, titles):
        for arm in result["arms"]:
            pts = arm["curve"]
            ax.plot([p["step"] for p in pts], [100 * p[key] for p in pts], marker="o", label=arm["name"])
        ax.set_title(f"System-2 held-out, {title}")
        ax.set_xlabel("SFT step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("greedy pass@1 (%)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    args = parse_args(argv)
    recipe = load_config(QuickstartConfig, args.recipe)
    result = {"command": "python benchmarks/sft_optimizers.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "machine": machine_info(args.threads or None),
              "recipe": args.recipe, "levels": recipe.levels, "arms": []}
    for spec in args.arms.split(","):
        optimizer, lr = spec.split(":")
        cfg = arm_config(recipe, optimizer, float(lr), args)
        t0 = time.time()
        run = train(cfg)
        wall = time.time() - t0
        rows = read_metrics(run)
        train_rows = [r for r in rows if "tokens_per_s" in r]
        pts = curves(run)
        arm = {"name": f"{optimizer} lr {float(lr):g}", "optimizer": optimizer, "lr": float(lr), "steps": cfg.steps,
               "wall_s": round(wall, 1), "final_loss": train_rows[-1]["loss"], "curve": pts, "final": pts[-1]}
        result["arms"].append(arm)
        print(f"{arm['name']}: System-2 {pts[-1]['eval/system2_pass@1']:.1%} "
              + " ".join(f"L{lv} {pts[-1][f'eval/system2_L{lv}']:.0%}" for lv in recipe.levels)
              + f", System-1 {pts[-1]['eval/system1_pass@1']:.1%}, {wall:.0f} s", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    plot(result, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return result


if __name__ == "__main__":
    main()
