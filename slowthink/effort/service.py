"""The effort service: one question at a named effort, over any :class:`~.question.Model`. A fixed effort
runs its setting (``effort.fixed``); ``auto`` is the router's (``effort.auto``), and with no router it runs
medium and says so in ``route``."""

from __future__ import annotations

from collections.abc import Mapping

from .auto import route
from .fixed import run_setting
from .question import Answered, Model, Question
from .table import AUTO_FALLBACK, EFFORTS, check_effort, single_pass

NO_ROUTER = (f"no router saved beside the model: auto runs {AUTO_FALLBACK} (train one with: slowthink train "
             "router --model MODEL_DIR)")


async def run_effort(question: Question, effort: str, models: Mapping[str, Model], router=None,
                     tradeoff: float | None = None) -> Answered:
    """Answer ``question`` at ``effort`` (``models``: by name; one is enough, "fast"/"slow" for a two-model
    router). ``router``: for auto (None: auto runs medium); ``tradeoff``: overrides the router's own."""
    check_effort(effort)
    if effort == "auto" and router is not None:
        return await route(question, router, models, tradeoff)
    if effort == "auto":
        return await run_setting(question, EFFORTS[AUTO_FALLBACK], models, {"arm": AUTO_FALLBACK, "why": NO_ROUTER})
    setting = EFFORTS[effort]
    as_asked = single_pass(effort, question.thinking_budget) is not None
    return await run_setting(question, setting, models, None if as_asked else {"arm": effort, "why": setting.describe()})
