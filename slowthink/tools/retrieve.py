"""The ``retrieve`` tool: BM25 search (``bm25s``) over a local document collection.

The collection (option ``retrieve_docs``) is a folder, whose ``.txt`` and ``.md`` files are one document each
(searched recursively, titled by their path inside the folder), or a JSONL file whose lines are objects with
``text`` and optionally ``title`` (or ``id``). The index is built once per ToolSet and shared by its episodes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from .base import Tool, ToolError, option_number
from .jsonl import json_objects

OPTIONS = {
    "retrieve_docs": "the retrieve tool's documents: a folder of .txt/.md files or a JSONL file with 'text' "
                     "(and optional 'title') per line",
    "retrieve_k": "how many documents the retrieve tool returns by default (default 3)",
}
MAX_K = 10
SNIPPET_CHARS = 1500
DESCRIPTION = ("Search the document collection by keywords (BM25) and get the best matching documents, "
               "each with its title and text.")


@dataclass(frozen=True)
class Document:
    title: str
    text: str


def load_documents(path: str | Path) -> list[Document]:
    """The documents of a folder of .txt/.md files or of a JSONL file; a ToolError says what is wrong."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in (".txt", ".md"))
        docs = [Document(str(p.relative_to(path)), p.read_text(encoding="utf-8", errors="replace")) for p in files]
    elif path.is_file() and path.suffix.lower() in (".jsonl", ".json"):
        try:
            lines = list(json_objects(path))
        except ValueError as e:
            raise ToolError(f"retrieve_docs: {e}") from None
        docs = [_jsonl_document(record, number, path) for number, record in lines]
    else:
        raise ToolError(f"retrieve_docs {str(path)!r} must be a folder of .txt/.md files or a .jsonl file "
                        f"({'not found' if not path.exists() else 'neither'})")
    docs = [d for d in docs if d.text.strip()]
    if not docs:
        raise ToolError(f"retrieve_docs {str(path)!r} holds no non-empty documents")
    return docs


def _jsonl_document(record: dict, number: int, path: Path) -> Document:
    if not isinstance(record.get("text"), str):
        raise ToolError(f"{path}:{number}: each line must be an object with a string 'text' field")
    title = record.get("title", record.get("id", f"line {number}"))
    return Document(str(title), record["text"])


class Index:
    """BM25 over a list of documents (title and text both indexed)."""

    def __init__(self, docs: list[Document]):
        import bm25s

        self._bm25s = bm25s
        self.docs = docs
        self._retriever = bm25s.BM25()
        self._retriever.index(self._tokenize([f"{d.title}\n{d.text}" for d in docs]), show_progress=False)
        self._lock = threading.Lock()  # the retriever is not documented as thread-safe

    def _tokenize(self, texts: list[str]):
        return self._bm25s.tokenize(texts, stopwords="en", show_progress=False)

    def search(self, query: str, k: int) -> list[tuple[Document, float]]:
        """The ``k`` best documents with a positive score, best first."""
        k = max(1, min(k, len(self.docs)))
        with self._lock:
            tokens = self._tokenize([query])
            if not tokens.ids or not tokens.ids[0]:
                return []
            ids, scores = self._retriever.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        return [(self.docs[int(i)], float(s)) for i, s in zip(ids[0], scores[0]) if s > 0]


def format_hits(hits: list[tuple[Document, float]], query: str) -> str:
    if not hits:
        return f"no document matches {query!r}"
    parts = []
    for rank, (doc, score) in enumerate(hits, 1):
        text = doc.text if len(doc.text) <= SNIPPET_CHARS else doc.text[:SNIPPET_CHARS] + " ..."
        parts.append(f"[{rank}] {doc.title} (score {score:.2f})\n{text.strip()}")
    return "\n\n".join(parts)


def provider(options: dict):
    if not options.get("retrieve_docs"):
        raise ToolError("the retrieve tool needs its documents: give the option retrieve_docs (a folder of "
                        ".txt/.md files or a .jsonl file)")
    index = Index(load_documents(options["retrieve_docs"]))
    default_k = option_number(options, "retrieve_k", 3, int)
    if default_k > MAX_K:
        raise ToolError(f"retrieve_k must be between 1 and {MAX_K}, got {default_k}")

    def retrieve(query: str, k: int = default_k) -> str:
        if not query.strip():
            raise ValueError("query must not be empty")
        if not 1 <= k <= MAX_K:
            raise ValueError(f"k must be between 1 and {MAX_K}, got {k}")
        return format_hits(index.search(query, k), query)

    tool = Tool(name="retrieve", description=DESCRIPTION, fn=retrieve,
                parameters={"type": "object", "additionalProperties": False, "required": ["query"],
                            "properties": {"query": {"type": "string", "description": "keywords to search for"},
                                           "k": {"type": "integer", "description": "how many documents",
                                                 "default": default_k}}})
    return lambda: tool
