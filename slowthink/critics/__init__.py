"""Learned critics: an outcome reward model (ORM) and a process reward model (PRM) trained on the policy's
own samples, with PRM step labels from Monte-Carlo rollouts (Math-Shepherd). Both implement the verifier
protocol of ``slowthink.search`` (``score`` / ``score_steps`` and a ``tokens`` counter)."""

from .mc_labels import Sample, StepLabels, mc_label, sample_solutions, soft_hard
from .metrics import auroc, best_threshold, pick_best, predicted_first_error, processbench_f1
from .model import OutcomeRewardModel, ProcessRewardModel, is_critic_dir, load_critic, new_critic
from .segment import completion_steps, encode_steps, first_false, prefix_text

__all__ = ["OutcomeRewardModel", "ProcessRewardModel", "Sample", "StepLabels", "auroc", "best_threshold",
           "completion_steps", "encode_steps", "first_false", "is_critic_dir", "load_critic", "mc_label",
           "new_critic", "pick_best", "predicted_first_error", "prefix_text", "processbench_f1",
           "sample_solutions", "soft_hard"]
