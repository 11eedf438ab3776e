"""Shape checks for each section: the parts of Dioptra's JSON schema, with paths."""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.document.issues import Issue, error, format_key
from shared.document.source import DocPath
from shared.retry_policy import RETRY_KEY, RetryOverride

TOP_LEVEL_KEYS = ("types", "parameters", "tasks", "graph", "artifact_inputs", "artifact_outputs")
TASK_NAME = re.compile(r"^[A-Za-z0-9_]+$")
SCALAR_TYPES = (str, int, float, bool, type(None))


@dataclass
class StepShape:
    """A step's invocation, split into its parts (Dioptra's three forms)."""

    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    dependencies: list[str]
    args_path: DocPath
    kwargs_path: DocPath
    positional_as_list: bool = True
    """False when a single non-list value stands for one positional argument."""
    dependencies_listed: bool = True
    """False when ``dependencies`` was one string rather than a list."""
    retry: RetryOverride | None = None
    """The step's ``x-retry:`` override (see :mod:`shared.retry_policy`)."""


@dataclass
class Names:
    """Accumulates problems; helpers return whether the part they checked is usable."""

    issues: list[Issue] = field(default_factory=list)
    unusable_tasks: set[str] = field(default_factory=set)
    """Tasks declared under ``tasks:`` whose definition already has a problem: steps calling
    them get no second one (no follow-on errors)."""

    def add(self, issue: Issue) -> None:
        self.issues.append(issue)

    def name(self, kind: str, name: Any, path: DocPath, *, dots: bool = True) -> bool:
        if not isinstance(name, str):
            self.add(error("name.not-string", path, f"{kind} names must be strings, got {describe_key(name)}; quote it to make it one", key=True))
            return False
        if not name or name.isspace():
            self.add(error("name.empty", path, f"{kind} names must not be empty or blank", key=True))
            return False
        if dots and "." in name:
            self.add(error(
                "name.dotted", path,
                f"{kind} name {name!r} contains a dot: references to it would read as "
                "$step.output; rename it without dots", key=True,
            ))
            return False
        return True

    def mapping(self, value: Any, path: DocPath, what: str) -> bool:
        if not isinstance(value, Mapping):
            self.add(error("structure.not-mapping", path, f"{what} must be a mapping, got {_kind(value)}"))
            return False
        return True


def describe_key(key: Any) -> str:
    """A non-string key in words: ``the number 1.5``, ``null``, ``the date 2001-01-01``."""
    if key is None:
        return "null"
    if isinstance(key, bool):
        return f"the boolean {format_key(key)}"
    if isinstance(key, (int, float)):
        return f"the number {format_key(key)}"
    if isinstance(key, datetime.datetime):
        return f"the timestamp {format_key(key)}"
    if isinstance(key, datetime.date):
        return f"the date {format_key(key)}"
    return f"{_kind(key)} {key!r}"


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return type(value).__name__


def kind_of(value: Any) -> str:
    return _kind(value)


def check_top_level(data: Any, names: Names) -> bool:
    if not isinstance(data, Mapping):
        names.add(error(
            "document.not-mapping", (),
            f"a job document must be a mapping with a 'graph:' section, got {_kind(data)}",
        ))
        return False
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            names.add(error(
                "document.unknown-key", (key,),
                f"unknown top-level key {repr(key) if isinstance(key, str) else describe_key(key)}; expected one of: {', '.join(TOP_LEVEL_KEYS)}",
                key=True,
            ))
    if "graph" not in data:
        names.add(error("graph.missing", (), "the document has no 'graph:' section"))
    return True


def step_shape(step_name: str, step: Any, names: Names) -> StepShape | None:
    """Split a step into task name, args, kwargs and dependencies, or report why not."""
    path: DocPath = ("graph", step_name)
    if not isinstance(step, Mapping):
        names.add(error(
            "step.not-mapping", path,
            f"step {step_name!r} must be a mapping like '{{task_name: [args]}}', got {_kind(step)}",
        ))
        return None
    dependencies = _dependencies(step.get("dependencies", []), (*path, "dependencies"), names)
    if dependencies is None:
        return None
    retry = _retry(step.get(RETRY_KEY), (*path, RETRY_KEY), names) if RETRY_KEY in step else None
    if RETRY_KEY in step and retry is None:
        return None
    shape = _shape(step_name, step, dependencies, names)
    if shape is not None:
        shape.dependencies_listed = not isinstance(step.get("dependencies"), str)
        shape.retry = retry
    return shape


