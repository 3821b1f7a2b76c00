"""Every bound the server puts on a connection, a request, a key and its stored jobs: one named setting
each (:class:`Limits`, a config dataclass: ``slowthink serve --max-body-bytes N`` sets ``max_body_bytes``),
and the arithmetic of a request's work (:func:`planned_tokens`).

A request's work is what the effort service will generate for it at most: ``n`` choices × samples per
choice × tokens per sample, as ``effort.budget`` shares a ``max_completion_tokens`` (without one: the
effort's tokens per sample, capped by what the prompt leaves of the context), plus the router's signals
for ``auto``. It is known before anything runs, so a request above ``max_request_tokens`` is a 400.
"""

from __future__ import annotations

import dataclasses

from ..config import ConfigBlock, arg, check_positive, require

DAY = 24 * 3600


@dataclasses.dataclass(frozen=True)
class Limits(ConfigBlock):
    """The server's bounds; each error that one of them causes names it."""

    max_body_bytes: int = arg(4 * 1024 * 1024, "largest request body in bytes, read before any parsing (413 beyond)")
    body_timeout: float = arg(30.0, "seconds a client may take to send a request body (408 beyond)")
    header_timeout: float = arg(10.0, "seconds a connection may take to send a request's headers (closed beyond)")
    keep_alive_timeout: float = arg(5.0, "seconds an idle keep-alive connection stays open")
    max_connections: int = arg(512, "open connections and requests in progress at once (503 beyond)")
    max_messages: int = arg(1024, "messages in one request (400 beyond)")
    max_prompt_chars: int | None = arg(None, "characters of all messages together, checked before rendering "
                                             "(400 beyond; None: the model's context × its tokenizer's longest "
                                             "token, so a prompt that fits is never refused)")
    max_stop_chars: int = arg(128, "characters of one stop string (400 beyond)")
    max_request_tokens: int = arg(32768, "tokens one request may generate at most: n × samples per choice × "
                                         "tokens per sample, the router's signals included (400 beyond)")
    max_requests_per_key: int = arg(64, "chat requests of one API key in progress at once (429 beyond)")
    reserved_slots: int | None = arg(None, "engine slots a key above its fair share may not take, so that other "
                                           "keys' requests start at once (None: max_batch / 4)")
    slots_per_request: int | None = arg(None, "engine slots one request holds at most at a time; its other "
                                              "samples wait their turn (None: max_batch / 4)")
    max_queued_jobs: int = arg(64, "queued or running /v1/jobs of one API key (429 beyond)")
    job_attempts: int = arg(3, "times a job is started before it is failed (a crash mid-job restarts it)")
    job_retention: float = arg(7 * DAY, "seconds a finished job is kept before it is deleted")
    max_tool_calls: int = arg(8, "built-in tool calls (--builtin-tools) per choice; a turn past it ends the choice")
    max_tool_turns: int = arg(8, "model turns per choice with built-in tools (each tool turn is one)")
    max_tool_tokens: int | None = arg(None, "tokens of a choice with built-in tools, the model's and the tool "
                                            "responses' together (None: what the prompt leaves of the context)")

    def __post_init__(self):
        super().__post_init__()
        check_positive(self, "max_body_bytes", "body_timeout", "header_timeout", "keep_alive_timeout",
                       "max_connections", "max_messages", "max_stop_chars", "max_request_tokens",
                       "max_requests_per_key", "max_queued_jobs", "job_attempts", "job_retention", "max_tool_turns")
        require(self.max_tool_calls >= 0, "max_tool_calls", "must be >= 0")
        for name in ("max_prompt_chars", "slots_per_request", "max_tool_tokens"):
            require(getattr(self, name) is None or getattr(self, name) > 0, name, "must be > 0 (or None)")
        require(self.reserved_slots is None or self.reserved_slots >= 0, "reserved_slots", "must be >= 0 (or None)")


def setting_tokens(setting, n: int, budget: int | None, temperature: float, room: int) -> int:
    """The most tokens ``n`` choices of a fixed setting generate (``temperature``: what its samples run at)."""
    from ..effort.budget import sample_split

    k = 1 if temperature == 0 else setting.n  # as effort.fixed: greedy samples are one
    k, per_sample = sample_split(k, budget, setting.max_tokens, room)
    return n * k * per_sample


def planned_tokens(effort: str, n: int, budget: int | None, temperature: float | None, room: int,
                   router=None) -> int:
    """The most tokens a request generates (``temperature``: the client's; None: each setting's own, a
    single sample's default being 1, as the server's)."""
    from ..effort import AUTO_FALLBACK, EFFORTS, arm_setting
    from ..effort.budget import signal_cap

    def tokens(setting) -> int:
        t = next((x for x in (temperature, setting.temperature) if x is not None), 1.0)
        return setting_tokens(setting, n, budget, t, room)

    if EFFORTS[effort] is not None:
        return tokens(EFFORTS[effort])
    if router is None:
        return tokens(EFFORTS[AUTO_FALLBACK])
    names = router.signals
    sequences = ("s1" in names) + 2 * ("agree" in names) + ("s2check" in names)
    signals = (("s1" in names) + 2 * ("agree" in names)) * signal_cap(budget, sequences, router.signal_max_tokens)
    signals += ("s2check" in names) * signal_cap(budget, sequences, router.s2_signal_max_tokens)
    most = signals + max(max(tokens(arm_setting(a)) for a in router.arms), tokens(EFFORTS[AUTO_FALLBACK]))
    return most if budget is None else min(most, n * budget)  # a budget bounds the signals and the arm together
