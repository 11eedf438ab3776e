"""Theodolite's plugin API and built-in plugin packages.

Write tasks with ``from plugins import task``; see :func:`shared.plugin_api.task`.
Importing this package imports no built-in plugin family (they load on demand).
"""

from shared.plugin_api import TaskSpec, register, task
from shared.plugin_registry import call_task

__all__ = ["TaskSpec", "call_task", "register", "task"]