def _retry(value: Any, path: DocPath, names: Names) -> RetryOverride | None:
    """A step's ``x-retry:`` mapping: ``retries``, ``backoff_s``, ``max_backoff_s``."""
    if not isinstance(value, Mapping):
        names.add(error("step.retry", path, f"'{RETRY_KEY}' must be a mapping of retries, backoff_s and max_backoff_s, got {_kind(value)}"))
        return None
    ok = True
    for key, item in value.items():
        if key not in RetryOverride.model_fields:
            names.add(error("step.retry", (*path, key), f"unknown key {key!r} in '{RETRY_KEY}'; allowed: retries, backoff_s, max_backoff_s",
                            key=True))
            ok = False
        elif isinstance(item, bool) or not isinstance(item, int if key == "retries" else (int, float)) or item < 0:
            kind = "a whole number" if key == "retries" else "a number of seconds"
            names.add(error("step.retry", (*path, key), f"'{key}' must be {kind}, at least 0; got {item!r}"))
            ok = False
    if not ok:
        return None
    override = RetryOverride(**{str(k): v for k, v in value.items()})
    if override.backoff_s is not None and override.max_backoff_s is not None and override.max_backoff_s < override.backoff_s:
        names.add(error("step.retry", (*path, "max_backoff_s"), "'max_backoff_s' must not be below 'backoff_s'"))
        return None
    return override


def _shape(step_name: str, step: Mapping[str, Any], dependencies: list[str], names: Names) -> StepShape | None:
    path: DocPath = ("graph", step_name)
    if "task" in step:
        return _mixed_shape(step_name, step, dependencies, names)
    task_keys = [key for key in step if key not in ("dependencies", RETRY_KEY)]
    if len(task_keys) != 1:
        found = ", ".join(repr(k) for k in task_keys) or "none"
        names.add(error(
            "step.task-name", path,
            f"step {step_name!r} must name exactly one task (plus optional 'dependencies'); "
            f"found task keys: {found}",
        ))
        return None
    task = task_keys[0]
    if not _task_name_ok(task, (*path, task), names):
        return None
    value = step[task]
    if isinstance(value, Mapping):
        kwargs = dict(value)
        if not _keyword_names_ok(kwargs, (*path, task), names):
            return None
        return StepShape(task, [], kwargs, dependencies, (*path, task), (*path, task))
    if isinstance(value, list):
        return StepShape(task, value, {}, dependencies, (*path, task), (*path, task))
    return StepShape(task, [value], {}, dependencies, (*path, task), (*path, task), False)


def _mixed_shape(step_name: str, step: Mapping[str, Any], dependencies: list[str], names: Names) -> StepShape | None:
    path: DocPath = ("graph", step_name)
    ok = True
    for key in step:
        if key not in ("task", "args", "kwargs", "dependencies", RETRY_KEY):
            names.add(error(
                "step.unknown-key", (*path, key),
                f"unknown key {key!r} in a step with 'task:'; allowed: task, args, kwargs, dependencies, {RETRY_KEY}",
                key=True,
            ))
            ok = False
    task = step["task"]
    if not isinstance(task, str) or not _task_name_ok(task, (*path, "task"), names):
        if not isinstance(task, str):
            names.add(error("step.task-name", (*path, "task"), f"'task' must be a task name, got {_kind(task)}"))
        return None
    args = step.get("args", [])
    if isinstance(args, Mapping):
        names.add(error(
            "step.args", (*path, "args"),
            "'args' holds positional arguments (a list or one value); put named ones under 'kwargs'",
        ))
        ok = False
    kwargs = step.get("kwargs", {})
    if not isinstance(kwargs, Mapping):
        names.add(error("step.kwargs", (*path, "kwargs"), f"'kwargs' must be a mapping, got {_kind(kwargs)}"))
        ok = False
    elif not _keyword_names_ok(dict(kwargs), (*path, "kwargs"), names):
        ok = False
    if not ok:
        return None
    as_list = isinstance(args, list)
    arg_list = args if as_list else [args]
    return StepShape(task, arg_list, dict(kwargs), dependencies, (*path, "args"), (*path, "kwargs"), as_list)


def _task_name_ok(task: Any, path: DocPath, names: Names) -> bool:
    if not isinstance(task, str) or not TASK_NAME.match(task) or task == "dependencies":
        names.add(error(
            "step.task-name", path,
            f"{task!r} is not a task name: use letters, digits and underscores", key=True,
        ))
        return False
    return True


def _keyword_names_ok(kwargs: dict[Any, Any], path: DocPath, names: Names) -> bool:
    ok = True
    for key in kwargs:
        if not isinstance(key, str) or not key.isidentifier():
            names.add(error(
                "step.keyword", (*path, key),
                f"keyword argument name {key!r} is not a valid identifier" if isinstance(key, str)
                else f"keyword argument names must be strings, got {describe_key(key)}", key=True,
            ))
            ok = False
    return ok


def _dependencies(value: Any, path: DocPath, names: Names) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    names.add(error(
        "step.dependencies", path,
        "'dependencies' must be a step name or a list of step names",
    ))
    return None
