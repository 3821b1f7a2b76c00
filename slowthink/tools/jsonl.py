"""Reading a JSON Lines file whose every line is one object, with errors that name the file and the line.

Used wherever slowthink reads JSONL itself: the ``retrieve`` tool's documents, the ``code`` task's problems,
and the data-set tasks (to say which line the ``datasets`` reader stopped at: its own "row N" counts within a
block of the file, not from its start).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path


def json_objects(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Each non-blank line of ``path`` as (its line number from 1, the object it holds); a line that is not
    valid JSON, or is JSON but not an object, is a ValueError naming the file and the line."""
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"line {number} of {str(path)!r} is not valid JSON: {e.msg} (column {e.colno})") from None
        if not isinstance(record, dict):
            raise ValueError(f"line {number} of {str(path)!r} is a JSON {type(record).__name__}, not an object")
        yield number, record
