"""System-1 / System-2 routing: per question, predict how each fixed setting (an "arm": System-1 greedy,
System-2 greedy, System-2 self-consistency over n samples) would do from cheap signals, then run the
cheapest one predicted to do about as well as the best, or allocate a token budget across a batch.

    slowthink train router --model runs/quickstart/model      # saves runs/quickstart/model/router/
    slowthink solve --model runs/quickstart/model --question 47*86 --reasoning-effort auto
"""

from .arms import Arm, ArmTable, arm_table, default_arms, run_arm
from .policy import choose_for_budget, choose_within, pareto_front, slow_share_for_gap
from .predictor import Predictor, auroc, fit_predictor
from .router import Router, find_router
from .signals import SIGNALS, Signals, compute_signals

__all__ = ["SIGNALS", "Arm", "ArmTable", "Predictor", "Router", "Signals", "arm_table", "auroc",
           "choose_for_budget", "choose_within", "compute_signals", "default_arms", "find_router",
           "fit_predictor", "pareto_front", "run_arm", "slow_share_for_gap"]
