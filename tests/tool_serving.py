"""What the tool-serving tests share: a tiny model with room for a tools block, a server whose engine is a
scripted scheduler (``served``), and the calls the tests make with the real ``openai`` client."""

from __future__ import annotations

from contextlib import contextmanager
from types import SimpleNamespace

import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

from slowthink.serve.app import create_app
from scripted_scheduler import ScriptedScheduler
from serve_helpers import serve_in_thread


KEY = "test-key"
NAME = "tiny-tools"
Q = [{"role": "user", "content": "3+4"}]
ADD = {"type": "function", "function": {"name": "add", "description": "Add two integers.",
                                        "parameters": {"type": "object", "properties": {"a": {"type": "integer"},
                                                                                        "b": {"type": "integer"}},
                                                       "required": ["a", "b"]}}}
MUL = {"type": "function", "function": {"name": "mul", "description": "Multiply two integers.",
                                        "parameters": {"type": "object", "properties": {"a": {"type": "integer"},
                                                                                        "b": {"type": "integer"}}}}}
CALL = '<tool_call>\n{"name": "add", "arguments": {"a": 3, "b": 4}}\n</tool_call>'
THINK = "I should add them.\n</think>\n\n"


def scripted(reply):
    """``reply`` as a settable script: tests swap ``script.reply`` per case."""
    return SimpleNamespace(reply=reply)


@pytest.fixture(scope="module")
def long_model(tok):
    """The tiny preset with room for a tools block (Qwen3's, ~500 characters) in its context."""
    from slowthink.models import build_model

    return build_model("tiny", tok, seed=0, max_positions=2048).eval()


@pytest.fixture(scope="module")
def served(tok, long_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tools")
    script = scripted(lambda prompt: "7")
    app = create_app(long_model, tok, NAME, api_key=KEY, max_batch=8, traces=tmp / "traces.db", jobs=tmp / "jobs.db")
    with scripted_server(app, tok, script) as server:
        yield server


@contextmanager
def scripted_server(app, tokenizer, script, **extra):
    """``app`` served on a thread with its engine replaced by a scheduler that writes ``script.reply(prompt)``; the
    real ``openai`` client and a raw ``httpx`` client for it, with ``extra`` fields."""
    fake = ScriptedScheduler(tokenizer, lambda prompt: script.reply(prompt))
    app.state.server.scheduler = app.state.scheduler = fake
    with serve_in_thread(app, start_timeout=60) as port:
        base = f"http://127.0.0.1:{port}/v1"
        client = openai.OpenAI(base_url=base, api_key=KEY, max_retries=0, timeout=30)
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as http:
            yield SimpleNamespace(client=client, http=http, script=script, fake=fake, app=app, **extra)


def ask(s, reply, **kw):
    s.script.reply = reply
    s.fake.prompts.clear()
    kw.setdefault("messages", Q)
    kw.setdefault("reasoning_effort", "low")
    return s.client.chat.completions.create(model=NAME, **kw)


def stream(s, reply, **kw):
    s.script.reply = reply
    s.fake.prompts.clear()
    kw.setdefault("messages", Q)
    kw.setdefault("reasoning_effort", "low")
    return list(s.client.chat.completions.create(model=NAME, stream=True, **kw))
