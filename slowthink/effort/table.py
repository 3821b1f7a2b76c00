"""The named efforts: each is a fixed :class:`Setting` (mode, samples, tokens per sample, thinking budget),
except ``auto``, which is the router's choice per question."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..chat import Mode, check_mode
from ..router.arms import Arm


@dataclass(frozen=True)
class Setting:
    """One fixed way to answer: ``n`` samples per choice in ``mode`` (one: its answer; more: their majority
    vote), at most ``max_tokens`` each when the request sets no budget, the think block forced closed after
    ``thinking_budget`` tokens when one is set."""

    name: str
    mode: Mode = Mode.SYSTEM2
    n: int = 1
    temperature: float | None = None  # of the samples; None: the caller's default
    max_tokens: int = 256  # per sample, when the request sets no max_completion_tokens
    thinking_budget: int | None = None  # think tokens before </think> is forced (System-2)
    model: str = "main"  # which model runs it (router arms may name "fast" or "slow")
    verifier: str = ""  # which verifier weighs the vote ("" = plain majority)

    def __post_init__(self):
        check_mode(self.mode)
        if self.n < 1 or self.max_tokens < 1 or (self.thinking_budget is not None and self.thinking_budget < 1):
            raise ValueError(f"setting {self.name!r}: n, max_tokens and thinking_budget must be >= 1")

    @property
    def votes(self) -> bool:
        return self.n > 1

    def describe(self) -> str:
        how = "greedy" if self.temperature == 0 else "one sample"
        if self.votes:
            how = f"majority of {self.n} samples at T={self.temperature:g}" + (
                f" weighted by the {self.verifier} verifier" if self.verifier else "")
        think = f", thinking <= {self.thinking_budget} tokens" if self.thinking_budget else ""
        system = "System-1" if self.mode == Mode.SYSTEM1 else "System-2"
        return f"{system} {how}{think}, <= {self.max_tokens} tokens/sample"


def arm_setting(arm: Arm) -> Setting:
    """A router arm as a setting: its greedy arms decode greedily whatever the caller's default."""
    return Setting(arm.name, arm.mode, arm.n, 0.0 if arm.greedy else arm.temperature, arm.max_tokens,
                   model=arm.model, verifier=arm.verifier)


EFFORTS: dict[str, Setting | None] = {
    "none": Setting("none", Mode.SYSTEM1, max_tokens=256),
    "minimal": Setting("minimal", Mode.SYSTEM2, max_tokens=256, thinking_budget=64),
    "low": Setting("low", Mode.SYSTEM2, max_tokens=256),
    "medium": Setting("medium", Mode.SYSTEM2, max_tokens=1024),
    "high": Setting("high", Mode.SYSTEM2, 8, temperature=0.7, max_tokens=1024),
    "xhigh": Setting("xhigh", Mode.SYSTEM2, 16, temperature=0.7, max_tokens=1024),
    "auto": None,  # the router
}
DEFAULT_EFFORT = "medium"
AUTO_FALLBACK = "medium"


def check_effort(effort: str) -> str:
    if effort not in EFFORTS:
        raise ValueError(f"reasoning_effort must be one of {', '.join(EFFORTS)}; got {effort!r}")
    return effort


def effort_setting(effort: str, max_tokens: int | None = None) -> Setting:
    """The fixed setting of a non-auto effort (with an optional per-sample token limit)."""
    setting = EFFORTS[check_effort(effort)]
    if setting is None:
        raise ValueError("reasoning_effort 'auto' has no fixed setting: it is the router's choice")
    return dataclasses.replace(setting, max_tokens=max_tokens or setting.max_tokens)


def single_pass(effort: str, thinking_budget: int | None = None) -> Setting | None:
    """The setting of an effort that runs as one engine job of one sample per choice (so a server may
    stream it token by token); None for votes, the router, and a think block that may be forced closed."""
    setting = EFFORTS[check_effort(effort)]
    if setting is None or setting.votes or setting.thinking_budget:
        return None
    if thinking_budget is not None and setting.mode == Mode.SYSTEM2:
        return None
    return setting
