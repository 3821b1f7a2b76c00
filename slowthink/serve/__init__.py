"""OpenAI-compatible serving: ``create_app`` (FastAPI) over a background engine ``Scheduler``.

The app is imported on first use, so that ``slowthink --help`` (which reads ``serve.limits`` for the
options of ``slowthink serve``) does not load the web stack and torch."""

__all__ = ["create_app", "serve_main"]


def __getattr__(name: str):
    if name in __all__:
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
