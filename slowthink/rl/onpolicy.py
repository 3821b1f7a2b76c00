"""What the on-policy RL trainers (GRPO, RLOO, PPO) share around their losses: the config block of a
rollout-then-update step, the frozen reference model, held-out evaluation and the entropy-collapse stop."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import EvalConfig, FromModelConfig, ModeConfig, OptimConfig, arg, check_non_negative, \
    check_positive, require
from ..train.loop import heldout_problems
from ..distributed.config import RayConfig


@dataclass
class OnPolicyConfig(RayConfig, EvalConfig, OptimConfig, ModeConfig, FromModelConfig):
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
    # -- policy objective and off-policy correction (slowthink.rl.losses: OBJECTIVES, truncated_is_weights)
    objective: str = arg("ppo_clip", "policy loss: ppo_clip (PPO/DAPO token clip), gspo (sequence-level ratio, "
                         "clipped by gspo_clip) or cispo (clipped stop-gradient weight on every token's log-prob)")
    gspo_clip: list[float] = arg([3e-4, 4e-4], "GSPO's clip below and above for its sequence ratio (the paper's "
                                 "range; clip_low/clip_high are the token objectives')")
    dual_clip: float = arg(3.0, "dual-clip PPO: cap a negative-advantage token's loss at dual_clip x |A| (binds only "
                           "off-policy, at ratio > dual_clip; 0: off)")
    is_correction: str = arg("none", "off-policy correction between the sampler's and the learner's log-probs: none, "
                             "token or sequence (truncated importance weights min(pi_learner / pi_sampler, is_cap))")
    is_cap: float = arg(2.0, "cap C of the truncated importance weights")
    is_mask: bool = arg(False, "with is_correction: drop the tokens (rows, at sequence level) whose ratio is beyond "
                        "the cap from the loss instead of truncating their weight")

    def __post_init__(self):
        super().__post_init__()
        check_positive(self, "steps", "prompts_per_step", "group_size", "epochs_per_step", "entropy_patience")
        require(self.temperature > 0, "temperature", "must be > 0 (RL samples; greedy decoding has no exploration)")
        check_non_negative(self, "time_budget_s", "micro_batch_size", "format_reward", "kl_coef", "entropy_floor")
        require(0 <= self.clip_low < 1, "clip_low", "must be in [0, 1) (the ratio is clipped at 1 - clip_low)")
        require(self.clip_high >= 0, "clip_high", "must be >= 0 (the ratio is clipped at 1 + clip_high)")
        from .losses import OBJECTIVES

        require(self.objective in OBJECTIVES, "objective", f"unknown objective {self.objective!r}; choose one of "
                f"{sorted(OBJECTIVES)}")
        require(len(self.gspo_clip) == 2 and 0 <= self.gspo_clip[0] < 1 and self.gspo_clip[1] >= 0, "gspo_clip",
                "two values: clip below in [0, 1) and clip above >= 0")
        require(self.dual_clip == 0 or self.dual_clip > 1, "dual_clip", "must be > 1 (or 0: off)")
        require(self.is_correction in ("none", "token", "sequence"), "is_correction",
                f"must be none, token or sequence, got {self.is_correction!r}")
        require(self.is_cap >= 1, "is_cap", "must be >= 1")

    def policy_clip(self) -> tuple[float, float]:
        """The (below, above) clip of the chosen objective's ratio."""
        return tuple(self.gspo_clip) if self.objective == "gspo" else (self.clip_low, self.clip_high)


def reference_model(cfg: OnPolicyConfig, model=None):
    """The frozen model the KL term is measured against (None without one): ``init`` itself, reloaded from disk,
    so it is never checkpointed; for a LoRA ``model``, its base weights without the adapters (no copy,
    ``train.lora.reference_view``)."""
    from ..models import load_model
    from ..train.lora import is_lora, reference_view, torch_dtype

    if cfg.kl_coef <= 0:
        return None
    if model is not None and is_lora(model):
        return reference_view(model)
    return load_model(cfg.init, dtype=torch_dtype(cfg))[0].to(cfg.device).eval().requires_grad_(False)


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
        ev = heldout_metrics(worker.engine, task, tok, heldout, (cfg.mode,), cfg.max_new_tokens,
                             episodes=worker.episodes if getattr(worker, "tools", None) is not None else None)
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
