"""The quickstart's report: ``report.md`` with its PNG plots, ``results.json``, and the summary printed at the end.

The report opens with the evaluation (System-1 against System-2); each later stage that left its file in the run
folder (``rl.json``, ``route.json``, ``search.json``) adds a section, and a stage not run adds none. Every accuracy
is given with its number of problems and 95% interval, and a comparison the report makes (System-2 against
System-1, after RL against before, the best sampling strategy against greedy) that lies inside the noise at its
number of problems says so.
"""

from __future__ import annotations

import json
from pathlib import Path

from .chat import Mode
from .evaluate import wilson_interval, within_noise
from .report import (TABLE_HEADER, accuracy_cell, format_accuracy, markdown_table, noise_warning, passk_header,
                     passk_rows, plot_accuracy_by_level, plot_pareto, plot_rl, plot_scaling, plot_training,
                     results_table)
from .train.runlog import read_metrics, write_json

ROUTE_SUMMARY = ("best_fixed", "bar", "predictor_auroc", "slow_share_for_80pct_gap", "problems")
SEARCH_LABEL = {"majority": "majority", "confidence_majority": "confidence-weighted majority"}


def write_report(cfg, run: Path) -> None:
    """``report.md`` (and its plots) and ``results.json`` from the stage files in ``run``; the quickstart adds
    how the run came about to ``results.json`` (:func:`slowthink.quickstart.run_record`)."""
    if not (run / "eval.json").exists():
        raise FileNotFoundError(f"{run / 'eval.json'} is missing: run the 'eval' stage first")
    ev = json.loads((run / "eval.json").read_text())
    timings = _read_optional(run / "timings.json") or {}
    summary = eval_summary(ev)
    sections = [eval_section(cfg, ev, summary, run)]
    if rl := _read_optional(run / "rl.json"):
        summary["rl"] = {**rl, **compared(rl["before"], rl["after"], rl["n"], "before", "after")}
        sections.append(rl_section(rl, run))
    if rt := _read_optional(run / "route.json"):
        summary["route"] = {k: rt[k] for k in ROUTE_SUMMARY}
        sections.append(route_section(rt, cfg.levels, run))
    if sr := _read_optional(run / "search.json"):
        summary["search"] = sr
        sections.append(search_section(sr, run))
    sections.append(closing_section(timings, run))
    write_json(run / "results.json", summary)
    (run / "report.md").write_text("".join(sections))


