"""Run-time plugin loading: import a module, take the function, insist it is a task.

:meth:`PluginRegistry.load` asks the static catalog first and imports only coordinates it
vouches for, so a document cannot make a runner or worker import an arbitrary module (a
validator elsewhere may have passed a module it could not see). Failures name the module
and either the plugin path searched or the original import error.
"""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from shared.errors import PluginLoadError
from shared.plugin_api import TaskSpec, spec_of
from shared.plugin_catalog import CoordinateProblem, CoordinateVerdict, PluginCatalog


@dataclass(frozen=True)
class LoadedTask:
    function: Callable[..., Any]
    spec: TaskSpec


@dataclass
class PluginRegistry:
    """Loads plugin functions by coordinate; owns the plugin directories it adds to sys.path."""

    plugin_dirs: Sequence[Path] = ()
    _loaded: dict[str, LoadedTask] = field(default_factory=dict)
    _described: dict[str, TaskSpec] = field(default_factory=dict)
    _added: list[str] = field(default_factory=list)
    _catalog: PluginCatalog = field(init=False)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._catalog = PluginCatalog(search_dirs=[Path(d) for d in self.plugin_dirs])
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
            # One reader at a time: runner threads load concurrently, and CPython 3.11's
            # ast.parse is not thread-safe ("AST constructor recursion depth mismatch").
            with self._lock:
                loaded = self._loaded.get(coordinate)
                if loaded is None:
                    self._vouch(coordinate)
                    loaded = load_task(coordinate)
                    self._loaded[coordinate] = loaded
        return loaded

    def describe(self, coordinate: str) -> TaskSpec:
        """The task's spec as its decorator states it, read from source (nothing imported):
        what a runner needs to decide where the task runs (``isolation``, ``memory_mb``)
        without importing plugin code into its own process. Raises :class:`PluginLoadError`
        as :meth:`load` does for what the catalog does not know as a task."""
        spec = self._described.get(coordinate)
        if spec is None:
            with self._lock:
                spec = self._described.get(coordinate)
                if spec is None:
                    spec = self._vouch(coordinate)
                    self._described[coordinate] = spec
        return spec

    @property
    def plugin_path(self) -> list[Path]:
        """The plugin directories this registry searches (for child processes to do the same)."""
        return [Path(d) for d in self.plugin_dirs]

    def _vouch(self, coordinate: str) -> TaskSpec:
        """Refuse, before importing anything, what the catalog does not know as a task."""
        module_name = coordinate.rpartition(".")[0]
        found = self._catalog.lookup_coordinate(coordinate)
        if isinstance(found, CoordinateProblem):
            if found.verdict is CoordinateVerdict.MODULE_NOT_FOUND:
                raise PluginLoadError(
                    module_name,
                    f"no plugin module {module_name!r} on this plugin path "
                    f"({self._catalog.describe_path()}, then sys.path)",
                )
            raise PluginLoadError(coordinate, found.message)
        return found.spec


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
