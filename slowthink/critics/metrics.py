"""How good a critic is: AUROC of its scores against labels, ProcessBench-style F1 for locating the first
wrong step, and best-of-N selection from a pool of scored samples. Pure functions."""

from __future__ import annotations

import math

from ..evaluate import auroc  # noqa: F401 - re-exported: critics are judged by it
from .segment import first_false


def predicted_first_error(step_scores: list[float], threshold: float) -> int | None:
    """The first step scored below ``threshold`` (None: the critic sees no error)."""
    return first_false([s >= threshold for s in step_scores])


def processbench_f1(predicted: list[int | None], truth: list[int | None]) -> dict[str, float]:
    """ProcessBench (Zheng et al. 2024): accuracy on erroneous samples (predicted first-error index equals
    the true one), accuracy on correct samples (predicted "no error"), and their harmonic mean."""
    err = [p == t for p, t in zip(predicted, truth) if t is not None]
    ok = [p is None for p, t in zip(predicted, truth) if t is None]
    acc_err = sum(err) / len(err) if err else math.nan
    acc_ok = sum(ok) / len(ok) if ok else math.nan
    f1 = 0.0 if acc_err + acc_ok == 0 else 2 * acc_err * acc_ok / (acc_err + acc_ok)
    return {"f1": f1, "acc_erroneous": acc_err, "acc_correct": acc_ok, "n_erroneous": len(err), "n_correct": len(ok)}


def best_threshold(step_scores: list[list[float]], truth: list[int | None]) -> float:
    """The threshold that maximises ``processbench_f1`` for these samples (candidates: the scores seen)."""
    candidates = sorted({s for ss in step_scores for s in ss} | {0.5})
    best, best_f1 = 0.5, -1.0
    for th in candidates:
        f1 = processbench_f1([predicted_first_error(ss, th) for ss in step_scores], truth)["f1"]
        if f1 > best_f1:
            best, best_f1 = th, f1
    return best


def pick_best(scores: list[float | None]) -> int:
    """best-of-N's choice (``slowthink.search.best_of_n``): highest score, ties to the earlier sample,
    unscored (malformed) samples only when nothing else is there."""
    ranked = [i for i, s in enumerate(scores) if s is not None]
    return max(ranked, key=lambda i: (scores[i], -i)) if ranked else 0
