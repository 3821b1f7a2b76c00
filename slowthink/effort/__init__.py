"""``reasoning_effort``: how hard to think, by name. The CLI (``eval``/``solve --reasoning-effort``) and the
server run these same plans through one service (``run_effort``), written once over an engine-agnostic
``generate(prompt_ids, n, sampling)``:

    effort    what runs                                                            tokens per sample
    none      System-1: answer directly                                            256
    minimal   System-2, the think block forced closed after 64 tokens              256
    low       System-2: think, then answer                                         256
    medium    System-2 (the default)                                               1024
    high      System-2 self-consistency: majority vote of 8 samples, T=0.7         1024
    xhigh     System-2 self-consistency: majority vote of 16 samples, T=0.7        1024
    auto      the router saved beside the model (slowthink train router) picks, per question, the
              cheapest of its arms predicted to do about as well as the best; with no router saved,
              auto runs medium and says so

A single sample is greedy in the CLI and at the request's temperature in the server (OpenAI's default
1); a client's temperature applies to every sample, a vote's included.

Limits (``effort.budget``): ``max_completion_tokens`` bounds everything generated for a choice (every
sample of a vote, the router's signals); without it each sample gets the table's tokens. A thinking budget
(minimal's 64, or a request's ``thinking_token_budget``) forces ``</think>`` when the think block reaches
it and lets the model answer (``effort.forcing``). ``usage`` counts every generated token and ``route``
says what ran and why whenever more than one sample per choice ran, a think block could be forced
closed, or the effort was auto.
"""

from .local import solve_with_effort
from .question import Answered, Model, Question
from .fixed import run_setting
from .service import NO_ROUTER, run_effort
from .table import (AUTO_FALLBACK, DEFAULT_EFFORT, EFFORTS, Setting, arm_setting, check_effort, effort_setting,
                    single_pass)
from .vote import vote, voted_answer

__all__ = ["AUTO_FALLBACK", "Answered", "DEFAULT_EFFORT", "EFFORTS", "Model", "NO_ROUTER", "Question", "Setting",
           "arm_setting", "check_effort", "effort_setting", "run_effort", "run_setting", "single_pass",
           "solve_with_effort", "vote", "voted_answer"]
