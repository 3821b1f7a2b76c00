"""What the on-policy RL trainers (GRPO, RLOO, PPO) share around their losses: the config block of a
rollout-then-update step, the frozen reference model, held-out evaluation and the entropy-collapse stop."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import EvalConfig, FromModelConfig, ModeConfig, OptimConfig, arg, check_non_negative, \
    check_positive, require
from ..train.loop import heldout_problems


@dataclass
class OnPolicyConfig(EvalConfig, OptimConfig, ModeConfig, FromModelConfig):
    """Each step samples ``group_size`` completions for each of ``prompts_per_step`` problems from the current
    policy, scores them, and takes ``epochs_per_step`` passes of clipped-ratio updates on them."""

    steps: int = arg(200, "RL steps (each: one rollout batch, then its optimizer steps)")
    prompts_per_step: int = arg(16, "problems per step")
    group_size: int = arg(8, "completions sampled per problem (the group, n)")
    temperature: float = arg(1.0, "sampling temperature (> 0); the learner's log-probs use the same")
    lr: float = arg(1e-5, "learning rate (AdamW), constant after warm-up; a fresh AdamW breaks a converged small "
                          "model at 3e-5 and up (dev/LOG.md)")
    epochs_per_step: int = arg(1, "optimizer steps on each rollout batch (PPO-style; 1: on-policy, ratio 1)")
    micro_batch_size: int = arg(0, "completions per learner forward (0: the whole batch at once)")
    clip_low: float = arg(0.2, "PPO clip below: ratio >= 1 - clip_low")
    clip_high: float = arg(0.2, "PPO clip above: ratio <= 1 + clip_high")
    format_reward: float = arg(0.1, "reward bonus for a well-formed completion (added to correctness)")
    kl_coef: float = arg(0.0, "weight of the KL to the init model (0: no reference model)")
    entropy_floor: float = arg(1e-3, "stop when the mean token entropy stays below this ...")
    entropy_patience: int = arg(5, "... for this many steps in a row (entropy collapse)")
    time_budget_s: float = arg(0.0, "stop after this many seconds of this invocation (0: run all steps); the "
                               "last step is then evaluated, checkpointed and saved")

    def __post_init__(self):
        super().__post_init__()
        check_positive(self, "steps", "prompts_per_step", "group_size", "epochs_per_step", "entropy_patience")
        require(self.temperature > 0, "temperature", "must be > 0 (RL samples; greedy decoding has no exploration)")
        check_non_negative(self, "time_budget_s", "micro_batch_size", "format_reward", "kl_coef", "entropy_floor")
        require(0 <= self.clip_low < 1, "clip_low", "must be in [0, 1) (the ratio is clipped at 1 - clip_low)")
        require(self.clip_high >= 0, "clip_high", "must be >= 0 (the ratio is clipped at 1 + clip_high)")


def reference_model(cfg: OnPolicyConfig):
    """The frozen model the KL term is measured against (None without one): ``init`` itself, reloaded from disk,
    so it is never checkpointed."""
    from ..models import load_model

    if cfg.kl_coef <= 0:
        return None
    return load_model(cfg.init)[0].to(cfg.device).eval().requires_grad_(False)


def heldout_evaluator(worker, task, tok, cfg: OnPolicyConfig, log):
    """``evaluate(step)``: greedy pass@1 in the run's mode on ``cfg.eval_per_level`` held-out problems per level,
    logged at ``step`` and written under the progress bar (nothing to do without held-out problems)."""
    from tqdm.auto import tqdm

    from ..evaluate import heldout_metrics
    from ..report import heldout_line

    heldout = heldout_problems(task, cfg)

    def evaluate(step: int) -> None:
        if not heldout:
            return
        ev = heldout_metrics(worker.engine, task, tok, heldout, (cfg.mode,), cfg.max_new_tokens)
        worker.model.train()
        log.log(step, **ev)
        tqdm.write(f"step {step}: {heldout_line(ev, cfg.mode)}")

    return evaluate


def watch_entropy(run, low_steps: int, entropy: float | None, cfg: OnPolicyConfig, done: int) -> int:
    """The count of steps in a row whose mean token entropy was below ``cfg.entropy_floor`` (``entropy`` None:
    nothing was measured, the count stands); halts the run once it reaches ``cfg.entropy_patience``."""
    if entropy is None:
        return low_steps
    low_steps = low_steps + 1 if entropy < cfg.entropy_floor else 0
    if low_steps >= cfg.entropy_patience:
        run.halt(f"entropy collapse: mean token entropy below {cfg.entropy_floor} for {low_steps} steps "
                 f"(last {entropy:.2e}) at step {done}")
    return low_steps
