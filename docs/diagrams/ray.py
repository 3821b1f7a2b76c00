"""Draw docs/diagrams/ray.png: what runs where and what moves between processes in ``--ray`` mode.

    python docs/diagrams/ray.py            # writes docs/diagrams/ray.png next to this file
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

DRIVER, WORKER, LEARNER, STORE = "#dbe9f6", "#fdebd0", "#e2f0d9", "#e8e8e8"


def box(ax, x, y, w, h, color, title, lines=(), size=11):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.12", fc=color,
                                ec="#444444", lw=1.2))
    text = [title, *lines]
    for i, t in enumerate(text):
        dy = (len(text) - 1) / 2 * 0.3 - i * 0.3
        ax.text(x + w / 2, y + h / 2 + dy, t, ha="center", va="center", fontsize=size if i == 0 else size - 2.5,
                fontweight="bold" if i == 0 else "normal")


def arrow(ax, start, end, label="", color="#333333", rad=0.0, at=None, ha="center"):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=14, lw=1.3, color=color,
                                 connectionstyle=f"arc3,rad={rad}", shrinkA=3, shrinkB=3))
    if label:
        x, y = at or ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2)
        ax.text(x, y, label, fontsize=8.5, color=color, ha=ha, va="center", style="italic")


def draw(path: Path) -> None:
    fig, ax = plt.subplots(figsize=(12, 8))
    # driver (learner rank 0 view, optimizer, checkpoints)
    box(ax, 0.1, 3.2, 4.0, 2.4, DRIVER, "Driver: slowthink train grpo --ray",
        ("the trainer loop (one code path)", "optimizer step, checkpoints (TrainingRun)",
         "weights version v", "held-out eval on its own engine"))
    # object store
    box(ax, 5.0, 5.9, 2.8, 1.3, STORE, "Ray object store", ("ray.put once per sync:", "changed tensors only"))
    # rollout workers
    for i, y in enumerate((5.6, 3.9, 2.2)):
        box(ax, 9.0, y, 2.8, 1.3, WORKER, f"RolloutActor {i}" if i < 2 else "RolloutActor N-1",
            ("own engine + weights copy", "slice of the step's problems"))
    ax.text(10.4, 3.7, "...", ha="center", fontsize=14)
    # learners
    for i, x in enumerate((0.3, 2.4)):
        box(ax, x, 0.2, 1.9, 1.5, LEARNER, f"Learner rank {i}", ("shard of the rows", "gradient"))
    box(ax, 4.6, 0.2, 2.6, 1.5, LEARNER, "all_reduce(SUM)", ("gloo (CPU) / NCCL (GPU)", "rank 0 returns the sum"))
    arrow(ax, (4.1, 5.2), (5.0, 6.4), "1. load_weights(delta, v)", at=(3.2, 6.3))
    for y in (6.25, 4.55, 2.85):
        arrow(ax, (7.8, 6.5), (9.0, y), color="#8a5a00")
    arrow(ax, (4.1, 4.6), (9.0, 4.35), "2. rollout(slice, first index)", color="#8a5a00", at=(6.0, 4.75))
    arrow(ax, (9.0, 2.6), (4.1, 3.6), "3. Groups (plain data, version v)", color="#1f5fa0", at=(6.6, 2.75))
    arrow(ax, (1.2, 3.2), (1.2, 1.7), "4. rows, weights", color="#2e7d32", at=(1.3, 2.45), ha="left")
    arrow(ax, (2.2, 0.95), (2.4, 0.95), color="#2e7d32")
    arrow(ax, (4.3, 0.95), (4.6, 0.95), color="#2e7d32")
    arrow(ax, (5.9, 1.7), (3.5, 3.2), "5. summed gradient -> .grad", color="#2e7d32", at=(5.0, 2.25))
    ax.text(8.0, 0.95, "Faults: a dead actor (SIGKILL) or one past worker_timeout_s is killed and\n"
            "replaced; only its slice is sampled again (each slice's result taken once).\n"
            "A killed driver: the same command resumes from the last checkpoint.\n"
            "Async (--async-rollout --max-staleness k): slices for steps v+1..v+k queue\n"
            "behind the weights of version v on each actor; IS correction reweights.",
            fontsize=8.5, va="center", ha="left")
    ax.set_xlim(0, 14.5)
    ax.set_ylim(0, 7.5)
    ax.axis("off")
    ax.set_title("slowthink --ray: what runs where, what moves", fontsize=13, fontweight="bold")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    draw(Path(__file__).resolve().parent / "ray.png")