def _read_optional(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def compared(p1: float, p2: float, n: int, name1: str, name2: str) -> dict:
    """Two accuracies on the same ``n`` problems, for ``results.json``: each one's 95% interval and whether their
    difference is inside the noise."""
    return {f"{name1}_ci95": list(wilson_interval(p1 * n, n)), f"{name2}_ci95": list(wilson_interval(p2 * n, n)),
            "n": n, "within_noise": within_noise(p1, n, p2, n)}


def eval_summary(ev: dict) -> dict:
    """The headline numbers of ``eval.json``: greedy pass@1 of each mode and the gap, with the full results."""
    res = ev["results"]
    s1, s2 = (res[m]["overall"]["pass@1"] for m in (Mode.SYSTEM1, Mode.SYSTEM2))
    return {"system1_pass@1": s1, "system2_pass@1": s2, "gap_points": round(100 * (s2 - s1), 1), "k": ev["k"],
            **compared(s1, s2, res[Mode.SYSTEM2]["overall"]["n"], "system1_pass@1", "system2_pass@1"), "eval": res}


def gap_warning(summary: dict) -> str | None:
    return noise_warning("System-2 vs System-1", summary["system1_pass@1"], summary["n"], summary["system2_pass@1"],
                         summary["n"])


def rl_warning(rl: dict) -> str | None:
    return noise_warning(f"after vs before RL on level {rl['level']}", rl["before"], rl["n"], rl["after"], rl["n"])


def search_warning(sr: dict) -> str | None:
    return noise_warning(f"{sr['best']['strategy']}@{sr['best']['n']} vs greedy", sr["greedy"]["accuracy"],
                         sr["problems"], sr["best"]["accuracy"], sr["problems"])


def _as_note(warning: str | None) -> str:
    """A warning as a markdown paragraph of the report ('' without one)."""
    return f"\n\n> **{warning[0].upper() + warning[1:]}.**" if warning else ""


def eval_section(cfg, ev: dict, summary: dict, run: Path) -> str:
    """Title, setup, System-2 against System-1 by level (and pass@k / maj@k), the training curve."""
    res, k = ev["results"], ev["k"]
    plot_training(read_metrics(run / "sft"), run / "training.png", title="SFT on both modes")
    plot_accuracy_by_level(res, run / "accuracy_by_level.png")
    s1, s2, n = summary["system1_pass@1"], summary["system2_pass@1"], summary["n"]
    passk = "\n\n" + markdown_table(passk_header(k), passk_rows(res, k)) if k > 1 else ""
    return f"""# slowthink quickstart

Task `{cfg.task}` {cfg.task_args}, levels {cfg.levels}; model preset `{cfg.model}` trained from scratch for
{cfg.steps} steps on worked solutions (System-2) and direct answers (System-1) mixed.
Held-out: the named held-out set `{ev['heldout_set']}`, up to {ev['per_level']} problems per level ({n} in all),
disjoint from training by construction. Accuracies are given with their 95% (Wilson) interval.

**System-2 greedy accuracy {format_accuracy(s2, n)} vs System-1 {format_accuracy(s1, n)}: {100 * (s2 - s1):+.1f}
points from thinking first.**{_as_note(gap_warning(summary))}

{markdown_table(TABLE_HEADER, results_table(res))}{passk}

![training](training.png)

![accuracy by level](accuracy_by_level.png)"""


def rl_section(rl: dict, run: Path) -> str:
    plot_rl(read_metrics(run / "rl"), run / "rl.png", title=f"GRPO on level {rl['level']} from the SFT model")
    return f"""

## RL: GRPO on level {rl['level']}, starting from the SFT model

Held-out System-2 greedy pass@1 on level {rl['level']} ({rl['n']} problems):
**{format_accuracy(rl['before'], rl['n'])} before RL, {format_accuracy(rl['after'], rl['n'])} after {rl['steps']}
GRPO steps ({100 * (rl['after'] - rl['before']):+.1f} points)**, rewards from the task's verifier only.
The RL model is in `rl/model/`.{_as_note(rl_warning(rl))}

![rl](rl.png)"""


def route_section(rt: dict, levels: list[int], run: Path) -> str:
    plot_pareto(rt, run / "route.png", f"Routing on {rt['problems']} held-out problems, levels {levels}")
    n = rt["problems"]
    rows = [[f"fixed {f['name']}", accuracy_cell(f["accuracy"], n), f"{f['mean_tokens']:.1f}"] for f in rt["fixed"]]
    rows += [[r["label"], accuracy_cell(r["accuracy"], n), f"{r['mean_tokens']:.1f}"] for r in rt["routed"]
             if r.get("tradeoff") in (0.0, 0.05, 0.2)]
    return f"""

## Routing: reasoning_effort=auto

The router (saved in `model/router/`, used by `slowthink solve --reasoning-effort auto` and the server)
predicts from cheap signals how each fixed setting would do on a question and runs the cheapest one predicted
to do about as well as the best. On the held-out problems of all levels, {route_verdict(rt)}.

{markdown_table(["setting", f"accuracy [95% CI], n={n}", "tokens/question"], rows)}

![routing](route.png)"""


def route_verdict(rt: dict) -> str:
    """Whether the router came within the bar of the best fixed setting, and at what share of its tokens."""
    bar, best, n = rt["bar"], rt["best_fixed"], rt["problems"]
    within = bar["cheapest_router_within"]
    if not within:
        return (f"no router setting came within {bar['within_points']:g} point of {best['name']} "
                f"({accuracy_cell(best['accuracy'], n)})")
    return (f"the router's cheapest setting within {bar['within_points']:g} point of {best['name']} "
            f"({accuracy_cell(best['accuracy'], n)}) is `{within['label']}`: {accuracy_cell(within['accuracy'], n)} "
            f"with {within['token_fraction_of_best']:.0%} of its tokens")


def search_section(sr: dict, run: Path) -> str:
    """The "Test-time compute" section (and ``search.png``) from ``search.json``."""
    plot_scaling(sr, run / "search.png", f"Test-time compute: {sr['problems']} held-out level-{sr['level']} problems, "
                 f"T={sr['temperature']:g}")
    nmax, note = sr["ns"][-1], _as_note(search_warning(sr))
    header = ["setting", "n", "tokens/question", *(f"{name} [95% CI]" for name in (
        "greedy", "majority@n", "confidence-weighted@n", "pass@n ceiling"))]
    return f"""

## Test-time compute: spending more tokens per question on level {sr['level']}

On {sr['problems']} held-out level-{sr['level']} problems (one problem is {100 / sr['problems']:.1f} points; accuracies
with their 95% interval),
{search_verdict(sr)}.
Self-consistency takes the most common answer of n samples (T={sr['temperature']:g}); the confidence-weighted
majority lets each sample vote with its own confidence, exp(mean token log-prob), so it needs no trained
verifier (after DeepConf). All n share one pool of {nmax} samples per problem; tokens are the policy tokens
generated per question, every sample counted. pass@{nmax} ({accuracy_cell(sr['ceiling'], sr['problems'])}) is a
ceiling, not a strategy:
the share of problems with a right answer among the samples, which a perfect picker would reach.{note}

{markdown_table(header, search_rows(sr))}

![test-time compute](search.png)"""


def search_rows(sr: dict) -> list[list[str]]:
    """Greedy, then each n of the pool: its tokens per question and each strategy's accuracy."""
    g, cv, t, size = sr["greedy"], sr["curves"], f"T={sr['temperature']:g}", sr["problems"]
    rows = [["greedy (T=0)", "1", f"{g['mean_policy_tokens']:.0f}", accuracy_cell(g["accuracy"], size), "", "", ""]]
    for i, n in enumerate(sr["ns"]):
        rows.append([t, str(n), f"{cv['majority'][i]['mean_policy_tokens']:.0f}", "",
                     *(accuracy_cell(cv[name][i]["accuracy"], size) for name in ("majority", "confidence_majority",
                                                                                "pass_at_n_ceiling"))])
    return rows


def search_verdict(sr: dict) -> str:
    """Whether the best sampling strategy beat System-2 greedy, by how much and at what token cost."""
    g, best, n = sr["greedy"], sr["best"], sr["problems"]
    label = f"{SEARCH_LABEL.get(best['strategy'], best['strategy'])}@{best['n']}"
    best_acc, greedy_acc = accuracy_cell(best["accuracy"], n), accuracy_cell(g["accuracy"], n)
    if sr["gain_points"] > 0:
        verdict = (f"the best strategy, **{label}, is right on {best_acc} vs greedy's {greedy_acc} "
                   f"({sr['gain_points']:+.1f} points)** at {best['mean_policy_tokens']:.0f} policy tokens per "
                   f"question ({best['mean_policy_tokens'] / max(g['mean_policy_tokens'], 1e-9):.1f}x greedy's)")
    else:
        verdict = (f"**no sampling strategy beats System-2 greedy ({greedy_acc})**: the best, {label}, is right "
                   f"on {best_acc} ({sr['gain_points']:+.1f} points) at {best['mean_policy_tokens']:.0f} "
                   "policy tokens per question")
    if g["accuracy"] == 1.0:
        verdict += (". Greedy already solves every problem, so extra samples have nothing to add here; a harder level "
                    "(`search_level`, or `recipes/quickstart_3digit.yaml`) leaves them room")
    return verdict


def closing_section(timings: dict, run: Path) -> str:
    return f"""

Stage wall times (s): {json.dumps(timings)}

The model is in `model/` (Hugging Face format): `AutoModelForCausalLM.from_pretrained("{run / 'model'}")`.
"""


# ----------------------------------------------------------------------------- the summary printed at the end


def summary_lines(summary: dict, out: str) -> list[str]:
    """The lines printed under the results table: the System-2 gap, then a line per later stage that ran."""
    n = summary["n"]
    lines = [f"System-2 {format_accuracy(summary['system2_pass@1'], n)} vs System-1 "
             f"{format_accuracy(summary['system1_pass@1'], n)} ({summary['gap_points']:+.1f} points); stage times "
             f"(s): {summary['timings_s']}", gap_warning(summary)]
    if "rl" in summary:
        lines += [rl_line(summary["rl"]), rl_warning(summary["rl"])]
    if "route" in summary:
        lines.append(route_line(summary["route"], out))
    if "search" in summary:
        lines += [search_line(summary["search"], out), search_warning(summary["search"])]
    lines.append(f"report: {out}/report.md   model: {out}/model")
    return [line for line in lines if line]


def rl_line(rl: dict) -> str:
    return (f"RL (GRPO) on level {rl['level']}: held-out System-2 {format_accuracy(rl['before'], rl['n'])} -> "
            f"{format_accuracy(rl['after'], rl['n'])} ({100 * (rl['after'] - rl['before']):+.1f} points) in "
            f"{rl['steps']} steps")


def route_line(route: dict, out: str) -> str:
    best, within, n = route["best_fixed"], route["bar"]["cheapest_router_within"], route["problems"]
    router = (f"router {accuracy_cell(within['accuracy'], n)} at {within['mean_tokens']:.0f} ({within['label']})"
              if within else f"no router setting within {route['bar']['within_points']:g} point")
    return (f"router (reasoning_effort=auto, {out}/model/router, {n} held-out problems): best fixed setting "
            f"{best['name']} {accuracy_cell(best['accuracy'], n)} at {best['mean_tokens']:.0f} tokens/question; "
            f"{router}; plot {out}/route.png")


def search_line(sr: dict, out: str) -> str:
    g, best, n = sr["greedy"], sr["best"], sr["problems"]
    return (f"test-time compute (level {sr['level']}, n={n} held-out problems): System-2 greedy "
            f"{accuracy_cell(g['accuracy'], n)} at {g['mean_policy_tokens']:.0f} tokens/question; best "
            f"{best['strategy']}@{best['n']} {accuracy_cell(best['accuracy'], n)} at {best['mean_policy_tokens']:.0f} "
            f"({sr['gain_points']:+.1f} points); pass@{sr['ns'][-1]} ceiling {accuracy_cell(sr['ceiling'], n)}; "
            f"plot {out}/search.png")
