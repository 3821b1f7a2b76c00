"""The task a model was trained on, kept beside its weights in ``model/task.json``.

Every trainer writes it when it saves a model; every command that takes a model (``eval``, ``solve``, the
trainers' ``--init``, the router's ``--model``) reads it, so the task, its arguments, the levels and the modes
default to what the model learned: after ``train sft --task my_task.py:MyTask`` no later command needs
``--task`` again. A model folder without one falls back to its run folder's ``config.json`` (``RUN/model`` is
saved beside ``RUN/config.json``).

    {"task": "my_task.py:MyTask", "task_args": {}, "levels": [2, 3, 4], "modes": ["system1", "system2"]}
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ..chat import MODES, Mode

TASK_FILE = "task.json"
DEFAULT_TASK = "arithmetic"  # the task of a command given no --task and a model that records none


@dataclass(frozen=True)
class TaskRecord:
    """What a model was trained on: the task spec and its arguments, the levels and the modes it knows."""

    task: str
    task_args: dict
    levels: tuple[int, ...]
    modes: tuple[str, ...]

    @property
    def mode(self) -> str:
        """The mode a command uses when none is given: System-2 when the model learned it."""
        return Mode.SYSTEM2 if Mode.SYSTEM2 in self.modes else Mode.SYSTEM1


def modes_for_share(system2_fraction: float) -> tuple[str, ...]:
    """The modes a model knows after training with this share of worked solutions (the rest direct answers)."""
    return tuple(mode for mode, share in ((Mode.SYSTEM1, 1 - system2_fraction), (Mode.SYSTEM2, system2_fraction))
                 if share > 0)


def portable(task: str, task_args: dict) -> tuple[str, dict]:
    """The task spec and arguments with every relative path that names an existing file or folder made absolute
    (a task file ``my_task.py:MyTask``, a data set's ``path=data.jsonl``), so a later command that follows the
    record works from any folder, not only from the one the model was trained in."""
    def absolute(value):  # a path looks like one (a suffix or a folder in it): a field named like a folder stays
        looks = isinstance(value, str) and (Path(value).suffix or "/" in value)
        return str(Path(value).resolve()) if looks and Path(value).exists() else value

    file, sep, rest = task.partition(":")
    if file.endswith(".py") and Path(file).is_file():
        task = absolute(file) + sep + rest
    return task, {key: absolute(value) for key, value in task_args.items()}


def write_record(model_dir: str | Path, record: TaskRecord) -> None:
    (Path(model_dir) / TASK_FILE).write_text(json.dumps(asdict(record), indent=2) + "\n")


def read_record(model_dir: str | Path) -> TaskRecord | None:
    """The record of ``model_dir``: its ``task.json``, else the config of the run folder it was saved in, else None."""
    folder = Path(model_dir)
    own, run_config = folder / TASK_FILE, folder.parent / "config.json"
    if own.is_file():
        return _from_dict(_read_json(own), own)
    if run_config.is_file():
        config = _read_json(run_config)
        if "trainer" in config and config.get("task"):  # a slowthink run folder, not another model's config
            return _from_dict({**config, "modes": _modes_of_run(config)}, run_config)
    return None


def follow_record(task: str, task_args: dict, record: TaskRecord | None) -> tuple[str, dict, TaskRecord | None]:
    """The task spec and arguments a command uses: those given, else the model's (arguments given are laid over
    the recorded ones); and the record when it is about that task (its levels and modes are then the defaults
    too), else None."""
    if record is None or (task and task != record.task):
        return task or DEFAULT_TASK, dict(task_args), None
    return record.task, {**record.task_args, **task_args}, record


def _modes_of_run(config: dict) -> tuple[str, ...]:
    if "system2_fraction" in config:
        return modes_for_share(config["system2_fraction"])
    return (config["mode"],) if config.get("mode") in MODES else MODES


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable JSON file ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def _from_dict(data: dict, path: Path) -> TaskRecord:
    try:
        return TaskRecord(task=str(data["task"]), task_args=dict(data.get("task_args") or {}),
                          levels=tuple(int(x) for x in data.get("levels") or ()),
                          modes=tuple(m for m in data.get("modes") or MODES if m in MODES) or MODES)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: not a task record ({type(e).__name__}: {e}); expected {{'task': ..., "
                         "'task_args': {...}, 'levels': [...], 'modes': [...]}") from None
