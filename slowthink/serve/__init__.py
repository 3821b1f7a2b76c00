"""OpenAI-compatible serving: ``create_app`` (FastAPI) over a background engine ``Scheduler``."""

from .app import create_app, serve_main

__all__ = ["create_app", "serve_main"]
