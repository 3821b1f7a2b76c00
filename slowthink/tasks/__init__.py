"""Tasks: world simulators that generate problems at a chosen difficulty and score any answer."""

from .arithmetic import Arithmetic
from .base import MODES, BaseTask, Mode, Problem, Reference, Score, Task, split_completion
from .countdown import Countdown
from .doubling import Doubling
from .registry import TaskError, get_task, list_tasks, parse_task_args, validate_task

__all__ = [
    "Task", "BaseTask", "Problem", "Reference", "Score", "Mode", "MODES", "split_completion",
    "Arithmetic", "Countdown", "Doubling", "get_task", "list_tasks", "parse_task_args", "validate_task", "TaskError",
]
