"""Tasks: world simulators that generate problems at a chosen difficulty and score any answer."""

from .arithmetic import Arithmetic
from ..chat import MODES, Mode, split_completion
from .base import BaseTask, Problem, Reference, Score, Task
from .countdown import Countdown
from .doubling import Doubling
from .registry import TaskError, get_task, list_tasks, parse_task_args, validate_task

__all__ = [
    "Task", "BaseTask", "Problem", "Reference", "Score", "Mode", "MODES", "split_completion",
    "Arithmetic", "Countdown", "Doubling", "get_task", "list_tasks", "parse_task_args", "validate_task", "TaskError",
]
