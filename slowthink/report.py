"""Plots, tables and markdown for run reports (matplotlib, Agg backend: no display needed). Every accuracy is
shown with the number of problems behind it and its 95% Wilson interval."""

from __future__ import annotations

from pathlib import Path

from .chat import Mode
from .evaluate import wilson_interval, within_noise

MODE_LABEL = {Mode.SYSTEM1: "System-1 (answer directly)", Mode.SYSTEM2: "System-2 (think first)"}
MODE_COLOR = {Mode.SYSTEM1: "#d62728", Mode.SYSTEM2: "#1f77b4"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_heldout(ax, metrics: list[dict], mode: str, label: str) -> None:
    """Held-out greedy pass@1 against step, its 95% interval as error bars where the log has one."""
    rows = [r for r in metrics if f"eval/{mode}_pass@1" in r]
    if not rows:
        return
    acc = [r[f"eval/{mode}_pass@1"] for r in rows]
    yerr = None
    if all(f"eval/{mode}_pass@1_lo" in r for r in rows):
        yerr = [[a - r[f"eval/{mode}_pass@1_lo"] for a, r in zip(acc, rows)],
                [r[f"eval/{mode}_pass@1_hi"] - a for a, r in zip(acc, rows)]]
    ax.errorbar([r["step"] for r in rows], acc, yerr=yerr, marker="o", capsize=3, color=MODE_COLOR[mode], label=label)


def plot_training(metrics: list[dict], path: str | Path, title: str = "SFT") -> Path:
    """Loss (left axis) and held-out greedy accuracy per mode (right axis) against step."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.4))
    loss = [(r["step"], r["loss"]) for r in metrics if "loss" in r]
    if loss:
        ax.plot(*zip(*loss), color="gray", label="training loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (assistant tokens)")
    ax.set_yscale("log")
    ax2 = ax.twinx()
    for mode in MODE_LABEL:
        _plot_heldout(ax2, metrics, mode, f"held-out pass@1, {MODE_LABEL[mode]}")
    ax2.set_ylabel("held-out greedy accuracy")
    ax2.set_ylim(0, 1.02)
    lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    labels = ax.get_legend_handles_labels()[1] + ax2.get_legend_handles_labels()[1]
    # below the axes: the curves cross every corner of the plot at one point of training or another
    ax.legend(lines, labels, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, fontsize=8, frameon=False)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_rl(metrics: list[dict], path: str | Path, title: str = "RL", mode: str = Mode.SYSTEM2) -> Path:
    """Reward and sampled pass rate per step (left) and held-out greedy pass@1 (markers) against step."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    rows = [r for r in metrics if "reward_mean" in r]
    if rows:
        steps = [r["step"] for r in rows]
        ax.plot(steps, [r["reward_mean"] for r in rows], color="gray", label="reward (mean of the batch)")
        ax.plot(steps, [r["pass_rate"] for r in rows], color="#2ca02c", alpha=0.7, label="sampled pass rate")
    _plot_heldout(ax, metrics, mode, f"held-out greedy pass@1, {MODE_LABEL[mode]}")
    ax.set_xlabel("RL step")
    ax.set_ylim(0, 1.15)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_accuracy_by_level(results: dict, path: str | Path, title: str = "Held-out accuracy by difficulty",
                           metric: str = "pass@1") -> Path:
    """Grouped bars: accuracy per level, one bar per mode."""
    plt = _plt()
    modes = [m for m in MODE_LABEL if m in results]
    levels = sorted({lv for m in modes for lv in results[m]["by_level"]}, key=int)
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / max(1, len(modes))
    for j, mode in enumerate(modes):
        vals = [results[mode]["by_level"].get(lv, {}).get(metric, 0.0) for lv in levels]
        xs = [i + (j - (len(modes) - 1) / 2) * width for i in range(len(levels))]
        bars = ax.bar(xs, vals, width, color=MODE_COLOR[mode], label=MODE_LABEL[mode])
        for b, v in zip(bars, vals):
            ax.text(b.get_x() + b.get_width() / 2, v + 0.01, f"{v:.0%}", ha="center", va="bottom", fontsize=8)
    counts = [max(results[m]["by_level"].get(lv, {}).get("n", 0) for m in modes) for lv in levels]
    ax.set_xticks(range(len(levels)), [f"level {lv}\n({n} problems)" for lv, n in zip(levels, counts)])
    ax.set_ylim(0, 1.1)
    ax.set_ylabel(f"{metric} (greedy)" if metric == "pass@1" else metric)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=len(modes), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_pareto(routing: dict, path: str | Path, title: str, others: dict | None = None) -> Path:
    """Accuracy against mean tokens (log x): fixed arms, the router's tradeoff and budget sweeps, the
    oracle router, and the bar's corner; ``others`` adds tradeoff sweeps of routers on other signals."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for f in routing["fixed"]:
        ax.scatter(f["mean_tokens"], 100 * f["accuracy"], marker="s", s=60, color="tab:gray", zorder=3)
        ax.annotate(f["name"], (f["mean_tokens"], 100 * f["accuracy"]), textcoords="offset points", xytext=(5, -12),
                    fontsize=9)
    for kind, color, marker, label in (
            ("tradeoff", "tab:blue", "o", "router: cheapest arm within a tradeoff of the best"),
            ("mean_budget", "tab:orange", "^", "router: compute-optimal for a mean token budget")):
        pts = sorted((r["mean_tokens"], 100 * r["accuracy"]) for r in routing["routed"] if kind in r)
        if pts:
            ax.plot(*zip(*pts), marker=marker, color=color, label=label)
    for name, r in (others or {}).items():
        pts = sorted((x["mean_tokens"], 100 * x["accuracy"]) for x in r["routed"] if "tradeoff" in x)
        ax.plot(*zip(*pts), lw=0.8, alpha=0.7, ls="--", label=f"router on signals {name} (tradeoff sweep)")
    o = routing["oracle"]
    ax.scatter(o["mean_tokens"], 100 * o["accuracy"], marker="*", s=150, color="tab:green",
               label="oracle router (knows the right arm)", zorder=3)
    best, bar = routing["best_fixed"], routing["bar"]
    ax.axhline(100 * best["accuracy"] - bar["within_points"], color="tab:red", lw=0.7, ls=":")
    ax.axvline(bar["max_token_fraction"] * best["mean_tokens"], color="tab:red", lw=0.7, ls=":",
               label=f"bar: within {bar['within_points']:g} point of {best['name']}, "
                     f"<= {bar['max_token_fraction']:.0%} of its tokens")
    # Zoom on the arms that compete when only a fixed arm lies far below (System-1 on hard questions), which
    # would squash the rest; a router point down there keeps the full view.
    top = 100 * max(f["accuracy"] for f in routing["fixed"])
    far = [f for f in routing["fixed"] if 100 * f["accuracy"] < top / 2]
    routed_far = any(100 * r["accuracy"] < top / 2 for r in routing["routed"])
    if far and len(far) < len(routing["fixed"]) and not routed_far:
        low = min(100 * f["accuracy"] for f in routing["fixed"] if f not in far)
        ax.set_ylim(max(0.0, low - 5), min(101.0, top + 2))
        ax.text(0.01, 0.01, "below the axis: " + "; ".join(f"{f['name']} {f['accuracy']:.1%} at {f['mean_tokens']:.0f} "
                                                           "tokens" for f in far),
                transform=ax.transAxes, fontsize=7, va="bottom")
    ax.set_xscale("log")
    ax.set_xlabel("mean tokens per question (the arm's and the router signals', a checker's included; log)")
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize=6.5, loc="upper left", framealpha=0.85)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


# name -> color, marker, marker size, line style, z-order, label: where curves coincide, the ceiling lies beneath
# and the smaller markers on top, so every curve stays visible.
SCALING_STYLE = {"majority": ("tab:blue", "o", 9, "-", 3, "self-consistency majority@n"),
                 "confidence_majority": ("tab:orange", "^", 5, "-", 4, "confidence-weighted majority@n (no verifier)"),
                 "pass_at_n_ceiling": ("tab:gray", "s", 12, "--", 2, "pass@n ceiling (any of n samples right)")}


def plot_scaling(search: dict, path: str | Path, title: str) -> Path:
    """Accuracy against mean policy tokens per question (log x): one line per pool strategy (points at
    n = 1, 2, 4, ...), the pass@n ceiling dashed, System-2 greedy as a star."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for name, pts in search["curves"].items():
        color, marker, ms, ls, z, label = SCALING_STYLE.get(name, (None, "o", 6, "-", 3, name))
        xs, ys = [p["mean_policy_tokens"] for p in pts], [100 * p["accuracy"] for p in pts]
        ax.plot(xs, ys, ls=ls, marker=marker, ms=ms, color=color, zorder=z, label=label)
        if name == "majority":
            for p, x, y in zip(pts, xs, ys):
                ax.annotate(f"n={p['n']}", (x, y), textcoords="offset points", xytext=(0, -13), ha="center",
                            fontsize=7, color=color)
    g = search["greedy"]
    ax.scatter(g["mean_policy_tokens"], 100 * g["accuracy"], marker="*", s=200, color="black", zorder=5,
               label=f"System-2 greedy ({g['accuracy']:.1%})")
    ax.set_xscale("log")
    ticks = sorted({round(p["mean_policy_tokens"]) for p in search["curves"].get("majority", [])})
    if ticks:  # plain numbers at the majority@n points instead of powers of ten
        from matplotlib.ticker import NullFormatter

        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("mean policy tokens per question (log)")
    ax.set_ylabel("held-out accuracy (%)")
    ys = [100 * g["accuracy"]] + [100 * p["accuracy"] for pts in search["curves"].values() for p in pts]
    ax.set_ylim(max(0.0, min(ys) - 8), min(102.0, max(ys) + 8))
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def format_accuracy(p: float, n: int) -> str:
    """``41.0% (n=100, 95% CI 31.9-50.8%)``: an accuracy with the number of problems and the interval."""
    lo, hi = wilson_interval(p * n, n)
    return f"{p:.1%} (n={n}, 95% CI {100 * lo:.1f}-{100 * hi:.1f}%)"


def accuracy_cell(p: float, n: int) -> str:
    """``41.0% [31.9, 50.8]``: an accuracy and its 95% interval, for a table that gives n beside it."""
    lo, hi = wilson_interval(p * n, n)
    return f"{p:.1%} [{100 * lo:.1f}, {100 * hi:.1f}]"


def noise_warning(what: str, p1: float, n1: int, p2: float, n2: int) -> str | None:
    """A warning when accuracies ``p1`` (on ``n1`` problems) and ``p2`` (on ``n2``) differ by less than the noise
    at those sizes (``evaluate.within_noise``); None when the difference stands out of it."""
    if not within_noise(p1, n1, p2, n2):
        return None
    return (f"warning: {what}: {100 * (p2 - p1):+.1f} points is inside the noise at n={n1} vs n={n2} (95% "
            "two-proportion test): more problems would be needed to call it a difference")


def heldout_line(metrics: dict, mode: str) -> str:
    """A trainer's progress line for its held-out evaluation (``evaluate.heldout_metrics``)."""
    return f"held-out {mode} pass@1 {format_accuracy(metrics[f'eval/{mode}_pass@1'], metrics[f'eval/{mode}_n'])}"


def results_table(results: dict) -> list[list[str]]:
    """Rows of (level, n, S1 and S2 accuracy with their intervals, S1 and S2 mean tokens) with an overall row last."""
    s1, s2 = results.get(Mode.SYSTEM1), results.get(Mode.SYSTEM2)
    rows = []
    levels = sorted((s2 or s1)["by_level"], key=int)
    for lv in levels + ["all"]:
        pick = (lambda r: r["overall"]) if lv == "all" else (lambda r, lv=lv: r["by_level"][lv])
        rows.append([str(lv), str(pick(s2 or s1)["n"]),
                     accuracy_cell(pick(s1)["pass@1"], pick(s1)["n"]) if s1 else "-",
                     accuracy_cell(pick(s2)["pass@1"], pick(s2)["n"]) if s2 else "-",
                     f"{pick(s1)['mean_tokens']:.0f}" if s1 else "-",
                     f"{pick(s2)['mean_tokens']:.0f}" if s2 else "-"])
    return rows


TABLE_HEADER = ["level", "n", "System-1 pass@1 [95% CI]", "System-2 pass@1 [95% CI]", "System-1 tokens",
                "System-2 tokens"]


def mode_gap_warning(results: dict) -> str | None:
    """:func:`noise_warning` for System-2 against System-1 greedy pass@1 over all problems (both modes evaluated)."""
    if not {Mode.SYSTEM1, Mode.SYSTEM2} <= set(results):
        return None
    s1, s2 = (results[m]["overall"] for m in (Mode.SYSTEM1, Mode.SYSTEM2))
    return noise_warning("System-2 vs System-1 pass@1", s1["pass@1"], s1["n"], s2["pass@1"], s2["n"])


def passk_header(k: int) -> list[str]:
    return ["mode", "n", "pass@1", "sampled pass@1", f"pass@{k}", f"maj@{k}"]


def passk_rows(results: dict, k: int) -> list[list[str]]:
    """Per mode, overall: greedy pass@1, sampled pass@1, pass@k and maj@k (an evaluation with k > 1), each with its
    interval (of the pass@k estimates: approximate)."""
    overall = {m: r["overall"] for m, r in results.items()}
    return [[str(m), str(o["n"]), *(accuracy_cell(o[key], o["n"])
                                   for key in ("pass@1", "sampled_pass@1", f"pass@{k}", f"maj@{k}"))]
            for m, o in overall.items()]


STRATEGY_HEADER = ["mode", "level", "n", "accuracy [95% CI]", "well-formed", "policy tokens/problem"]


def strategy_rows(results: dict) -> list[list[str]]:
    """Rows of a test-time strategy's evaluation (``{mode: evaluate_strategy(...)}``): each level, then all."""
    return [[str(m), lv, str(b["n"]), accuracy_cell(b["accuracy"], b["n"]), f"{b['well_formed']:.1%}",
             f"{b['mean_policy_tokens']:.1f}"]
            for m, r in results.items() for lv, b in [*r["by_level"].items(), ("all", r["overall"])]]


def vote_summary(votes: dict, top: int = 5) -> str:
    """What a vote looked like: the leading answers with their count (or total weight), then how many more."""
    leading = sorted(votes.items(), key=lambda kv: -kv[1])[:top]
    more = f" (+{len(votes) - top} more)" if len(votes) > top else ""
    return ", ".join(f"{answer} {weight:g}" for answer, weight in leading) + more


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
