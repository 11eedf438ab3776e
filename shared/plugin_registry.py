"""Run-time plugin loading: import a module, take the function, insist it is a task.

Only coordinates the static catalog has vouched for reach this module during a run, so
documents cannot make theodolite import arbitrary modules. Import failures are reported
with the module's name and the original error.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from shared.errors import PluginLoadError
from shared.plugin_api import TaskSpec, spec_of


@dataclass(frozen=True)
class LoadedTask:
    function: Callable[..., Any]
    spec: TaskSpec


@dataclass
class PluginRegistry:
    """Loads plugin functions by coordinate; owns the plugin directories it adds to sys.path."""

    plugin_dirs: Sequence[Path] = ()
    _loaded: dict[str, LoadedTask] = field(default_factory=dict)
    _added: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for directory in reversed([str(Path(d).resolve()) for d in self.plugin_dirs]):
            if directory not in sys.path:
                sys.path.insert(0, directory)
                self._added.append(directory)

    def close(self) -> None:
        for directory in self._added:
            if directory in sys.path:
                sys.path.remove(directory)
        self._added.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def load(self, coordinate: str) -> LoadedTask:
        loaded = self._loaded.get(coordinate)
        if loaded is None:
            loaded = load_task(coordinate)
            self._loaded[coordinate] = loaded
        return loaded


def load_task(coordinate: str) -> LoadedTask:
    module_name, _, function_name = coordinate.rpartition(".")
    if not module_name:
        raise PluginLoadError(coordinate, "a plugin coordinate needs a module and a function")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        raise PluginLoadError(
            module_name, f"plugin module failed to import: {type(error).__name__}: {error}"
        ) from error
    function = getattr(module, function_name, None)
    spec = spec_of(function)
    if function is None or spec is None or not callable(function):
        raise PluginLoadError(coordinate, "is not a registered plugin task (decorate it with @task)")
    return LoadedTask(function, spec)


def call_task(package: str, module: str, task: str, *args: Any, **kwargs: Any) -> Any:
    """pyplugs-compatible call: ``call_task("src", "squeeze_plugin", "feature_squeeze", x=...)``."""
    module_name = f"{package}.{module}" if package else module
    return load_task(f"{module_name}.{task}").function(*args, **kwargs)
