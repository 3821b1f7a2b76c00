"""The tool interface and the built-in tools: calculator, memory, retrieve, python, a user's tools file."""

from __future__ import annotations

import json
import threading
import time
from fractions import Fraction

import pytest

from slowthink.tools import Tool, ToolError, ToolResult, ToolSet, execute, toolset_from_spec
from slowthink.tools.base import cap_text
from slowthink.tools.calculator import evaluate
from slowthink.tools.sandbox import sandbox_problem
from slowthink.tools.user_tools import load_tools_file


def call(tools, name, **args) -> ToolResult:
    return execute(tools, name, args)


# -- calculator -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("expression, value", [
    ("1 + 2 * 3", "7"), ("(37*41 - 5) / 12", "126"), ("0.1 + 0.2", "3/10 (= 0.3)"), ("2**100", str(2**100)),
    ("2 ** -3", "1/8 (= 0.125)"), ("-7 // 2", "-4"), ("-7 % 3", "2"), ("10 / 4", "5/2 (= 2.5)"),
    ("1e3 - 1", "999"), ("(1/3) * 3", "1"), ("--5", "5"), ("(2/3) ** 2", "4/9 (= 0.444444444444)"),
])
def test_calculator_is_exact(expression, value):
    tools = ToolSet(["calculator"]).start_episode()
    assert call(tools, "calculator", expression=expression) == ToolResult(value, False)


def test_calculator_exact_fractions():
    assert evaluate("1/3 + 1/6") == Fraction(1, 2)
    assert evaluate("0.1 * 3") == Fraction(3, 10)  # decimals are read exactly, not as binary floats


@pytest.mark.parametrize("expression, why", [
    ("x + 1", "Name"), ("__import__('os').system('true')", "Call"), ("(1).real", "Attribute"),
    ("abs(-1)", "Call"), ("[1][0]", "Subscript"), ("'a' * 3", "not a number"), ("1 if 1 else 2", "IfExp"),
    ("lambda: 1", "Lambda"), ("2 ** 100000", "too large"), ("10 ** 10 ** 10", "too large"),
    ("(2**5000) ** 30", "too large"), ("9e99999999", "out of range"), ("1 / 0", "division by zero"),
    ("2 ** 0.5", "not an integer"), ("1 < 2", "Compare"), ("", "non-empty"), ("1 +", "not an arithmetic"),
])
def test_calculator_refuses(expression, why):
    tools = ToolSet(["calculator"]).start_episode()
    result = call(tools, "calculator", expression=expression)
    assert result.error and result.text.startswith("error:") and why in result.text, result.text


