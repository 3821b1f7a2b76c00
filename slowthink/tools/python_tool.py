"""The ``python`` tool: runs the model's code in the sandbox (``slowthink.tools.sandbox``) and returns what it
printed, its exit status, and whether it timed out or was cut."""

from __future__ import annotations

from .base import Tool, option_bool, option_number
from .sandbox import SandboxResult, run_python

OPTIONS = {
    "python_timeout_s": "wall-clock seconds one python tool run may take (default 5)",
    "python_memory_mb": "address space per process of a python tool run, in MiB (default 512)",
    "python_unsandboxed": "allow the python tool to run WITHOUT the sandbox where bubblewrap cannot start "
                          "(default false; the environment variable SLOWTHINK_UNSAFE_NO_SANDBOX=1 does the same)",
}
DESCRIPTION = ("Run a Python 3 program in a sandbox (no network, no files kept, a few seconds) and see what it "
               "prints. Print every result you need; Python's standard library is available.")


def format_result(result: SandboxResult) -> str:
    """The model's view of a run: status first, then stdout and stderr (each left out when empty)."""
    if result.timed_out:
        status = "timed out (killed)"
    elif result.truncated:
        status = "output too long (cut and killed)"
    else:
        status = f"exit code {result.exit_code}"
    parts = [status]
    if result.stdout:
        parts.append(f"stdout:\n{result.stdout}")
    if result.stderr:
        parts.append(f"stderr:\n{result.stderr}")
    return "\n".join(parts)


def provider(options: dict):
    timeout_s = option_number(options, "python_timeout_s", 5.0)
    memory_mb = option_number(options, "python_memory_mb", 512, int)
    allow = option_bool(options, "python_unsandboxed")  # None: the environment variable decides

    def python(code: str) -> str:
        return format_result(run_python(code, timeout_s=timeout_s, memory_mb=memory_mb, allow_unsandboxed=allow))

    tool = Tool(name="python", description=DESCRIPTION, fn=python,
                parameters={"type": "object", "additionalProperties": False, "required": ["code"],
                            "properties": {"code": {"type": "string", "description": "the program to run"}}})
    return lambda: tool
