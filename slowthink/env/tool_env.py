"""A multi-turn environment in which the model calls tools while it reasons.

A turn that ends in ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` (inside ``<think>`` or after
it; or the plain form ``calculator\\n12*34`` for a tool with one string argument, ``chat.parse_tool_calls``) is a
tool turn: the environment runs the call(s) with the episode's tools and returns, as the observation,
``\\n<tool_response>\\n...\\n</tool_response>\\n`` per call, appended inline to the context; the model then
continues the same assistant message. Any other turn is the final answer: the whole transcript, with its
tool-call and tool-response blocks taken out (``chat.strip_tool_markup``), is scored by the task and the
episode ends.

Nothing crashes an episode: a call that is not JSON, names an unknown tool, has bad arguments, raises or times
out gets ``error: ...`` as its response, which the model reads (``slowthink.tools.base.execute``). Limits
(:class:`~slowthink.env.base.Limits`): a turn whose calls would go past ``max_tool_calls``, or a tool turn that is
the ``max_turns``-th turn, ends the episode without a response. An episode ended by a limit is scored like any
other, on what is there: a transcript still inside its think block has no answer, so it earns 0 (no
correctness, no format bonus) unless the task can read an answer from it.
"""

from __future__ import annotations

import json

from ..chat import (TOOL_CALL_CLOSE, Mode, ToolCall, check_mode, format_tool_response, parse_tool_calls,
                    strip_tool_markup)
from ..rl.rewards import RewardFn
from ..tasks.base import Problem
from ..tasks.guard import guard
from .base import Limits, StepResult
from .episode import ToolCallRecord

TOOLS_PROMPTS = ("full", "none")


def tools_system_prompt(schemas: list[dict]) -> str:
    """Qwen3's tool instructions (the text its chat template writes for ``tools=``), so a model trained on that
    template recognises them."""
    listed = "\n".join(json.dumps(s, ensure_ascii=False) for s in schemas)
    return ("# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
            "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
            f"{listed}\n</tools>\n\nFor each function call, return a json object with function name and arguments "
            "within <tool_call></tool_call> XML tags:\n<tool_call>\n"
            '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>')


def with_tools_prompt(messages: list[dict], schemas: list[dict]) -> list[dict]:
    """``messages`` with the tool instructions in the system message (added first, or appended to one there)."""
    text = tools_system_prompt(schemas)
    messages = [dict(m) for m in messages]
    if messages and messages[0].get("role") == "system":
        messages[0]["content"] = f"{messages[0]['content']}\n\n{text}"
        return messages
    return [{"role": "system", "content": text}, *messages]


def ends_in_call(turn: str) -> bool:
    """Whether a turn stopped at a tool call: nothing but whitespace after its last ``</tool_call>``."""
    at = turn.rfind(TOOL_CALL_CLOSE)
    return at >= 0 and not turn[at + len(TOOL_CALL_CLOSE):].strip()


class ToolEnv:
    """``ToolEnv(task, toolset, limits)``: the task's problems, answered with tools. ``toolset`` is a
    ``slowthink.tools.ToolSet`` (anything with ``start_episode() -> {name: Tool}``; its ``execute`` is used when
    it has one). ``tools_prompt``: "full" puts Qwen3's tool instructions and the schemas in a system message,
    "none" leaves the task's prompt as it is (a model trained to call these tools without being told).
    A subclass changes where the prompt comes from, how a turn's calls are answered or how the episode is scored
    through the hooks :meth:`prompt`, :meth:`run_calls` and :meth:`reward` (``serve.episodes.RequestToolEnv``)."""

    stop = (TOOL_CALL_CLOSE,)
    runs_tools = True

    def __init__(self, task, toolset, limits: Limits | None = None, mode: Mode = Mode.SYSTEM2,
                 reward_fn: RewardFn | None = None, tools_prompt: str = "full"):
        if tools_prompt not in TOOLS_PROMPTS:
            raise ValueError(f"tools_prompt must be one of {TOOLS_PROMPTS}, got {tools_prompt!r}")
        self.task, self.toolset, self.limits = guard(task), toolset, limits or Limits()
        self.mode, self.reward_fn, self.tools_prompt = check_mode(mode), reward_fn or RewardFn(), tools_prompt
        self.problem: Problem | None = None

    def reset(self, problem: Problem) -> list[dict]:
        self.problem, self.tools = problem, self.toolset.start_episode()
        self.transcript: list[str] = []
        self.turns = self.calls = self.model_tokens = 0
        return self.prompt(problem)

    # -- hooks: a subclass (the server's request episodes) overrides these, never step's bookkeeping ----------
    def prompt(self, problem: Problem) -> list[dict]:
        """The conversation an episode starts from: the task's prompt, with the tool instructions when
        ``tools_prompt`` is "full"."""
        messages = self.task.prompt(problem, self.mode)
        if self.tools_prompt == "full":
            messages = with_tools_prompt(messages, [t.schema() for t in self.tools.values()])
        return messages

    def run_calls(self, calls: list) -> list[ToolCallRecord]:
        """One tool turn's calls (``chat.parse_tool_calls`` items, within the limits) run with the episode's tools
        (``self.tools``), one record each; the observation is made from the records' responses."""
        return [self._run(c) for c in calls]

    def reward(self, text: str):
        """The finished episode's :class:`~slowthink.rl.rewards.Reward` on its transcript without tool markup;
        None: the episode is not scored (reward 0)."""
        return self.reward_fn(self.task, self.problem, text, self.model_tokens, self.mode)

    def step(self, assistant_turn: str, num_tokens: int = 0) -> StepResult:
        if self.problem is None:
            raise RuntimeError("reset(problem) before step(): the environment has no episode")
        self.turns += 1
        self.model_tokens += num_tokens
        self.transcript.append(assistant_turn)
        calls = parse_tool_calls(assistant_turn, self.parameters()) if ends_in_call(assistant_turn) else []
        if not calls:
            return self._final(limit=None)
        if self.calls + len(calls) > self.limits.max_tool_calls:
            return self._final(limit="tool_calls")
        if self.turns >= self.limits.max_turns:
            return self._final(limit="turns")
        records = self.run_calls(calls)
        self.calls += len(calls)
        observation = "\n" + "\n".join(format_tool_response(r.response) for r in records) + "\n"
        self.transcript.append(observation)
        return StepResult(observation, 0.0, False, {"tool_calls": records})

    def parameters(self) -> dict[str, dict]:
        """Each episode tool's JSON-schema parameters: what lets a plain call (``name`` newline argument) be read."""
        return {name: tool.parameters for name, tool in self.tools.items()}

    def end(self, reason: str) -> StepResult:
        return self._final(limit=reason)

    def _run(self, call) -> ToolCallRecord:
        if not isinstance(call, ToolCall):
            return ToolCallRecord(self.turns, None, {}, f"error: {call.message}", True)
        execute = getattr(self.toolset, "execute", None)
        if execute is None:
            from ..tools.base import execute as run

            execute = lambda tools, name, args: run(tools, name, args)  # noqa: E731
        result = execute(self.tools, call.name, call.arguments)
        return ToolCallRecord(self.turns, call.name, call.arguments, result.text, bool(result.error))

    def _final(self, limit: str | None) -> StepResult:
        reward = self.reward(strip_tool_markup("".join(self.transcript)))
        return StepResult("", 0.0 if reward is None else reward.total, True,
                          {"reward": reward, "score": None if reward is None else reward.score, "limit": limit,
                           "tool_calls": []})
