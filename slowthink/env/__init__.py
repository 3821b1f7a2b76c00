"""Environments: multi-turn episodes in which the model calls tools while it reasons (docs/environments.md).

``TaskEnv(task)`` is every task as a one-turn environment; ``ToolEnv(task, toolset, limits)`` runs tool calls;
``EpisodeRunner`` runs many episodes over an async ``generate`` (``EngineDriver`` in-process); an ``Episode``
keeps token ids, the sampler's log-probs and the loss mask end to end.
"""

from .base import Environment, Limits, StepResult, TaskEnv
from .episode import Episode, Segment, ToolCallRecord
from .runner import EngineDriver, EpisodeRunner
from .stats import ToolSpec, tool_options, tool_stats
from .tool_env import ToolEnv, tools_system_prompt

__all__ = ["Environment", "Limits", "StepResult", "TaskEnv", "ToolEnv", "Episode", "Segment", "ToolCallRecord",
           "EpisodeRunner", "EngineDriver", "tools_system_prompt", "run_episodes", "ToolSpec", "tool_options", "tool_stats"]


def run_episodes(engine, tok, make_env, problems, mode, n, sampling, pool=None, first: int = 0) -> list[list[Episode]]:
    """n episodes per problem on an in-process ``Engine`` (synchronous); ``first`` as in ``EpisodeRunner.run``.
    Episodes with tools must fit the model's positions (``max_position_embeddings``), or a ValueError says so."""
    driver = EngineDriver(engine)
    config = getattr(getattr(engine, "model", None), "config", None)
    context = getattr(config, "max_position_embeddings", None)
    runner = EpisodeRunner(driver.generate, tok, make_env, pool, context if isinstance(context, int) else None)
    return driver.run(runner.run(problems, mode, n, sampling, first))
