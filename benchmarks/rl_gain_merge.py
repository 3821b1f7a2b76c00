"""Merge rl_gain result files of one table run done in parts (same start, settings and budget) into one
JSON + PNG: ``python benchmarks/rl_gain_merge.py OUT.json PART.json ...``. Settings must agree."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.rl_gain import plot  # noqa: E402
from slowthink.train.runlog import write_json


def main() -> int:
    out, parts = Path(sys.argv[1]), [json.loads(Path(p).read_text()) for p in sys.argv[2:]]
    keep = ("init", "level", "budget_s", "lr", "optimizer", "temperature", "eval_per_level", "prompts_per_step",
            "group_size", "max_new_tokens")
    first = {k: parts[0]["settings"].get(k) for k in keep}
    for p in parts[1:]:
        other = {k: p["settings"].get(k) for k in keep}
        if other != first:
            raise SystemExit(f"settings differ: {first} vs {other}")
    merged = {**parts[0], "parts": [{"command": p["command"], "machine": p["machine"]} for p in parts],
              "results": [r for p in parts for r in p["results"]]}
    write_json(out, merged)
    plot(merged["results"], out.with_suffix(".png"), first["budget_s"])
    print(f"wrote {out} ({len(merged['results'])} methods)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
