"""Tools a model calls while it reasons: the interface (``base``), the sandbox for model-written code
(``sandbox``), the built-in tools (``calculator``, ``python_tool``, ``memory``, ``retrieve``) and a user's
own typed functions (``user_tools``). See docs/tools.md."""

from .base import (BUILTIN_TOOLS, MAX_RESPONSE_CHARS, Tool, ToolError, ToolResult, ToolSet, execute,
                   toolset_from_spec)

__all__ = ["BUILTIN_TOOLS", "MAX_RESPONSE_CHARS", "Tool", "ToolError", "ToolResult", "ToolSet", "execute",
           "toolset_from_spec"]
