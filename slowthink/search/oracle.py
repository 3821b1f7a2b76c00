"""Ground-truth verifiers built from the task itself: for tests, experiments and upper bounds.

These are NOT learned critics. ``TaskStepOracle`` reads the task's own ``step_labels`` (which know the
correct derivation) and ``TaskOutcomeOracle`` the task's own answer check, so a search guided by them
measures what a *perfect* PRM / ORM would buy, never what a trained one does. Learned ORM/PRM
verifiers (``slowthink.critics``) plug into the same protocol (``score_steps`` / ``score``, see
``slowthink.search.base``); ``make_verifier`` loads them from a folder.
"""

from __future__ import annotations

from ..tasks.base import Problem
from ..tasks.guard import guard
from ..chat import Mode


class TaskStepOracle:
    """Ground-truth process "verifier": step i scores 1.0 when ``task.step_labels`` marks it correct (for the
    built-in tasks: it and every step before it match a correct derivation), else 0.0. Uses the problem's
    answer; never a learned PRM."""

    ground_truth = True
    tokens = 0  # reads no model

    def __init__(self, task):
        if not callable(getattr(task, "step_labels", None)):
            raise ValueError(f"task {getattr(task, 'name', task)!r} has no step_labels(problem, reasoning)")
        self.task = guard(task)

    def score_steps(self, problem: Problem, steps: list[str]) -> list[float]:
        labels = self.task.step_labels(problem, "\n".join(steps))
        if labels is None:
            raise ValueError(f"task {self.task.name!r} gives no step labels for this problem")
        if len(labels) != len(steps):
            raise ValueError(f"task gave {len(labels)} labels for {len(steps)} steps (empty steps are not steps)")
        return [1.0 if ok else 0.0 for ok in labels]


class TaskOutcomeOracle:
    """Ground-truth outcome "verifier": 1.0 when the task scores the completion correct, else 0.0. With it
    best-of-N is pass@N (an upper bound), never a learned ORM."""

    ground_truth = True
    tokens = 0

    def __init__(self, task, mode: str = Mode.SYSTEM2):
        self.task, self.mode = guard(task), mode

    def score(self, problem: Problem, completion: str) -> float:
        return 1.0 if self.task.score(problem, completion, self.mode).correct else 0.0


VERIFIERS = {"oracle": TaskStepOracle, "outcome-oracle": TaskOutcomeOracle}


def make_verifier(name: str | None, task, mode: str = Mode.SYSTEM2, device: str = "cpu"):
    """``None``/"none" -> None; "oracle" -> TaskStepOracle; "outcome-oracle" -> TaskOutcomeOracle; a folder
    saved by ``slowthink train prm|orm`` (``RUN/critic``, or the run folder itself) -> that learned critic;
    "gen:MODEL_DIR" -> a generative verifier reading with that model (``slowthink.critics.generative``);
    "check:MODEL_DIR[@system1]" -> a step-recomputing verifier whose checker model answers every claim the steps
    make (``slowthink.critics.recompute``). Learned, generative and checker models are loaded on ``device``."""
    if name in (None, "", "none"):
        return None
    from ..critics.generative import PREFIX, GenerativeVerifier

    from ..critics import recompute

    if name.startswith(PREFIX):
        return GenerativeVerifier.load(name[len(PREFIX):], task, mode, device=device)
    if name.startswith(recompute.PREFIX):
        return recompute.RecomputeVerifier.load(name[len(recompute.PREFIX):], task, device=device)
    if name == "oracle":
        return TaskStepOracle(task)
    if name == "outcome-oracle":
        return TaskOutcomeOracle(task, mode)
    from ..critics.model import is_critic_dir, load_critic

    for path in (name, f"{name}/critic"):
        if is_critic_dir(path):
            critic = load_critic(path, task, device=device)
            if critic.mode != mode:
                raise ValueError(f"critic {path} was trained on {critic.mode} completions, not {mode}")
            return critic
    raise ValueError(f"verifier must be one of none, {', '.join(VERIFIERS)} the folder of a critic trained with "
                     f"`slowthink train prm|orm` (RUN/critic), gen:MODEL_DIR or check:MODEL_DIR, got {name!r}")