# -- execute ----------------------------------------------------------------------------------------------
def _tools():
    def add(a: int, b: int = 1) -> str:
        return str(a + b)

    def boom() -> str:
        raise RuntimeError("broken tool")

    def slow() -> str:
        time.sleep(5)
        return "late"

    schema = {"type": "object", "additionalProperties": False, "required": ["a"],
              "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}
    empty = {"type": "object", "properties": {}, "required": [], "additionalProperties": False}
    return {"add": Tool("add", "adds", schema, add), "boom": Tool("boom", "raises", empty, boom),
            "slow": Tool("slow", "sleeps", empty, slow),
            "long": Tool("long", "talks", empty, lambda: "y" * 100_000)}


@pytest.mark.parametrize("name, arguments, message", [
    ("nope", {}, "unknown tool 'nope'; available tools: add, boom, long, slow"),
    ("add", '{"a": 1,', "arguments are not valid JSON"),
    ("add", "[1, 2]", "arguments must be a JSON object, got list"),
    ("add", {}, "missing required argument(s) a"),
    ("add", {"a": 1, "c": 2}, "unexpected argument(s) c"),
    ("add", {"a": "1"}, "argument 'a' must be of type integer, got str"),
    ("add", {"a": True}, "argument 'a' must be of type integer, got bool"),
    ("boom", {}, "boom: RuntimeError: broken tool"),
])
def test_execute_reports_errors_without_raising(name, arguments, message):
    result = execute(_tools(), name, arguments)
    assert result.error and result.text.startswith("error:") and message in result.text, result.text


def test_execute_accepts_json_text_and_defaults():
    assert execute(_tools(), "add", '{"a": 2}') == ToolResult("3", False)
    assert execute(_tools(), "add", {"a": 2, "b": 5}) == ToolResult("7", False)


def test_execute_times_out_and_caps_output():
    start = time.monotonic()
    result = execute(_tools(), "slow", {}, timeout_s=0.2)
    assert result.error and "timed out after 0.2 s" in result.text and time.monotonic() - start < 2
    long = execute(_tools(), "long", "", max_chars=1000)
    assert not long.error and len(long.text) == 1000 and long.text.endswith("[truncated 99000 characters]")
    assert cap_text("short", 1000) == "short"


# -- tool sets ----------------------------------------------------------------------------------------------
def test_toolset_errors_name_the_problem():
    with pytest.raises(ToolError, match="unknown tool.*calculater.*built-in tools: calculator"):
        ToolSet(["calculater"])
    with pytest.raises(ToolError, match="unknown tool option.*memory_dbb"):
        ToolSet(["memory"], memory_dbb="x")
    with pytest.raises(ToolError, match="retrieve tool needs its documents"):
        ToolSet(["retrieve"])
    with pytest.raises(ToolError, match="named twice"):
        ToolSet(["calculator", "calculator"])
    assert toolset_from_spec(None) is None and toolset_from_spec(" ") is None


def test_schemas_in_order_are_openai_functions(tmp_path):
    ts = toolset_from_spec("memory,calculator", memory_db=str(tmp_path / "m.sqlite"))
    schemas = ts.schemas()
    assert [s["function"]["name"] for s in schemas] == ["memory", "calculator"]
    assert all(s["type"] == "function" and s["function"]["parameters"]["type"] == "object" for s in schemas)
    json.dumps(schemas)  # serialisable as sent to an OpenAI-compatible server


# -- memory ---------------------------------------------------------------------------------------------------
def test_memory_episodes_are_isolated_and_long_term_is_shared(tmp_path):
    ts = ToolSet(["memory"], memory_db=str(tmp_path / "m.sqlite"))
    one, two = ts.start_episode(), ts.start_episode()
    assert not call(one, "memory", action="write", key="plan", text="try small cases first").error
    assert call(one, "memory", action="read", key="plan").text == "try small cases first"
    assert call(two, "memory", action="read", key="plan").error  # another episode sees nothing
    assert call(two, "memory", action="list").text == "no episode notes yet"
    call(one, "memory", action="write", key="lemma", text="primes above 3 are 6k+-1", scope="long_term")
    assert call(two, "memory", action="read", key="lemma", scope="long_term").text == "primes above 3 are 6k+-1"
    call(one, "memory", action="write", key="other", text="unrelated words", scope="long_term")
    hits = call(two, "memory", action="search", query="which primes", scope="long_term").text
    assert hits.startswith("[lemma]") and "other" not in hits
    assert call(one, "memory", action="write", key="k").error  # write needs text


def test_long_term_memory_persists_across_tool_sets(tmp_path):
    db = str(tmp_path / "m.sqlite")
    call(ToolSet(["memory"], memory_db=db).start_episode(), "memory", action="write", key="a", text="kept",
         scope="long_term")
    fresh = ToolSet(["memory"], memory_db=db).start_episode()  # a later run, a new store on the same file
    assert call(fresh, "memory", action="read", key="a", scope="long_term").text == "kept"


def test_long_term_memory_concurrent_writers(tmp_path):
    db = str(tmp_path / "m.sqlite")
    sets = [ToolSet(["memory"], memory_db=db) for _ in range(4)]  # separate connections, as processes have
    errors = []

    def writer(w: int):
        tools = sets[w % 4].start_episode()
        for i in range(25):
            r = call(tools, "memory", action="write", key=f"w{w}-{i}", text=f"note {w} {i}", scope="long_term")
            if r.error:
                errors.append(r.text)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    keys = call(sets[0].start_episode(), "memory", action="list", scope="long_term").text.split(", ")
    assert sorted(keys) == sorted(f"w{w}-{i}" for w in range(8) for i in range(25))


# -- retrieve ---------------------------------------------------------------------------------------------------
DOCS = {
    "volcano.md": "Volcanoes erupt when magma rises through the crust; lava flows and ash clouds follow.",
    "bread.txt": "Bread dough rises because yeast ferments sugar and releases carbon dioxide.",
    "orbit.md": "A satellite stays in orbit because its sideways speed matches the pull of gravity.",
    "notes/chess.txt": "In chess the knight moves in an L shape and can jump over other pieces.",
}


@pytest.fixture
def docs_dir(tmp_path):
    for name, text in DOCS.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "ignored.py").write_text("volcano volcano volcano")
    return tmp_path


@pytest.mark.parametrize("query, best", [("why does yeast make dough rise", "bread.txt"),
                                         ("knight jump pieces", "notes/chess.txt"),
                                         ("magma lava eruption", "volcano.md"),
                                         ("gravity satellite speed", "orbit.md")])
def test_retrieve_ranks_the_right_document_first(docs_dir, query, best):
    tools = ToolSet(["retrieve"], retrieve_docs=str(docs_dir)).start_episode()
    result = call(tools, "retrieve", query=query, k=2)
    assert not result.error and result.text.startswith(f"[1] {best} ")


def test_retrieve_from_jsonl_and_no_match(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps({"title": n, "text": t}) for n, t in DOCS.items()))
    tools = ToolSet(["retrieve"], retrieve_docs=str(path), retrieve_k=1).start_episode()
    text = call(tools, "retrieve", query="carbon dioxide").text
    assert text.startswith("[1] bread.txt") and "[2]" not in text
    assert call(tools, "retrieve", query="zebra quantum").text == "no document matches 'zebra quantum'"
    assert call(tools, "retrieve", query="bread", k=99).error
    (tmp_path / "bad.jsonl").write_text('{"title": "x"}\n')
    with pytest.raises(ToolError, match="bad.jsonl:1: each line must be an object with a string 'text'"):
        ToolSet(["retrieve"], retrieve_docs=str(tmp_path / "bad.jsonl"))


