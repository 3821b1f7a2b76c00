"""Draw docs/diagrams/flow.png: slowthink's flow from task to server, with the CLI, the run folder and the
trace store beside it.

    python docs/diagrams/flow.py            # writes docs/diagrams/flow.png next to this file
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

# (title, modules, what it holds), top to bottom: the order data flows in
STAGES = [
    ("Task", "tasks/", "problems at a chosen level; the verifier"),
    ("Chat format", "chat.py, tokenizer.py", "System-1 / System-2, <think> markers"),
    ("Model", "models.py", "presets, or any Hugging Face causal LM"),
    ("Engine", "engine/", "batched KV-cache sampling: C++ step, CUDA graphs"),
    ("Train / RL", "train/, rl/", "SFT; GRPO, RLOO, PPO, STaR, DPO, revise"),
    ("Critics / search", "critics/, search/, evaluate.py", "PRM, ORM, checker; strategies; held-out eval"),
    ("Router / effort", "router/, effort/", "System-1 or System-2 per question; reasoning_effort"),
    ("Server", "serve/", "OpenAI-compatible API, jobs, remote backend"),
]
MAIN_X, MAIN_W, BOX_H, ROW = 3.0, 6.0, 0.95, 1.3
SIDE_X, SIDE_W = 10.6, 3.6
FLOW, SIDE, CLI = "#dbe9f6", "#fdebd0", "#e8e8e8"


def top(row: int) -> float:
    return -row * ROW


def box(ax, x, y, w, h, color, title, lines=(), size=11):
    ax.add_patch(FancyBboxPatch((x, y - h), w, h, boxstyle="round,pad=0.02,rounding_size=0.12",
                                fc=color, ec="#444444", lw=1.2))
    cx, cy = x + w / 2, y - h / 2
    text = [title, *lines]
    for i, t in enumerate(text):
        dy = (len(text) - 1) / 2 * 0.27 - i * 0.27
        ax.text(cx, cy + dy, t, ha="center", va="center", fontsize=size if i == 0 else size - 2,
                fontweight="bold" if i == 0 else "normal", family="monospace" if i == 1 else "sans-serif")


def arrow(ax, start, end, label="", rad=0.0, color="#333333", label_at=(0.0, 0.0)):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=14, lw=1.3, color=color,
                                 connectionstyle=f"arc3,rad={rad}", shrinkA=2, shrinkB=2))
    if label:
        ax.text(*label_at, label, fontsize=8.5, color=color, ha="left", va="center", style="italic")


def draw(path: Path) -> None:
    fig, ax = plt.subplots(figsize=(11, 11.5))
    for row, (title, modules, holds) in enumerate(STAGES):
        box(ax, MAIN_X, top(row), MAIN_W, BOX_H, FLOW, title, (modules, holds))
        if row:
            arrow(ax, (MAIN_X + MAIN_W / 2, top(row - 1) - BOX_H), (MAIN_X + MAIN_W / 2, top(row)))

    # the CLI drives every stage: one tall box on the left
    cli_h = top(0) - (top(len(STAGES) - 1) - BOX_H)
    box(ax, 0.2, top(0), 2.2, cli_h, CLI, "", ())
    ax.text(1.3, top(0) - cli_h / 2, "CLI  (cli.py)\nslowthink quickstart | train | eval |\nsolve | serve | traces"
            "\n\nquickstart.py: every stage in one run\nreport.py: plots and report.md",
            rotation=90, ha="center", va="center", fontsize=9.5)
    for row in range(len(STAGES)):
        y = top(row) - BOX_H / 2
        ax.plot([2.4, MAIN_X], [y, y], color="#999999", lw=0.8, ls=":")

    # the run folder: what training writes, and where the later stages load models from
    run_row, run_h = 4, 1.5
    box(ax, SIDE_X, top(run_row) + 0.3, SIDE_W, run_h, SIDE, "Run folder",
        ("train/runlog.py", "config, metrics.jsonl, tb/,", "ckpt/ (resume), model/, report"))
    arrow(ax, (MAIN_X + MAIN_W, top(run_row) - BOX_H / 2), (SIDE_X, top(run_row) - BOX_H / 2),
          "writes", label_at=(MAIN_X + MAIN_W + 0.15, top(run_row) - BOX_H / 2 + 0.2))
    arrow(ax, (SIDE_X + SIDE_W / 2, top(run_row) + 0.3), (MAIN_X + MAIN_W, top(2) - BOX_H / 2), rad=0.25,
          label="model/ loads as\n--model, --init", label_at=(SIDE_X + SIDE_W / 2 + 0.15, top(3) + 0.2))

    # the trace store: what the server answered, verified, back into training (the data flywheel)
    tr_row, tr_h = 7, 1.5
    box(ax, SIDE_X, top(tr_row) + 0.3, SIDE_W, tr_h, SIDE, "Trace store",
        ("serve/traces.py", "every answer, verified", "by the task (SQLite)"))
    arrow(ax, (MAIN_X + MAIN_W, top(tr_row) - BOX_H / 2), (SIDE_X, top(tr_row) - BOX_H / 2),
          "stores", label_at=(MAIN_X + MAIN_W + 0.15, top(tr_row) - BOX_H / 2 + 0.2))
    arrow(ax, (SIDE_X + SIDE_W / 2, top(tr_row) + 0.3), (MAIN_X + MAIN_W, top(run_row) - BOX_H + 0.1),
          rad=-0.2, label="traces export → train star\n--from-traces", label_at=(SIDE_X + 0.3, top(5) - 0.45))

    ax.set_xlim(0, SIDE_X + SIDE_W + 0.2)
    ax.set_ylim(top(len(STAGES) - 1) - BOX_H - 0.3, 0.5)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title("slowthink: task → chat format → model → engine → train / RL → critics / search → router"
                 " → server", fontsize=11)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    draw(Path(__file__).with_name("flow.png"))
