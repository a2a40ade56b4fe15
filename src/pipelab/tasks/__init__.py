"""One small module per task, all behind the protocol of `pipelab.tasks.base.Task`; the registry of tasks.

Every module of this package is imported here, and each Task subclass that declares a ``name`` registers
itself, so the task list is derived: a new task is one module here and one conf/task/<name>.yaml.
"""

from __future__ import annotations

import importlib
import pkgutil

from pipelab.config import ConfigError
from pipelab.tasks.base import REGISTRY, Case, CaseResult, Task, TaskContext

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

# The registered tasks in the course's order (then by name): tables, listings and the overhead benchmark.
TASK_NAMES: tuple[str, ...] = tuple(sorted(REGISTRY, key=lambda name: (REGISTRY[name].order, name)))


def get_task(name: str, *, prompted: bool = False) -> Task:
    """The task module for a task name (config names, e.g. 'ner', 'zero-shot-classification').

    prompted=True: the task done by an instruct model through text-generation (pipelab.tasks.prompted).
    """
    if name not in REGISTRY:
        raise ConfigError(
            f"unknown task '{name}': no module in src/pipelab/tasks declares it. Valid tasks: {', '.join(TASK_NAMES)}"
        )
    if prompted:
        from pipelab.tasks.prompted import prompted_task

        return prompted_task(name)
    return REGISTRY[name]()


__all__ = ["Case", "CaseResult", "Task", "TaskContext", "get_task", "TASK_NAMES"]