# -- a user's tools file ----------------------------------------------------------------------------------------
USER_TOOLS = '''
from typing import Literal, Optional
import math  # imported names do not become tools

def convert(value: float, unit: Literal["km", "mi"] = "km", tags: list[str] = [], note: Optional[str] = None) -> str:
    """Convert a distance between kilometres and miles.

    Args:
        value: the distance
        unit: the unit of value
    """
    return str(round(value * 0.621371, 3) if unit == "km" else round(value / 0.621371, 3))

def count(items: list, exact: bool) -> int:
    """Count things."""
    return len(items)

def _helper(x):
    return x
'''


def test_user_tools_become_json_schema_tools(tmp_path):
    path = tmp_path / "my_tools.py"
    path.write_text(USER_TOOLS)
    ts = ToolSet(["calculator"], tools_file=str(path))
    schemas = {s["function"]["name"]: s["function"] for s in ts.schemas()}
    assert list(schemas) == ["calculator", "convert", "count"]
    assert schemas["convert"] == {
        "name": "convert", "description": "Convert a distance between kilometres and miles.",
        "parameters": {"type": "object", "additionalProperties": False, "required": ["value"], "properties": {
            "value": {"type": "number", "description": "the distance"},
            "unit": {"type": "string", "enum": ["km", "mi"], "description": "the unit of value", "default": "km"},
            "tags": {"type": "array", "items": {"type": "string"}, "default": []},
            "note": {"type": ["string", "null"], "default": None}}}}
    assert schemas["count"]["parameters"]["required"] == ["items", "exact"]
    assert schemas["count"]["parameters"]["properties"]["exact"] == {"type": "boolean"}
    tools = ts.start_episode()
    assert call(tools, "convert", value=10) == ToolResult("6.214", False)
    assert call(tools, "convert", value=10, unit="ly").error
    assert call(tools, "count", items=[1, 2, 3], exact=True) == ToolResult("3", False)  # int -> JSON text


@pytest.mark.parametrize("source, message", [
    ("def f(x: dict) -> str:\n    'Doc.'\n    return ''\n",
     "tool function 'f', parameter 'x': unsupported type annotation"),
    ("def f(x) -> str:\n    'Doc.'\n    return ''\n", "tool function 'f': parameter 'x' has no type hint"),
    ("def f(x: int) -> str:\n    return ''\n", "tool function 'f' has no docstring"),
    ("def f(*xs: int) -> str:\n    'Doc.'\n    return ''\n", "parameter 'xs' is variadic positional"),
    ("x = 1\n", "defines no public functions"),
    ("import nonexistent_module_xyz\n", "importing the file failed with ModuleNotFoundError"),
    ("import sys\nsys.exit('bye')\n", "importing the file failed with SystemExit: bye"),  # not the command's exit
])
def test_user_tools_errors(tmp_path, source, message):
    path = tmp_path / "bad_tools.py"
    path.write_text(source)
    with pytest.raises(ToolError) as info:
        load_tools_file(path)
    assert message in str(info.value)


# -- python -------------------------------------------------------------------------------------------------------
@pytest.mark.skipif(sandbox_problem() is not None, reason=f"bubblewrap cannot run here: {sandbox_problem()}")
def test_python_tool_runs_in_the_sandbox():
    tools = ToolSet(["python"], python_timeout_s=2).start_episode()
    result = call(tools, "python", code="import os\nprint(sum(range(10)))\nprint(os.path.exists('/work'))")
    assert result == ToolResult("exit code 0\nstdout:\n45\nFalse\n", False)
    failed = call(tools, "python", code="1/0")
    assert not failed.error and failed.text.startswith("exit code 1\nstderr:") and "ZeroDivisionError" in failed.text
    assert call(tools, "python", code="while True: pass").text == "timed out (killed)"


def test_tool_options_are_checked(tmp_path):
    with pytest.raises(ToolError, match="python_timeout_s must be a positive float, got 'soon'"):
        ToolSet(["python"], python_timeout_s="soon")
    with pytest.raises(ToolError, match="python_unsandboxed must be true or false, got 'false'"):
        ToolSet(["python"], python_unsandboxed="false")
    with pytest.raises(ToolError, match="timeout_s must be a positive float, got 0"):
        ToolSet(["calculator"], timeout_s=0)
    (tmp_path / "a.txt").write_text("some text")
    with pytest.raises(ToolError, match="retrieve_k must be a positive int, got 2.5"):
        ToolSet(["retrieve"], retrieve_docs=str(tmp_path), retrieve_k=2.5)
