"""The tool interface: what a model may call while it reasons, and how a call is executed.

A :class:`Tool` is a name, a description, the JSON schema of its arguments (OpenAI function ``parameters``) and a
function that takes those arguments as keywords and returns the response text. :func:`execute` runs one call
and never raises: an unknown tool, arguments that are not a JSON object, missing, extra or ill-typed arguments,
an exception or a timeout in the tool all come back as ``ToolResult(text="error: ...", error=True)``, which the
model reads inside ``<tool_response>`` like any other answer.

A :class:`ToolSet` is what a command line names (``--tools calculator,python,memory,retrieve`` plus
``--tools-file my_tools.py``). It builds each tool's shared state once (the long-term memory store, the
retrieval index) and hands out fresh per-episode tools with :meth:`ToolSet.start_episode`.
"""

from __future__ import annotations

import importlib
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_RESPONSE_CHARS = 8000  # what one tool response may put into the context; the rest is cut with a marker
DEFAULT_TIMEOUT_S = 30.0  # a tool call that takes longer is reported as an error (the python tool stops sooner)

# Built-in tools by name: the module in slowthink.tools that provides them. Each module has
# ``OPTIONS: dict[str, str]`` (the ToolSet options it reads, with their help) and
# ``provider(options: dict) -> Callable[[], Tool]`` (built once per ToolSet; called once per episode).
BUILTIN_TOOLS: dict[str, str] = {
    "calculator": "calculator",
    "python": "python_tool",
    "memory": "memory",
    "retrieve": "retrieve",
}


class ToolError(ValueError):
    """A tool set could not be built (unknown tool, bad option, bad tools file). The message says what to fix."""


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict  # JSON schema of the arguments (OpenAI function "parameters"): an object schema
    fn: Callable[..., str] = field(compare=False)  # called with the arguments as keywords; returns the text

    def schema(self) -> dict:
        """The OpenAI tool schema: ``{"type": "function", "function": {name, description, parameters}}``."""
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}


@dataclass(frozen=True)
class ToolResult:
    text: str  # what goes inside <tool_response>...</tool_response> (capped in length)
    error: bool  # the call was malformed, unknown, had bad arguments, raised or timed out


def cap_text(text: str, limit: int = MAX_RESPONSE_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying how much was cut (so the model knows it saw a part)."""
    if len(text) <= limit:
        return text
    marker = f"\n...[truncated {len(text) - limit} characters]"
    return text[: max(0, limit - len(marker))] + marker


def _error(message: str) -> ToolResult:
    return ToolResult(text=cap_text(f"error: {message}"), error=True)


def execute(tools: Mapping[str, Tool], name: str, arguments: dict | str, *,
            timeout_s: float | None = DEFAULT_TIMEOUT_S, max_chars: int = MAX_RESPONSE_CHARS) -> ToolResult:
    """Run one tool call; never raises (see the module docstring). ``arguments`` is a dict or its JSON text."""
    try:
        tool = tools.get(name) if isinstance(name, str) else None
        if tool is None:
            known = ", ".join(sorted(tools)) or "none"
            return _error(f"unknown tool {name!r}; available tools: {known}")
        args = _parse_arguments(arguments)
        if isinstance(args, str):
            return _error(f"{name}: {args}")
        problem = check_arguments(tool.parameters, args)
        if problem:
            return _error(f"{name}: {problem}")
        return _call(tool, args, timeout_s, max_chars)
    except Exception as e:  # noqa: BLE001 - execute's promise is to never raise into the rollout
        return _error(f"{name!r}: {type(e).__name__}: {e}")


def _parse_arguments(arguments: Any) -> dict | str:
    """The arguments as a dict, or a message saying why they are not a JSON object."""
    if isinstance(arguments, str):
        text = arguments.strip() or "{}"  # a tool without arguments may be called with ""
        try:
            arguments = json.loads(text)
        except json.JSONDecodeError as e:
            return f"arguments are not valid JSON ({e.msg} at position {e.pos}): {text[:200]!r}"
    if arguments is None:
        return {}
    if not isinstance(arguments, dict):
        return f"arguments must be a JSON object, got {type(arguments).__name__}: {json.dumps(arguments)[:200]}"
    return arguments


def _call(tool: Tool, args: dict, timeout_s: float | None, max_chars: int) -> ToolResult:
    """Call the tool in a daemon thread so a hung tool cannot hang the rollout (its thread is abandoned)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = tool.fn(**args)
        except BaseException as e:  # noqa: BLE001 - SystemExit from user code is a tool failure too
            box["exc"] = e

    thread = threading.Thread(target=run, name=f"tool-{tool.name}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        return _error(f"{tool.name}: timed out after {timeout_s:g} s")
    if "exc" in box:
        e = box["exc"]
        return _error(f"{tool.name}: {type(e).__name__}: {e}")
    value = box.get("value")
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return ToolResult(text=cap_text(text, max_chars), error=False)


# -- argument checking --------------------------------------------------------------------------------
_JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}


def check_arguments(schema: dict, args: dict) -> str | None:
    """What is wrong with ``args`` against an object ``schema`` (the subset tools use: properties with type,
    enum and array items; required; additionalProperties), or None when they fit."""
    props = schema.get("properties", {})
    missing = [k for k in schema.get("required", ()) if k not in args]
    if missing:
        return f"missing required argument(s) {', '.join(missing)}; expected {_signature(schema)}"
    if schema.get("additionalProperties", False) is False:
        extra = [k for k in args if k not in props]
        if extra:
            return f"unexpected argument(s) {', '.join(extra)}; expected {_signature(schema)}"
    for key, value in args.items():
        problem = _check_value(props.get(key, {}), value, key)
        if problem:
            return problem
    return None


def _check_value(prop: dict, value: Any, where: str) -> str | None:
    if "enum" in prop and value not in prop["enum"]:
        return f"argument {where!r} must be one of {prop['enum']}, got {value!r}"
    kind = prop.get("type")
    if kind is None:
        return None
    kinds = kind if isinstance(kind, list) else [kind]
    if not any(_JSON_TYPES.get(k, lambda v: True)(value) for k in kinds):
        return f"argument {where!r} must be of type {'/'.join(kinds)}, got {type(value).__name__} {value!r:.80}"
    if isinstance(value, list) and "items" in prop:
        for i, item in enumerate(value):
            problem = _check_value(prop["items"], item, f"{where}[{i}]")
            if problem:
                return problem
    return None


def _signature(schema: dict) -> str:
    required = set(schema.get("required", ()))
    parts = [f"{k}: {p.get('type', 'any')}" + ("" if k in required else " (optional)")
             for k, p in schema.get("properties", {}).items()]
    return "{" + ", ".join(parts) + "}"


# -- tool sets ------------------------------------------------------------------------------------------
def option_number(options: Mapping[str, Any], name: str, default: float, kind: type = float) -> Any:
    """A positive number option (``int`` or ``float``), or a ToolError naming it."""
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)) \
            or not value > 0:
        raise ToolError(f"tool option {name} must be a positive {kind.__name__}, got {value!r}")
    return kind(value)


