"""A user's own tools from a Python file (``--tools-file my_tools.py``).

Every public top-level function defined in the file (not imported into it; a leading underscore hides one)
becomes a tool: its name, its docstring's first paragraph as the description, and a JSON schema of its
arguments from the type hints. Supported annotations: ``str``, ``int``, ``float``, ``bool``, ``list`` or
``list[X]`` of those, ``Literal[...]`` of strings, ints or bools, and ``X | None`` of those; a parameter with a
default is not required. Anything else (a missing hint, ``dict``, a class, ``*args``) is a :class:`ToolError` naming the
function and parameter. Lines ``name: help`` under an ``Args:`` heading in the docstring describe parameters.
The functions run in this process, like any code the user chose to load; only model-written code is sandboxed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import re
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path

from .base import Tool, ToolError

_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean"}
SUPPORTED = "str, int, float, bool, list, list[str|int|float|bool], Literal[...], X | None"


def load_tools_file(path: str | Path) -> list[Tool]:
    """The tools of every public function defined in ``path``, in the file's order."""
    module = _import_file(Path(path))
    functions = [f for name, f in vars(module).items()
                 if inspect.isfunction(f) and f.__module__ == module.__name__ and not name.startswith("_")]
    if not functions:
        raise ToolError(f"tools file {str(path)!r} defines no public functions; each typed function with a "
                        "docstring becomes a tool")
    return [tool_from_function(f) for f in functions]


def _import_file(path: Path):
    if not path.is_file():
        raise ToolError(f"tools file {str(path)!r} not found (looked in {Path.cwd()})")
    try:
        return import_user_file(path, "slowthink_user_tools")
    except UserFileError as e:
        raise ToolError(f"tools file {str(path)!r}: {e}") from e.__cause__


class UserFileError(ValueError):
    """A user's .py file could not be imported; the exception it raised, if any, is the cause."""


def import_user_file(path: Path, prefix: str) -> types.ModuleType:
    """The module of a user's .py file (a task or tools file), under a name unique to its resolved path and kept in
    ``sys.modules`` (dataclasses, pickling and get_type_hints look it up there). Whatever the file raises on
    import is a UserFileError, SystemExit included (an ``exit()`` in it must not end the command); only
    KeyboardInterrupt passes."""
    resolved = path.resolve()
    name = f"{prefix}_{resolved.stem}_{hashlib.sha1(str(resolved).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise UserFileError("cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as e:  # noqa: BLE001 - the user's file: reported, never raised raw
        sys.modules.pop(name, None)
        if isinstance(e, KeyboardInterrupt):
            raise
        raise UserFileError(f"importing the file failed with {type(e).__name__}: {e}") from e
    return module


def tool_from_function(fn: Callable) -> Tool:
    """A Tool from a typed, documented function (see the module docstring)."""
    where = f"tool function {fn.__name__!r}"
    doc = inspect.getdoc(fn)
    if not doc:
        raise ToolError(f"{where} has no docstring; its first paragraph is what the model reads about it")
    try:
        hints = typing.get_type_hints(fn)
    except Exception as e:  # noqa: BLE001 - an annotation naming something undefined
        raise ToolError(f"{where}: its type hints cannot be resolved ({type(e).__name__}: {e})") from e
    helps = _arg_help(doc)
    properties, required = {}, []
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
            raise ToolError(f"{where}: parameter {p.name!r} is {p.kind.description}; tools take named "
                            "arguments only")
        if p.name not in hints:
            raise ToolError(f"{where}: parameter {p.name!r} has no type hint (supported: {SUPPORTED})")
        prop = json_schema_of(hints[p.name], f"{where}, parameter {p.name!r}")
        if p.name in helps:
            prop["description"] = helps[p.name]
        if p.default is p.empty:
            required.append(p.name)
        else:
            prop["default"] = p.default
        properties[p.name] = prop
    description = doc.split("\n\n")[0].replace("\n", " ").strip()
    return Tool(name=fn.__name__, description=description, fn=fn,
                parameters={"type": "object", "properties": properties, "required": required,
                            "additionalProperties": False})


def json_schema_of(annotation, where: str) -> dict:
    """The JSON schema of one supported annotation; a ToolError naming ``where`` otherwise."""
    if annotation in _SCALARS:
        return {"type": _SCALARS[annotation]}
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is list or (origin is list and not args):
        return {"type": "array"}
    if origin is list and len(args) == 1 and args[0] in _SCALARS:
        return {"type": "array", "items": {"type": _SCALARS[args[0]]}}
    if origin in (typing.Union, types.UnionType) and len(args) == 2 and type(None) in args:
        inner = json_schema_of(next(a for a in args if a is not type(None)), where)  # Optional[X]: X or null
        return {**inner, "type": [inner["type"], "null"] if isinstance(inner["type"], str) else
                [*inner["type"], "null"]}
    if origin is typing.Literal and args and all(type(a) in _SCALARS for a in args):
        kinds = sorted({_SCALARS[type(a)] for a in args})
        return {"type": kinds[0] if len(kinds) == 1 else kinds, "enum": list(args)}
    raise ToolError(f"{where}: unsupported type annotation {annotation!r} (supported: {SUPPORTED})")


def _arg_help(doc: str) -> dict[str, str]:
    """``name: help`` lines under an ``Args:`` heading (Google style), by name."""
    match = re.search(r"^Args:\s*\n((?:[ \t]+.*\n?)+)", doc, flags=re.MULTILINE)
    if not match:
        return {}
    out = {}
    for line in match.group(1).splitlines():
        m = re.match(r"\s+(\w+)(?:\s*\([^)]*\))?:\s*(.+)", line)
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out
