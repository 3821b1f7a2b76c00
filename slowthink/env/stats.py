"""What a batch of episodes did with its tools, for a trainer's per-step metrics."""

from __future__ import annotations

from dataclasses import dataclass, field

from .base import Limits
from .episode import Episode


def tool_stats(episodes: list[Episode]) -> dict[str, float]:
    """Means per episode of tool calls, tool errors, turns and tool-response tokens (``response_len`` counts them
    too); the share of tool calls that failed; the share of
    episodes ended by a limit; and the share of correct episodes that used a tool. Empty when no episode was run
    with tools (one-turn runs log what they always logged)."""
    if not episodes or not any(e.with_tools for e in episodes):
        return {}
    n = len(episodes)
    calls = sum(len(e.tool_calls) for e in episodes)
    errors = sum(e.tool_errors for e in episodes)
    correct = [e for e in episodes if e.score is not None and e.score.correct]
    return {"tool_calls_per_episode": calls / n, "tool_errors_per_episode": errors / n,
            "tool_error_rate": errors / calls if calls else 0.0,
            "turns_per_episode": sum(e.turns for e in episodes) / n,
            "tool_tokens_per_episode": sum(len(e.token_ids) - e.model_tokens for e in episodes) / n,
            "episodes_with_tool": sum(bool(e.tool_calls) for e in episodes) / n,
            "limit_ended": sum(e.limit is not None for e in episodes) / n,
            "correct_used_tool": sum(bool(e.tool_calls) for e in correct) / len(correct) if correct else 0.0}


@dataclass(frozen=True)
class ToolSpec:
    """A tool set by what names it (plain data: it crosses to another process, a Ray rollout actor, where
    ``build()`` makes the ``ToolSet``; a built ``ToolSet`` holds locks and closures and does not pickle)."""

    names: str
    tools_file: str | None = None
    options: dict = field(default_factory=dict)

    def build(self):
        from ..tools.base import toolset_from_spec

        return toolset_from_spec(self.names or None, self.tools_file or None, **self.options)


def tool_options(cfg) -> dict:
    """``LocalRolloutWorker`` keyword arguments of a config with the ``ToolsConfig`` fields: the tool set (a
    :class:`ToolSpec`, checked by building it once here), the episode limits and the prompt style; empty when the
    config names no tool (one-turn episodes)."""
    spec = ToolSpec(getattr(cfg, "tools", "") or "", getattr(cfg, "tools_file", "") or None,
                    dict(getattr(cfg, "tool_args", None) or {}))
    if spec.build() is None:  # also raises ToolError (a ValueError) on a bad tool name, file or option
        return {}
    return {"tools": spec, "limits": Limits(cfg.max_tool_calls, cfg.max_turns, cfg.max_episode_tokens),
            "tools_prompt": cfg.tools_prompt}