def option_bool(options: Mapping[str, Any], name: str) -> bool | None:
    """A true/false option (None when not given), or a ToolError naming it."""
    value = options.get(name)
    if value is not None and not isinstance(value, bool):
        raise ToolError(f"tool option {name} must be true or false, got {value!r}")
    return value


def _builtin_module(name: str):
    return importlib.import_module(f"slowthink.tools.{BUILTIN_TOOLS[name]}")


def builtin_options() -> dict[str, str]:
    """Every option the built-in tools read, with its help (for ``ToolSet(**options)``)."""
    out: dict[str, str] = {"timeout_s": "seconds one tool call may take before it is reported as an error"}
    for name in BUILTIN_TOOLS:
        out.update(_builtin_module(name).OPTIONS)
    return out


class ToolSet:
    """The tools a run uses: built-ins by name and a user's typed functions from ``tools_file``.

    Options (keywords) configure the built-ins, e.g. ``memory_db="runs/x/memory.sqlite"``,
    ``retrieve_docs="docs/"``, ``python_timeout_s=5``; :func:`builtin_options` lists them all. Shared state
    (the long-term memory store, the retrieval index) is built here once; :meth:`start_episode` is cheap and
    thread-safe."""

    def __init__(self, names: Sequence[str] = (), tools_file: str | None = None, **options: Any):
        if isinstance(names, str):
            names = [n for n in names.split(",")]
        names = [n.strip() for n in names if n.strip()]
        unknown = [n for n in names if n not in BUILTIN_TOOLS]
        if unknown:
            raise ToolError(f"unknown tool(s) {', '.join(unknown)}; built-in tools: {', '.join(BUILTIN_TOOLS)} "
                            "(your own tools go in a Python file given as --tools-file)")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ToolError(f"tool(s) named twice: {', '.join(dupes)}")
        known = builtin_options()
        bad = [k for k in options if k not in known]
        if bad:
            raise ToolError(f"unknown tool option(s) {', '.join(bad)}; options: {', '.join(sorted(known))}")
        self.options = dict(options)
        self.timeout_s = option_number(options, "timeout_s", DEFAULT_TIMEOUT_S)
        self._providers: list[Callable[[], Tool]] = [_builtin_module(n).provider(self.options) for n in names]
        self._file_tools: list[Tool] = []
        if tools_file:
            from .user_tools import load_tools_file

            self._file_tools = load_tools_file(tools_file)
        self._lock = threading.Lock()
        self.names = [t.name for t in self.start_episode().values()]
        if len(set(self.names)) != len(self.names):
            raise ToolError(f"tool names must be unique, got {self.names}")

    def schemas(self) -> list[dict]:
        """The OpenAI tool schemas of every tool, in order."""
        return [t.schema() for t in self.start_episode().values()]

    def start_episode(self) -> dict[str, Tool]:
        """The tools for one episode, by name: per-episode state is fresh, shared state is shared."""
        with self._lock:  # providers may keep counters; the tools they return are independent of each other
            tools = [provide() for provide in self._providers] + list(self._file_tools)
        return {t.name: t for t in tools}

    def execute(self, tools: Mapping[str, Tool], name: str, arguments: dict | str) -> ToolResult:
        """:func:`execute` with this set's timeout."""
        return execute(tools, name, arguments, timeout_s=self.timeout_s)


def toolset_from_spec(spec: str | None, tools_file: str | None = None, **options: Any) -> ToolSet | None:
    """The ToolSet of ``--tools a,b`` and ``--tools-file f.py``; None when neither names a tool."""
    names = [n.strip() for n in (spec or "").split(",") if n.strip()]
    if not names and not tools_file:
        return None
    return ToolSet(names, tools_file=tools_file, **options)
