"""A stand-in for the server's engine scheduler that answers from a script (test_serve_tools): the tiny test model
does not write tool calls, so these tests script what "the model" writes and check everything around it.

``ScriptedScheduler(tok, reply)`` answers each prompt with ``reply(prompt_text)``, as the engine would: a stop
string ends the text (kept in the token ids, left out of the text), the end-of-turn token is appended otherwise,
``max_tokens`` cuts it (``finish_reason: "length"``), and a streamed request gets its tokens one at a time.
``prompts`` records every prompt it was sent (and ``log``, when given, a file that gets one JSON line per
prompt); ``hold(prompt)``, when given, is awaited before a prompt is answered (so a test can keep a turn in
flight). Run as a script it serves ``create_app`` with this
scheduler and built-in tools, for a test that SIGKILLs the server.
"""

from __future__ import annotations

import asyncio
import json

from slowthink.engine import Completion
from slowthink.serve.scheduler import Update


class ScriptedJob:
    def __init__(self):
        self.updates = asyncio.Queue()


class ScriptedScheduler:
    """The engine scheduler's interface (``submit``, ``cancel``, ``start``, ``stop``) over a script."""

    def __init__(self, tok, reply, hold=None, log: str | None = None):
        self.tok, self.reply, self.hold, self.log, self.prompts = tok, reply, hold, log, []

    def start(self):
        pass

    def stop(self):
        pass

    def cancel(self, job):
        pass

    def submit(self, prompt_ids, n, sampling, stream=False, owner=""):
        prompt = self.tok.decode(prompt_ids, skip_special_tokens=False)
        self.prompts.append(prompt)
        if self.log:
            with open(self.log, "a") as f:
                f.write(json.dumps(prompt) + "\n")
        job = ScriptedJob()
        if self.hold is None:
            self._answer(job, prompt, n, sampling, stream)
        else:
            asyncio.get_running_loop().create_task(self._later(job, prompt, n, sampling, stream))
        return job

    async def _later(self, job, prompt, n, sampling, stream):
        await self.hold(prompt)
        self._answer(job, prompt, n, sampling, stream)

    def _answer(self, job, prompt, n, sampling, stream):
        completions = [self.complete(prompt, sampling) for _ in range(n)]
        if stream:  # a streamed job gets its tokens one at a time first, as the engine's do
            for k in range(max(len(c.token_ids) for c in completions)):
                job.updates.put_nowait(Update(new_tokens=[c.token_ids[k:k + 1] for c in completions]))
        job.updates.put_nowait(Update(completions=completions))

    def complete(self, prompt, sampling) -> Completion:
        text, shown, finish = self.reply(prompt), None, "stop"
        for stop in sampling.stop:  # the engine ends at a stop string: in the ids, not in the text
            if (i := text.find(stop)) >= 0:
                text, shown = text[:i + len(stop)], text[:i]
        ids = self.tok(text, add_special_tokens=False)["input_ids"]
        if len(ids) >= sampling.max_tokens:
            ids, finish, shown = ids[:sampling.max_tokens], "length", None
            text = self.tok.decode(ids)
        elif shown is None:
            ids = ids + [self.tok.eos_token_id]
        return Completion(ids, [0.0] * len(ids), text if shown is None else shown, finish)


def main() -> None:
    """``python tests/scripted_scheduler.py PORT DIR KEY``: a server whose "model" calls the ``add`` tool of
    ``DIR/tools.py`` once, then answers; the answer waits until the file ``DIR/go`` exists. Prompts are logged
    to ``DIR/prompts.jsonl``; jobs and traces are kept in ``DIR``."""
    import sys
    from pathlib import Path

    import uvicorn

    from slowthink.models import build_model
    from slowthink.serve.app import create_app
    from slowthink.tokenizer import build_char_tokenizer
    from slowthink.tools.base import ToolSet

    port, folder, key = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]

    def reply(prompt):
        if "<tool_response>" not in prompt:
            return 'Add them.\n<tool_call>\n{"name": "add", "arguments": {"a": 3, "b": 4}}\n</tool_call>'
        said = prompt.rsplit("<tool_response>\n", 1)[1].split("\n</tool_response>", 1)[0]
        return f"The tool says {said}.\n</think>\n\n{said}"

    async def hold(prompt):  # the turn after the tool's response waits for the test's go
        while "<tool_response>" in prompt and not (folder / "go").exists():
            await asyncio.sleep(0.05)

    tok = build_char_tokenizer()
    app = create_app(build_model("tiny", tok, seed=0, max_positions=2048).eval(), tok, "tiny-tools", api_key=key,
                     traces=folder / "traces.db", jobs=folder / "jobs.db", job_concurrency=1,
                     builtin_tools=ToolSet(tools_file=str(folder / "tools.py")))
    fake = ScriptedScheduler(tok, reply, hold, log=str(folder / "prompts.jsonl"))
    app.state.server.scheduler = app.state.scheduler = fake
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
