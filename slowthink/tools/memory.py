"""The ``memory`` tool: notes the model writes, reads and searches.

Two scopes. ``episode`` notes live for one episode only (each :meth:`ToolSet.start_episode` gets empty
ones). ``long_term`` notes are kept across episodes in one SQLite database (option ``memory_db``; without it,
an in-memory database that lasts as long as the ToolSet), shared by every episode that runs at the same time,
in threads or in other processes: each operation is one short SQLite transaction on its own connection
(WAL journal, busy timeout), so concurrent writers wait for each other instead of failing.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from .base import Tool

OPTIONS = {"memory_db": "SQLite file of the memory tool's long-term notes, kept across episodes and runs "
                        "(default: in memory, for the life of the tool set)"}
MAX_KEY_CHARS = 200
MAX_NOTE_CHARS = 4000
MAX_EPISODE_NOTES = 1000
SEARCH_RESULTS = 5
BUSY_TIMEOUT_S = 30.0

DESCRIPTION = ("Notes. action 'write' saves text under a key, 'read' returns a key's text, 'search' finds "
               "notes by words, 'list' names the keys. scope 'episode' (default) lasts for this problem only; "
               "'long_term' is kept across problems and shared with other episodes.")
PARAMETERS = {
    "type": "object", "additionalProperties": False, "required": ["action"],
    "properties": {
        "action": {"type": "string", "enum": ["write", "read", "search", "list"]},
        "key": {"type": "string", "description": "the note's name (write, read)"},
        "text": {"type": "string", "description": "the note's text (write)"},
        "query": {"type": "string", "description": "words to look for (search)"},
        "scope": {"type": "string", "enum": ["episode", "long_term"], "default": "episode"},
    },
}


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def rank_notes(notes: Iterable[tuple[str, str]], query: str, limit: int = SEARCH_RESULTS) -> list[tuple[str, str]]:
    """Notes sharing the most words with ``query`` (key and text both count), best first; ties by key."""
    wanted = _words(query)
    scored = [(len(wanted & (_words(k) | _words(t))), k, t) for k, t in notes]
    scored = [s for s in scored if s[0] > 0]
    scored.sort(key=lambda s: (-s[0], s[1]))
    return [(k, t) for _, k, t in scored[:limit]]


class LongTermStore:
    """Notes in SQLite, safe for concurrent use from threads and processes."""

    def __init__(self, path: str | None = None):
        self.path = str(path) if path else None
        self._lock = threading.Lock()  # one in-memory connection is shared; file connections are per call
        self._shared = None
        if self.path is None:
            self._shared = sqlite3.connect(":memory:", check_same_thread=False)
        else:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with self._connection() as db:
            if self.path is not None:
                db.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
            db.execute("CREATE TABLE IF NOT EXISTS notes (key TEXT PRIMARY KEY, text TEXT NOT NULL, "
                       "updated REAL NOT NULL)")

    @contextlib.contextmanager
    def _connection(self):
        """One transaction: committed on success, rolled back on an exception."""
        if self._shared is not None:
            with self._lock:
                yield from self._transaction(self._shared)
            return
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S)
        try:
            yield from self._transaction(db)
        finally:
            db.close()

    @staticmethod
    def _transaction(db: sqlite3.Connection):
        try:
            yield db
        except BaseException:
            db.rollback()
            raise
        db.commit()

    def write(self, key: str, text: str) -> None:
        with self._connection() as db:
            db.execute("INSERT INTO notes (key, text, updated) VALUES (?, ?, ?) "
                       "ON CONFLICT(key) DO UPDATE SET text = excluded.text, updated = excluded.updated",
                       (key, text, time.time()))

    def read(self, key: str) -> str | None:
        with self._connection() as db:
            row = db.execute("SELECT text FROM notes WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def keys(self) -> list[str]:
        with self._connection() as db:
            return [r[0] for r in db.execute("SELECT key FROM notes ORDER BY key")]

    def search(self, query: str, limit: int = SEARCH_RESULTS) -> list[tuple[str, str]]:
        words = sorted(_words(query))[:20]
        if not words:
            return []
        where = " OR ".join(["lower(key) LIKE ? OR lower(text) LIKE ?"] * len(words))
        params = [f"%{w}%" for w in words for _ in range(2)]
        with self._connection() as db:
            rows = db.execute(f"SELECT key, text FROM notes WHERE {where} LIMIT 500", params).fetchall()
        return rank_notes(rows, query, limit)


class EpisodeNotes:
    def __init__(self):
        self._notes: dict[str, str] = {}
        self._lock = threading.Lock()

    def write(self, key: str, text: str) -> None:
        with self._lock:
            if key not in self._notes and len(self._notes) >= MAX_EPISODE_NOTES:
                raise ValueError(f"this episode already has {MAX_EPISODE_NOTES} notes; overwrite one")
            self._notes[key] = text

    def read(self, key: str) -> str | None:
        with self._lock:
            return self._notes.get(key)

    def keys(self) -> list[str]:
        with self._lock:
            return sorted(self._notes)

    def search(self, query: str, limit: int = SEARCH_RESULTS) -> list[tuple[str, str]]:
        with self._lock:
            notes = list(self._notes.items())
        return rank_notes(notes, query, limit)


def _need(value: str | None, name: str, action: str) -> str:
    if value is None or not value.strip():
        raise ValueError(f"action {action!r} needs a non-empty {name!r}")
    return value


def make_memory_fn(episode: EpisodeNotes, long_term: LongTermStore):
    def memory(action: str, key: str | None = None, text: str | None = None, query: str | None = None,
               scope: str = "episode") -> str:
        store = episode if scope == "episode" else long_term
        if action == "write":
            key, text = _need(key, "key", action).strip(), _need(text, "text", action)
            if len(key) > MAX_KEY_CHARS or len(text) > MAX_NOTE_CHARS:
                raise ValueError(f"a key holds at most {MAX_KEY_CHARS} characters and a note {MAX_NOTE_CHARS}")
            store.write(key, text)
            return f"saved note {key!r} ({scope})"
        if action == "read":
            found = store.read(_need(key, "key", action).strip())
            if found is None:
                raise ValueError(f"no {scope} note {key!r}; keys: {', '.join(store.keys()[:50]) or 'none'}")
            return found
        if action == "search":
            hits = store.search(_need(query, "query", action))
            return "\n".join(f"[{k}] {t}" for k, t in hits) if hits else f"no {scope} note matches {query!r}"
        return ", ".join(store.keys()) or f"no {scope} notes yet"  # list (the schema allows nothing else)

    return memory


def provider(options: dict):
    long_term = LongTermStore(options.get("memory_db"))  # one store for every episode of this tool set
    return lambda: Tool(name="memory", description=DESCRIPTION, parameters=PARAMETERS,
                        fn=make_memory_fn(EpisodeNotes(), long_term))
