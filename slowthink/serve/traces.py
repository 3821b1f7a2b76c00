"""The trace store: every completion the server returns, one SQLite row per choice, for training later.

    slowthink serve --model runs/x/model [--traces runs/x/traces.db]    # default: beside the model folder
    slowthink traces export --db runs/x/traces.db --out traces.jsonl [--verified-only]

A row holds the request's messages (as the chat template saw them), the raw completion text and its
split into ``reasoning`` / ``answer``, ``reasoning_effort`` and mode, token counts, latency, finish
reason, where it came from (``chat`` or ``job``; streamed or not) and the request's ``metadata``. A choice
that ran built-in tools (``serve.episodes``) also keeps its episode's structure: ``completion_ids`` (the token
ids as sampled, tool responses included, as ``completion``'s text has them) and ``completion_mask`` (1 on the
model's tokens, 0 on the tool responses'); null for every other trace.

**Verification.** A request whose ``metadata`` names a task is scored by that task's verifier
(``Task.score``) and the verdict is stored (``task_correct``)::

    client.chat.completions.create(..., metadata={"task": "arithmetic", "answer": "299114"})

Keys: ``task`` (a built-in task name, or one the server was started with), ``answer`` (the expected
final answer), optionally ``question`` (default: the last user message), ``level`` and ``problem_data``
(a JSON object: the task's ``Problem.data``, e.g. ``{"numbers": [...], "target": 24}`` for countdown).
``POST /v1/feedback`` records a verdict later (``feedback_correct``); ``correct`` is the feedback when
given, else the task's verdict, else null.

**Writes never wait on the disk in a request.** Rows go through a queue to one writer thread, which owns
the connection (WAL mode) and commits in batches; scoring runs there too. Feedback goes through the same
queue, so it always lands after the completion it is about.

**Into training.** ``traces_to_examples(path, tok, task)`` turns an exported JSONL file into rendered
training examples (verified correct and ended by themselves, as STaR keeps them). A tool episode's trace is
rendered from its token ids with its mask, so its tool responses are context, never trained on; its verdict
is taken on the completion without the call and response blocks, as the tool environments score it.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..tasks.base import Problem
from ..tasks.guard import guard
from ..chat import Mode, strip_tool_markup

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3
SCHEMA = """
CREATE TABLE IF NOT EXISTS traces (
    id TEXT NOT NULL,                 -- the chat completion id (chatcmpl-...)
    choice_index INTEGER NOT NULL,
    created REAL NOT NULL,            -- unix time the completion finished
    model TEXT NOT NULL,
    source TEXT NOT NULL,             -- 'chat' or 'job'
    stream INTEGER NOT NULL,
    messages TEXT NOT NULL,           -- JSON list of {role, content[, reasoning_content]}
    completion TEXT NOT NULL,         -- raw generated text (eos and stop string removed)
    reasoning TEXT,                   -- message.reasoning_content (null for System-1)
    answer TEXT NOT NULL,             -- message.content
    reasoning_effort TEXT NOT NULL,
    mode TEXT NOT NULL,               -- system1 | system2
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    latency_s REAL NOT NULL,          -- request received -> completion finished
    finish_reason TEXT NOT NULL,
    metadata TEXT,                    -- JSON object, as sent
    task TEXT,                        -- verification: task name, expected and extracted answer, verdict
    expected_answer TEXT,
    extracted_answer TEXT,
    task_correct INTEGER,
    verify_error TEXT,
    feedback_correct INTEGER,         -- POST /v1/feedback
    feedback_comment TEXT,
    feedback_at REAL,
    owner TEXT NOT NULL DEFAULT '',   -- the name of the API key that made it ('' without keys)
    completion_ids TEXT,              -- built-in tool episodes: JSON token ids of the completion as sampled
    completion_mask TEXT,             -- and its loss mask (1 the model's tokens, 0 tool responses'); else null
    PRIMARY KEY (id, choice_index)
);
CREATE INDEX IF NOT EXISTS traces_created ON traces (created);
"""
COLUMNS = ("id", "choice_index", "created", "model", "source", "stream", "messages", "completion", "reasoning",
           "answer", "reasoning_effort", "mode", "prompt_tokens", "completion_tokens", "reasoning_tokens",
           "latency_s", "finish_reason", "metadata", "task", "expected_answer", "extracted_answer",
           "task_correct", "verify_error", "owner", "completion_ids", "completion_mask")
OWNER_COLUMN = ("owner", "TEXT NOT NULL DEFAULT ''")  # added to databases of schema 1
EPISODE_COLUMNS = (("completion_ids", "TEXT"), ("completion_mask", "TEXT"))  # added to databases of schema < 3
JSON_COLUMNS = ("messages", "metadata", "completion_ids", "completion_mask")
CORRECT = "COALESCE(feedback_correct, task_correct)"


def connect(path: str | Path, synchronous: str = "NORMAL") -> sqlite3.Connection:
    """A connection in WAL mode (readers never block the writer; a killed process loses nothing it
    committed). ``check_same_thread=False``: callers serialise use themselves (one thread or a lock)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=30, check_same_thread=False, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def create_private(path: str | Path) -> None:
    """Create the database file readable and writable by its owner only (SQLite gives its -wal and -shm files
    the same mode); an existing file that others may read is tightened."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    if os.name == "posix" and path.stat().st_mode & 0o077:
        try:
            os.chmod(path, 0o600)
            log.warning("%s could be read by other users: made private (mode 600)", path)
        except OSError as e:
            log.warning("%s can be read by other users and could not be made private (%s)", path, e)


def add_column(conn: sqlite3.Connection, table: str, column: str, declaration: str) -> None:
    """Add a column that a database made by an earlier schema lacks (names are constants, never input)."""
    if column not in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}:
        conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")


def default_traces_path(model_dir: str | Path) -> Path:
    """``<model dir>/../traces.db``: a served ``runs/x/model`` keeps its traces in its run folder."""
    return Path(model_dir).resolve().parent / "traces.db"


# -- verification from request metadata --------------------------------------------------------------
@dataclass(frozen=True)
class Verification:
    task_name: str
    task: Any
    problem: Problem


class TaskResolver:
    """Tasks a request may name in ``metadata.task``: the built-in ones plus those the server was given
    (never a file path from the request: that would import arbitrary code). Instances are cached."""

    def __init__(self, extra: dict[str, Any] | None = None):
        # guarded: a verifier crash leaves one verdict empty (verify_error), logged once per site
        self._tasks: dict[str, Any] = {name: guard(t, report=log.warning) for name, t in (extra or {}).items()}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        from ..tasks.registry import list_tasks

        return sorted(set(list_tasks()) | set(self._tasks))

    def get(self, name: str):
        from ..tasks.registry import BUILTIN_TASKS, get_task

        with self._lock:
            if name not in self._tasks:
                if name not in BUILTIN_TASKS:
                    raise KeyError(name)
                try:
                    task = get_task(name)
                except Exception:  # noqa: BLE001 - a task that needs arguments (a data set's path): not buildable here
                    raise ValueError(f"metadata.task: this server verifies {name!r} only for the data the served "
                                     f"model was trained on; it serves {', '.join(sorted(self._tasks)) or 'none'}") \
                        from None
                self._tasks[name] = guard(task, report=log.warning)
            return self._tasks[name]


def verification_from_metadata(metadata: dict[str, str] | None, messages: list[dict], mode: str,
                               tasks: TaskResolver) -> Verification | None:
    """The problem a request's ``metadata`` describes, or None when it names no task.
    Raises ValueError (the caller's input is wrong) with a message that says what to fix."""
    if not metadata or "task" not in metadata:
        return None
    name = metadata["task"]
    try:
        task = tasks.get(name)
    except KeyError:
        raise ValueError(f"metadata.task: unknown task {name!r}; this server verifies "
                         f"{', '.join(tasks.names())}") from None
    if "answer" not in metadata:
        raise ValueError("metadata.answer: give the expected final answer to verify against "
                         "(e.g. metadata={'task': 'arithmetic', 'answer': '42'})")
    question = metadata.get("question")
    if question is None:
        users = [m["content"] for m in messages if m.get("role") == "user"]
        question = users[-1] if users else ""
    try:
        level = int(metadata.get("level", "0"))
    except ValueError:
        raise ValueError(f"metadata.level: an integer, got {metadata['level']!r}") from None
    data: dict = {}
    if "problem_data" in metadata:
        try:
            data = json.loads(metadata["problem_data"])
        except ValueError as e:
            raise ValueError(f"metadata.problem_data: not JSON ({e})") from None
        if not isinstance(data, dict):
            raise ValueError("metadata.problem_data: a JSON object (the task's Problem.data)")
    problem = Problem(key=question, level=level, question=question, answer=metadata["answer"], data=data)
    probe = metadata["answer"] if mode == Mode.SYSTEM1 else f"\n</think>\n\n{metadata['answer']}"
    crash = task.probe(problem, probe, mode)  # the verifier must read this problem: fail now (400), not later
    if crash is not None:
        raise ValueError(f"metadata: the {name} verifier cannot score this problem ({crash.error}); "
                         "does it need metadata.problem_data?")
    return Verification(name, task, problem)


# -- the store ---------------------------------------------------------------------------------------
class TraceStore:
    """Append-only trace table behind one writer thread. ``add``/``feedback``/``discard`` return a
    ``concurrent.futures.Future`` settled once committed; callers that need not wait just drop it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        create_private(self.path)
        conn = connect(self.path)  # create the schema now, so a bad path fails at startup
        try:
            conn.executescript(SCHEMA)
            add_column(conn, "traces", *OWNER_COLUMN)
            for column in EPISODE_COLUMNS:
                add_column(conn, "traces", *column)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        finally:
            conn.close()
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="slowthink-traces", daemon=True)
                self._thread.start()

    def close(self) -> None:
        """Write what is queued, then stop the writer thread (``start`` again to reopen)."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._q.put(None)
            thread.join(timeout=60)

    # -- producers (any thread) ---------------------------------------------------------------------
    def add(self, records: list[dict], verification: Verification | None = None, replace: bool = False,
            owner: str = "") -> Future:
        """Queue trace rows (one per choice; keys as ``COLUMNS``, minus the verification ones and ``owner``,
        the name of the key that made them). With ``replace`` a row with the same (id, choice_index) is
        overwritten (a job run again after a crash keeps its completion id), else it is kept and the new
        one dropped."""
        return self._put("add", ([{**r, "owner": owner} for r in records], verification, replace))

    def feedback(self, completion_id: str, choice_index: int, correct: bool, comment: str | None = None,
                 owner: str = "") -> Future:
        """Record a verdict on a row ``owner`` made; the future's result is False when there is none."""
        return self._put("feedback", (completion_id, choice_index, correct, comment, owner))

    def discard(self, completion_id: str) -> Future:
        return self._put("discard", (completion_id,))

    def flush(self, timeout: float | None = 60) -> None:
        """Wait until everything queued so far is committed (tests, shutdown)."""
        self._put("noop", ()).result(timeout)

    def _put(self, op: str, args: tuple) -> Future:
        fut: Future = Future()
        self._q.put((op, args, fut))
        return fut

    # -- the writer thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        conn = connect(self.path)
        try:
            stop = False
            while not stop:
                items = [self._q.get()]
                while len(items) < 512:  # whatever else is queued goes in the same transaction
                    try:
                        items.append(self._q.get_nowait())
                    except queue.Empty:
                        break
                if items[-1] is None or None in items:
                    stop = True
                    items = [i for i in items if i is not None]
                self._apply(conn, items)
        finally:
            conn.close()

    def _apply(self, conn: sqlite3.Connection, items: list) -> None:
        """All items in one transaction; if that fails, each in its own (one bad row loses only itself)."""
        results = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op, args, _ in items:
                results.append(getattr(self, f"_do_{op}")(conn, *args))
            conn.execute("COMMIT")
        except Exception as e:  # noqa: BLE001 - a failed batch must not kill the writer
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            if len(items) > 1:
                for item in items:
                    self._apply(conn, [item])
                return
            log.exception("trace store: write failed")
            items[0][2].set_exception(e)
            return
        for (_, _, fut), r in zip(items, results):
            fut.set_result(r)

    @staticmethod
    def _do_noop(conn) -> None:
        return None

    @staticmethod
    def _do_add(conn, records: list[dict], verification: Verification | None, replace: bool) -> int:
        rows = []
        for rec in records:
            rec = {"completion_ids": None, "completion_mask": None, **rec, "task": None, "expected_answer": None,
                   "extracted_answer": None, "task_correct": None, "verify_error": None}
            if verification is not None:
                rec["task"], rec["expected_answer"] = verification.task_name, verification.problem.answer
                score, crash = verification.task.check(verification.problem, scored_text(rec), rec["mode"])
                if crash is None:
                    rec["extracted_answer"], rec["task_correct"] = score.answer, int(bool(score.correct))
                else:  # a verifier bug leaves the verdict empty
                    rec["verify_error"] = f"{crash.error} at {crash.site}"[:1000]
            for key in JSON_COLUMNS:
                if rec[key] is not None and not isinstance(rec[key], str):
                    rec[key] = json.dumps(rec[key])
            rows.append(tuple(rec[c] for c in COLUMNS))
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        cur = conn.executemany(f"{verb} INTO traces ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                               rows)
        return cur.rowcount

    @staticmethod
    def _do_feedback(conn, completion_id: str, choice_index: int, correct: bool, comment: str | None,
                     owner: str) -> bool:
        cur = conn.execute("UPDATE traces SET feedback_correct=?, feedback_comment=?, feedback_at=? "
                           "WHERE id=? AND choice_index=? AND owner=?",
                           (int(bool(correct)), comment, time.time(), completion_id, choice_index, owner))
        return cur.rowcount > 0

    @staticmethod
    def _do_discard(conn, completion_id: str) -> int:
        return conn.execute("DELETE FROM traces WHERE id=?", (completion_id,)).rowcount


# -- reading and exporting ---------------------------------------------------------------------------
def _record(row: sqlite3.Row) -> dict:
    d = dict(row)
    for key in JSON_COLUMNS:
        d[key] = json.loads(d[key]) if d[key] is not None else None
    d["stream"] = bool(d["stream"])
    for key in ("task_correct", "feedback_correct", "correct"):
        d[key] = None if d[key] is None else bool(d[key])
    return d


def _check_db(db: str | Path) -> None:
    if not Path(db).is_file():
        raise FileNotFoundError(f"{db}: no trace database (start 'slowthink serve' with --traces PATH)")


def iter_traces(db: str | Path, verified_only: bool = False, completion_id: str | None = None) -> Iterator[dict]:
    """Stored traces, oldest first, as dicts (``messages``/``metadata`` decoded; ``correct`` = the
    feedback verdict when given, else the task's). ``verified_only``: only those verified correct."""
    _check_db(db)
    conn = connect(db)
    try:
        where, args = [], []
        if verified_only:
            where.append(f"{CORRECT} = 1")
        if completion_id is not None:
            where.append("id = ?")
            args.append(completion_id)
        sql = (f"SELECT *, {CORRECT} AS correct FROM traces" + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY created, id, choice_index")
        for row in conn.execute(sql, args):
            yield _record(row)
    finally:
        conn.close()


def export_jsonl(db: str | Path, out: str | Path, verified_only: bool = False) -> int:
    """Write one JSON object per trace to ``out`` (replaced atomically); returns how many."""
    _check_db(db)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    count = 0
    with open(tmp, "w") as f:
        for rec in iter_traces(db, verified_only):
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            count += 1
    tmp.replace(out)
    return count


def traces_to_examples(path: str | Path, tok, task=None, mode: str | None = None) -> list:
    """Training examples (``tokenizer.Rendered``) from an exported JSONL file, as STaR keeps traces: only
    those verified correct (``correct``: feedback, else the task's verdict) that ended by themselves
    (``finish_reason == "stop"``), each distinct (messages, completion) once, rendered with the messages
    the model saw. With ``task``: traces verified by another task are skipped, and those verified by this
    one are scored again (the trace must still be correct). ``mode``: keep only that mode's traces."""
    from ..tokenizer import render_example

    examples, seen = [], set()
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as e:
                raise ValueError(f"{path}:{line_no}: not JSON ({e})") from None
            if rec.get("correct") is not True or rec.get("finish_reason") != "stop":
                continue
            if mode is not None and rec["mode"] != mode:
                continue
            if task is not None and rec.get("task") is not None:
                if rec["task"] != task.name:
                    continue
                if rec.get("feedback_correct") is None:
                    users = [m["content"] for m in rec["messages"] if m.get("role") == "user"]
                    question = (rec.get("metadata") or {}).get("question") or (users[-1] if users else "")
                    data = json.loads((rec.get("metadata") or {}).get("problem_data") or "{}")
                    problem = Problem(key=question, level=0, question=question, answer=rec["expected_answer"],
                                      data=data)
                    if not task.score(problem, scored_text(rec), rec["mode"]).correct:
                        continue
            key = (json.dumps(rec["messages"], sort_keys=True), rec["completion"], rec["mode"])
            if key in seen:
                continue
            seen.add(key)
            if rec.get("completion_ids") is None:
                examples.append(render_example(tok, rec["messages"], rec["mode"], rec["completion"]))
            else:
                examples.append(render_episode(tok, rec, f"{path}:{line_no}"))
    return examples


def scored_text(rec: dict) -> str:
    """What a verifier scores: the completion, with a tool episode's call and response blocks taken out (as the
    tool environments score it)."""
    return rec["completion"] if rec.get("completion_ids") is None else strip_tool_markup(rec["completion"])


def render_episode(tok, rec: dict, where: str):
    """The training example of a built-in tool episode's trace: its prompt, then its completion's token ids as
    sampled (never re-tokenised) with their mask, so the tool responses (mask 0) stay out of the loss."""
    from ..tokenizer import Rendered, render_prompt

    ids, mask = rec["completion_ids"], rec.get("completion_mask")
    if not isinstance(mask, list) or len(mask) != len(ids) or set(mask) - {0, 1}:
        raise ValueError(f"{where}: completion_mask must be a list of 0/1, one per completion_ids entry")
    if ids and max(ids) >= len(tok):
        raise ValueError(f"{where}: completion_ids hold token id {max(ids)}, past this tokenizer's {len(tok)}: "
                         "the trace was served by a model with another tokenizer")
    prompt = render_prompt(tok, rec["messages"], rec["mode"])
    return Rendered(ids=prompt + list(ids), mask=[0] * len(prompt) + list(mask), prompt_len=len(prompt))
