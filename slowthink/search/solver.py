"""A test-time strategy ready to run, from the names and options a user gives (``slowthink eval|solve
--strategy ... --n ... --strategy-args ... --verifier ...``): its solve function and verifier, checked
against what the strategy needs."""

from __future__ import annotations

from ..chat import MODES, Mode
from . import NEEDS_VERIFIER, SYSTEM2_ONLY, get_strategy, make_verifier, strategy_options


def make_solver(name: str, task, mode: str, *, n: int | None = None, options: dict | None = None,
                verifier: str = "none", device: str = "cpu"):
    """``(solve, verifier)``: the strategy's solve function with ``options`` (and ``n``) bound, and the verifier
    named by ``verifier``; a ValueError when the strategy cannot run that way."""
    options = dict(options or {})
    if n is not None:
        if "n" not in strategy_options(name):
            raise ValueError(f"strategy {name!r} takes no --n (its options: {strategy_options(name) or 'none'})")
        options["n"] = n
    solve = get_strategy(name, **options)
    scorer = make_verifier(verifier, task, mode, device=device)
    if name in NEEDS_VERIFIER and scorer is None:
        raise ValueError(f"strategy {name!r} needs a verifier: --verifier oracle (ground-truth step labels) or "
                         "outcome-oracle (ground-truth answer check), or RUN/critic (slowthink train prm|orm)")
    if name in SYSTEM2_ONLY and mode != Mode.SYSTEM2:
        raise ValueError(f"strategy {name!r} needs mode system2")
    return solve, scorer


def strategy_modes(name: str) -> tuple[Mode, ...]:
    """The modes a strategy is evaluated in by default: System-2 only for strategies that search the reasoning."""
    return (Mode.SYSTEM2,) if name in SYSTEM2_ONLY else MODES
