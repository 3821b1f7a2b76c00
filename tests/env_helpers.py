"""Scripted policies and small tool sets for the environment tests (no model needed)."""

from __future__ import annotations

import threading

from slowthink.engine import Completion
from slowthink.tools.base import Tool, execute
from slowthink.tools.calculator import TOOL as CALCULATOR

CALL = '<tool_call>{{"name": "{name}", "arguments": {args}}}</tool_call>'


def call(name: str, args: str) -> str:
    return CALL.format(name=name, args=args)


class Scripted:
    """``generate(prompt_ids, n, sampling)`` whose sample j of a call writes ``reply(prompt_text, j)``, cut as the
    engine cuts it: at the first stop string (its tokens kept, its text left out), or at ``max_tokens``; a reply
    that ends by itself gets the end-of-turn token. Records every call."""

    def __init__(self, tok, reply, logprob: float = -0.25):
        self.tok, self.reply, self.logprob = tok, reply, logprob
        self.calls: list[tuple[list[int], int, object]] = []
        self.lock = threading.Lock()

    async def generate(self, prompt_ids, n, sampling):
        with self.lock:
            self.calls.append((list(prompt_ids), n, sampling))
        prompt = self.tok.decode(prompt_ids, skip_special_tokens=False)
        return [self.complete(self.reply(prompt, j), sampling) for j in range(n)]

    def complete(self, full: str, sampling) -> Completion:
        hits = [(i, s) for s in sampling.stop if (i := full.find(s)) >= 0]
        if hits:
            at, stop = min(hits)
            ids, text, reason = self.encode(full[:at + len(stop)]), full[:at], "stop"
        else:
            ids, text, reason = self.encode(full) + [self.tok.eos_token_id], full, "stop"
        if len(ids) > sampling.max_tokens:
            ids = ids[:sampling.max_tokens]
            text, reason = self.tok.decode(ids, skip_special_tokens=False), "length"
        return Completion(ids, [self.logprob] * len(ids), text, reason)

    def encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]


def raises(**kw) -> str:
    raise RuntimeError("the tool broke")


BROKEN = Tool("broken", "always raises", {"type": "object", "properties": {}}, raises)


class FakeToolSet:
    """What ``ToolEnv`` needs of a ``slowthink.tools.ToolSet``: fresh tools per episode and ``execute``."""

    def __init__(self, *tools: Tool, timeout_s: float = 5.0):
        self.tools = tools or (CALCULATOR, BROKEN)
        self.timeout_s = timeout_s
        self.episodes = 0

    def start_episode(self) -> dict[str, Tool]:
        self.episodes += 1
        return {t.name: t for t in self.tools}

    def schemas(self) -> list[dict]:
        return [t.schema() for t in self.tools]

    def execute(self, tools, name, arguments):
        return execute(tools, name, arguments, timeout_s=self.timeout_s)


class FakeEngine:
    """``Engine``'s scheduler surface over a scripted policy: a request finishes after one step per token;
    records which requests were decoding at each step."""

    def __init__(self, policy: Scripted):
        self.policy, self.running, self.log, self.cancelled = policy, [], [], []

    def add(self, prompt_ids, n, sampling):
        prompt = self.policy.tok.decode(prompt_ids, skip_special_tokens=False)
        req = type("Req", (), {})()
        req.completions = [self.policy.complete(self.policy.reply(prompt, j), sampling) for j in range(n)]
        req.left, req.prompt = max(len(c.token_ids) for c in req.completions), prompt
        self.running.append(req)
        return req

    def has_unfinished(self):
        return bool(self.running)

    def step(self):
        self.log.append(list(self.running))
        for r in self.running:
            r.left -= 1
        done = [r for r in self.running if r.left <= 0]
        self.running = [r for r in self.running if r.left > 0]
        for r in done:
            if hasattr(r, "on_done"):
                r.on_done()
        return done

    def cancel(self, req):
        self.cancelled.append(req)
        self.running = [r for r in self.running if r is not req]
