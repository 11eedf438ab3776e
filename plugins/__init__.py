"""Theodolite's plugin API and built-in plugin packages.

Write tasks with ``from plugins import task``; see :func:`shared.plugin_api.task`. A task that
declares a parameter annotated with :class:`TaskContext` receives the task context
(:mod:`shared.task_context`).
Importing this package imports no built-in plugin family (they load on demand).
"""

from shared.plugin_api import TaskSpec, register, task
from shared.plugin_registry import call_task
from shared.task_context import TaskContext

__all__ = ["TaskContext", "TaskSpec", "call_task", "register", "task"]
