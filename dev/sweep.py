"""Run several SFT configs in parallel (one process each) and collect held-out accuracy by step.

Used to choose the quickstart's worked-solution format and hyper-parameters: steps-to-accuracy does
not depend on the device, so a sweep on a GPU machine answers what would take hours on 2 CPU cores.

    python dev/sweep.py --device cuda --steps 1500 --out /tmp/sweep --json sweep.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BASE = dict(levels="1,2,3", batch_size=64, lr=3e-3, model="small", system2_fraction=0.5, warmup_steps=30)
CONFIGS = {  # sweeps 1 and 2 are in dev/LOG.md (dev/sweep*_results.json); this is the third
    "cells-small-lr3e-4-800": dict(cot="cells", lr=3e-4, steps=800),
    "cells-small-lr5e-4-600": dict(cot="cells", lr=5e-4, steps=600),
    "cells-small-lr7e-4-700": dict(cot="cells", lr=7e-4, steps=700),
    "cells-small-lr5e-4-700-b95": dict(cot="cells", lr=5e-4, steps=700, betas="0.9,0.95"),
    "cells-small-lr5e-4-700-wd0.1": dict(cot="cells", lr=5e-4, steps=700, weight_decay=0.1),
    "cells-small-lr5e-4-700-s2.7": dict(cot="cells", lr=5e-4, steps=700, system2_fraction=0.7),
    "cells-medium-lr3e-4-600": dict(cot="cells", model="medium", lr=3e-4, steps=600),
    "cells-medium-lr5e-4-500": dict(cot="cells", model="medium", lr=5e-4, steps=500),
    "cells-tiny-lr5e-4-1000": dict(cot="cells", model="tiny", lr=5e-4, steps=1000),
    "cells-small-lr5e-4-700-noclip": dict(cot="cells", lr=5e-4, steps=700, grad_clip=0),
    "compact-small-lr5e-4-800": dict(cot="compact", lr=5e-4, steps=800),
    "cells-small-lr5e-4-700": dict(cot="cells", lr=5e-4, steps=700),
}


def command(name: str, cfg: dict, args) -> list[str]:
    c = {**BASE, **cfg}
    cot = c.pop("cot")
    steps = c.pop("steps", args.steps)
    opts = {**c, "out": f"{args.out}/{name}", "task_args": f"op=mul,cot={cot}", "steps": steps,
            "eval_every": args.eval_every, "eval_per_level": args.eval_per_level, "max_new_tokens": 200,
            "checkpoint_every": steps, "device": args.device, "threads": 1, "progress": "false",
            "resume": "false", "log_every": 50}
    cmd = [sys.executable, "-m", "slowthink.cli", "train", "sft"]
    for k, v in opts.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    return cmd


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--eval-per-level", type=int, default=64)
    p.add_argument("--out", default="/tmp/sweep")
    p.add_argument("--json", default="sweep.json")
    p.add_argument("--only", default="", help="comma-separated config names")
    p.add_argument("--deadline", type=float, default=0, help="kill runs still going after this many seconds")
    args = p.parse_args()
    names = [n for n in CONFIGS if not args.only or n in args.only.split(",")]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    t0 = time.time()
    procs = {n: subprocess.Popen(command(n, CONFIGS[n], args), env=env, stdout=subprocess.DEVNULL,
                                 stderr=open(f"{args.out}-{n}.err", "w")) for n in names}
    for p_ in procs.values():
        try:
            p_.wait(timeout=max(1.0, t0 + args.deadline - time.time()) if args.deadline else None)
        except subprocess.TimeoutExpired:
            p_.kill()
            p_.wait()
    summary = {"device": args.device, "steps": args.steps, "seconds": time.time() - t0, "base": BASE, "runs": {}}
    for n in names:
        rows = [json.loads(l) for l in open(f"{args.out}/{n}/metrics.jsonl")] if Path(
            f"{args.out}/{n}/metrics.jsonl").exists() else []
        evals = [{k: v for k, v in r.items() if k == "step" or k.startswith("eval/")} for r in rows
                 if "eval/system2_pass@1" in r]
        loss = [(r["step"], round(r["loss"], 4)) for r in rows if "loss" in r]
        err = Path(f"{args.out}-{n}.err").read_text()[-1500:] if procs[n].returncode else ""
        summary["runs"][n] = {"config": {**BASE, **CONFIGS[n]}, "returncode": procs[n].returncode,
                              "evals": evals, "loss": loss, "error": err}
        last = evals[-1] if evals else {}
        print(f"{n:28s} rc={procs[n].returncode} S2={last.get('eval/system2_pass@1')} "
              f"S1={last.get('eval/system1_pass@1')}", flush=True)
    Path(args.json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
