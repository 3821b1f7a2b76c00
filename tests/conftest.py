"""Shared fixtures: a character tokenizer and a tiny freshly initialised model (no downloads)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
PLUGINS = Path(__file__).resolve().parent / "plugins"


@pytest.fixture(scope="session")
def tok():
    from slowthink.tokenizer import build_char_tokenizer

    return build_char_tokenizer()


@pytest.fixture(scope="session")
def tiny_model(tok):
    from slowthink.models import build_model

    return build_model("tiny", tok)


@pytest.fixture(scope="session")
def plugins_dir() -> Path:
    """Folder of example plugin task files (good and deliberately broken ones)."""
    return PLUGINS
