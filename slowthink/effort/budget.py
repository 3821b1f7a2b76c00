"""How a request's token budget is shared (pure functions).

``max_completion_tokens`` bounds every token generated for a choice (with ``n`` choices a request may
generate ``n`` times it, as OpenAI and vLLM count it). The router's signals, shared by the choices, are
paid first, from at most half of one choice's budget; what is left is shared by the samples of each
choice. A vote keeps as
many of its samples as get ``MIN_SAMPLE_TOKENS`` each (at least one), and they share the budget equally. A
thinking budget cuts the think block early enough that ``</think>`` and an answer of up to
``ANSWER_ROOM`` tokens (at most a quarter of the sample) still fit.
"""

from __future__ import annotations

MIN_SAMPLE_TOKENS = 32  # a vote's sample gets at least this many tokens, or the vote has fewer samples
ANSWER_ROOM = 64  # tokens a forced-closed think block leaves for the answer (at most a quarter)
SIGNAL_SHARE = 0.5  # of one choice's budget, the most the router's signals may spend


def _check_budget(budget: int) -> None:
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"a token budget must be an integer >= 1, got {budget!r}")


def sample_split(samples: int, budget: int | None, default: int, room: int) -> tuple[int, int]:
    """(samples per choice, tokens per sample). Without a budget every sample gets ``default`` tokens;
    with one (tokens per choice) the samples share it as the module says. Never beyond ``room``, what the
    prompt leaves of the model's context."""
    if samples < 1 or room < 1:
        raise ValueError(f"need samples >= 1 and room >= 1, got {samples} and {room}")
    if budget is None:
        return samples, min(default, room)
    _check_budget(budget)
    kept = max(1, min(samples, budget // MIN_SAMPLE_TOKENS))
    return kept, min(budget // kept, room)


def think_cap(thinking_budget: int, sample_tokens: int, close_tokens: int) -> int:
    """Tokens the think block may take before ``</think>`` (``close_tokens`` long) is forced, within a
    sample's ``sample_tokens``."""
    _check_budget(thinking_budget)
    answer = min(ANSWER_ROOM, sample_tokens // 4)
    return max(1, min(thinking_budget, sample_tokens - close_tokens - answer))


def signal_cap(budget: int | None, sequences: int, cap: int) -> int:
    """Tokens each of the router's ``sequences`` signal samples may generate: its own ``cap``, cut so that
    together they fit in their share of ``budget`` (a choice's; 0: they do not fit at all)."""
    if budget is None:
        return cap
    _check_budget(budget)
    return min(cap, int(budget * SIGNAL_SHARE) // max(sequences, 1))
