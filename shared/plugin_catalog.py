"""What plugin tasks exist, read from source with ``ast``: nothing is imported or executed.

The validator uses this to check plugin coordinates and short names before any plugin code
runs, so a document naming ``os.system`` or ``builtins.eval`` is refused without importing
anything. The run-time registry (:mod:`shared.plugin_registry`) imports only modules this
catalog vouched for, and checks the decorator again on the real function.
"""

from __future__ import annotations

import ast
import importlib.machinery
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from pydantic import ValidationError

from shared.plugin_api import OutputSpec, TaskSpec, normalize_outputs
from shared.task_context import CONTEXT_TYPE_NAME

DECORATOR_NAMES = frozenset({"task", "register"})
ANNOTATION_TYPES = {"int": "integer", "float": "number", "str": "string", "bool": "boolean"}
SKIPPED_DIRS = frozenset({"__pycache__", "tests", "test", ".venv", "venv", "node_modules"})
PLUGINS_ENV = "THEODOLITE_PLUGINS"
BUILTIN_PACKAGE = "plugins"


@dataclass(frozen=True)
class InputDef:
    name: str
    type: str = "any"
    required: bool = True


@dataclass(frozen=True)
class CatalogTask:
    """A decorated task as read from source."""

    spec: TaskSpec
    inputs: tuple[InputDef, ...]
    varargs: bool
    varkw: bool
    file: Path
    line: int


@dataclass(frozen=True)
class ModuleProblem:
    """A plugin module that could not be read; ``module`` names it, ``message`` says why."""

    module: str
    file: Path
    message: str


class CoordinateVerdict(Enum):
    """Why a plugin coordinate names no task."""

    MODULE_NOT_FOUND = "module-not-found"
    """Not on this plugin path: a warning in ``validate``, a refusal before ``run``."""
    NOT_A_TASK = "not-a-task"
    """Found (or part of Python), but not ``@task``-decorated: an error everywhere."""
    UNREADABLE = "unreadable"
    """Found but cannot be read or parsed: an error everywhere."""


@dataclass(frozen=True)
class CoordinateProblem:
    """A plugin coordinate that names no registered task, and why."""

    verdict: CoordinateVerdict
    message: str


@dataclass
class _ModuleInfo:
    tasks: dict[str, CatalogTask]
    problem: ModuleProblem | None = None


def plugin_dirs_from_env(environ: dict[str, str] | None = None) -> list[Path]:
    value = (environ if environ is not None else os.environ).get(PLUGINS_ENV, "")
    return [Path(part) for part in value.split(os.pathsep) if part]


def builtin_plugins_root() -> Path:
    """The directory that holds the built-in ``plugins`` package (not imported, located)."""
    return Path(__file__).resolve().parent.parent


@dataclass
class PluginCatalog:
    """Locates plugin modules on the search path and reads their ``@task`` functions.

    ``search_dirs`` are tried first (``--plugins`` and ``THEODOLITE_PLUGINS``), then the
    extra dirs (the document's folder, the working directory), then ``sys.path``.
    Short names are looked up among the built-in package and the plugin dirs only.
    """

    search_dirs: Sequence[Path] = ()
    extra_dirs: Sequence[Path] = ()
    include_builtin: bool = True
    _modules: dict[Path, _ModuleInfo] = field(default_factory=dict)
    _short_names: dict[str, list[CatalogTask]] | None = None
    _scan_problems: list[ModuleProblem] = field(default_factory=list)

    @property
    def path(self) -> list[Path]:
        roots = [*self.search_dirs, *self.extra_dirs]
        roots += [Path(p) if p else Path.cwd() for p in sys.path]
        return roots

    # coordinates -------------------------------------------------------------------------
    def find_module_file(self, module: str) -> Path | None:
        parts = module.split(".")
        if not all(part.isidentifier() for part in parts):
            return None
        roots = self.path
        if self.include_builtin and parts[0] == BUILTIN_PACKAGE:
            roots = [builtin_plugins_root(), *roots]
        for root in roots:
            base = root.joinpath(*parts)
            for candidate in (base.with_suffix(".py"), base / "__init__.py"):
                if candidate.is_file():
                    return candidate
        return None

    def lookup_coordinate(self, coordinate: str) -> CatalogTask | CoordinateProblem:
        """The task at ``package.module.function``, or a problem saying why there is none.

        A module that is not on the plugin path is :attr:`CoordinateVerdict.MODULE_NOT_FOUND`
        (another machine's workers may hold it); one that is found, or is part of Python or an
        installed package, whose function is not a ``@task`` is
        :attr:`CoordinateVerdict.NOT_A_TASK` (the security boundary, refused everywhere).
        """
        module, _, function = coordinate.rpartition(".")
        file = self.find_module_file(module)
        if file is None:
            if _is_python_module(module):
                return CoordinateProblem(
                    CoordinateVerdict.NOT_A_TASK,
                    f"{coordinate!r} is not a registered plugin task: {module!r} is a module of Python "
                    "or of an installed package, not a plugin module; only functions decorated with "
                    "@task in plugin modules can be called",
                )
            return CoordinateProblem(
                CoordinateVerdict.MODULE_NOT_FOUND,
                f"no plugin module {module!r} was found on this plugin path ({self.describe_path()}); "
                "workers that hold it can still run the task",
            )
        info = self._read(module, file)
        if info.problem is not None:
            return CoordinateProblem(CoordinateVerdict.UNREADABLE, info.problem.message)
        found = info.tasks.get(function)
        if found is None:
            return CoordinateProblem(
                CoordinateVerdict.NOT_A_TASK,
                f"{coordinate!r} is not a registered plugin task: module {module!r} has no "
                f"function {function!r} decorated with @task",
            )
        return found

    def describe_path(self) -> str:
        """The plugin directories searched (built-ins and sys.path left out), for messages."""
        shown = [str(d) for d in [*self.search_dirs, *self.extra_dirs]]
        shown.append("the built-in 'plugins' package")
        return ", ".join(dict.fromkeys(shown))

    # short names -------------------------------------------------------------------------
    def lookup_short_name(self, name: str) -> list[CatalogTask]:
        return self._short_name_index().get(name, [])

    def scan_problems(self) -> list[ModuleProblem]:
        self._short_name_index()
        return list(self._scan_problems)

    def all_tasks(self) -> list[CatalogTask]:
        return [task for tasks in self._short_name_index().values() for task in tasks]

    def _short_name_index(self) -> dict[str, list[CatalogTask]]:
        """Short name -> tasks. User plugin dirs shadow built-ins of the same short name;
        two tasks with one name at the same level are ambiguous."""
        if self._short_names is None:
            index: dict[str, list[CatalogTask]] = {}
            for level in (self._user_modules(), self._builtin_modules()):
                found: dict[str, list[CatalogTask]] = {}
                for module, file in level:
                    info = self._read(module, file)
                    if info.problem is not None:
                        self._scan_problems.append(info.problem)
                    for task in info.tasks.values():
                        found.setdefault(task.spec.name, []).append(task)
                for name, tasks in found.items():
                    index.setdefault(name, tasks)
            self._short_names = index
        return self._short_names

    def _builtin_modules(self) -> Iterator[tuple[str, Path]]:
        if self.include_builtin:
            package_dir = builtin_plugins_root() / BUILTIN_PACKAGE
            yield from _modules_under(package_dir, BUILTIN_PACKAGE)

    def _user_modules(self) -> Iterator[tuple[str, Path]]:
        for root in self.search_dirs:
            if root.is_dir():
                yield from _modules_under(root, "")

    # reading -----------------------------------------------------------------------------
    def _read(self, module: str, file: Path) -> _ModuleInfo:
        key = file.resolve()
        info = self._modules.get(key)
        if info is None:
            info = _read_module(module, file)
            self._modules[key] = info
        return info


def _modules_under(root: Path, prefix: str) -> Iterator[tuple[str, Path]]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames if d not in SKIPPED_DIRS and not d.startswith(".")
        )
        rel = Path(dirpath).relative_to(root).parts
        for filename in sorted(filenames):
            if not filename.endswith(".py") or filename.startswith("test_"):
                continue
            stem = filename[:-3]
            parts = [*rel] if stem == "__init__" else [*rel, stem]
            if prefix:
                parts = [prefix, *parts]
            if parts and all(p.isidentifier() for p in parts):
                yield ".".join(parts), Path(dirpath) / filename


def _read_module(module: str, file: Path) -> _ModuleInfo:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        return _ModuleInfo({}, ModuleProblem(module, file, f"cannot read plugin module {module!r}: {error}"))
    if "task" not in text and "register" not in text:
        return _ModuleInfo({})
    try:
        tree = ast.parse(text, filename=str(file))
    except SyntaxError as error:
        return _ModuleInfo(
            {},
            ModuleProblem(
                module, file,
                f"plugin module {module!r} does not parse ({file}:{error.lineno}: {error.msg})",
            ),
        )
    tasks: dict[str, CatalogTask] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            task = _task_from_function(module, file, node)
            if isinstance(task, CatalogTask):
                tasks[node.name] = task
            elif isinstance(task, str):
                return _ModuleInfo(tasks, ModuleProblem(module, file, task))
    return _ModuleInfo(tasks)


def _task_from_function(
    module: str, file: Path, node: ast.FunctionDef | ast.AsyncFunctionDef
) -> CatalogTask | str | None:
    for decorator in node.decorator_list:
        call = decorator if isinstance(decorator, ast.Call) else None
        target = call.func if call is not None else decorator
        if _decorator_name(target) not in DECORATOR_NAMES:
            continue
        options: dict[str, object] = {}
        if call is not None:
            for keyword in call.keywords:
                try:
                    if keyword.arg == "retry_on":
                        options["retry_on"] = _exception_names(keyword.value)
                    else:
                        options[keyword.arg or ""] = ast.literal_eval(keyword.value)
                except ValueError:
                    return (
                        f"{module}.{node.name}: @task({keyword.arg}=...) must be a literal "
                        f"so documents can be checked without importing ({file}:{node.lineno})"
                    )
        try:
            spec = TaskSpec(
                name=str(options.get("name") or node.name),
                module=module,
                function=node.name,
                outputs=normalize_outputs(options.get("outputs")),  # type: ignore[arg-type]
                device=str(options.get("device", "cpu")),
                retries=options.get("retries", 0),
                retry_on=options.get("retry_on", ()),
                backoff_s=options.get("backoff_s", 1.0),
                max_backoff_s=options.get("max_backoff_s", 60.0),
                timeout_s=options.get("timeout"),
                memory_mb=options.get("memory_mb"),
                isolation=options.get("isolation"),
            )
        except (ValidationError, ValueError, TypeError) as error:
            return f"{module}.{node.name}: bad @task options ({file}:{node.lineno}): {error}"
        inputs, varargs, varkw, context_arg = _signature(node.args)
        if context_arg is not None:
            spec = spec.model_copy(update={"context_arg": context_arg})
        return CatalogTask(spec, inputs, varargs, varkw, file, node.lineno)
    return None


def _exception_names(node: ast.expr) -> tuple[str, ...]:
    """``retry_on=`` as written: exception classes (``ValueError``, ``errors.Busy``) or their
    names as strings, alone or in a tuple or list; read by name, never imported."""
    items = node.elts if isinstance(node, (ast.Tuple, ast.List)) else [node]
    names: list[str] = []
    for item in items:
        if isinstance(item, ast.Constant) and isinstance(item.value, str):
            names.append(item.value)
        elif (name := _decorator_name(item)) is not None:
            names.append(name)
        else:
            raise ValueError("retry_on names exception classes")
    return tuple(names)


def _decorator_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _signature(args: ast.arguments) -> tuple[tuple[InputDef, ...], bool, bool, str | None]:
    """The document inputs (every parameter but the task context's), ``*args``, ``**kwargs``,
    and the task context's parameter name."""
    positional = [*args.posonlyargs, *args.args]
    defaults_start = len(positional) - len(args.defaults)
    context = next((arg.arg for arg in [*positional, *args.kwonlyargs] if _is_context(arg.annotation)), None)
    inputs = [
        InputDef(arg.arg, _annotation_type(arg.annotation), index < defaults_start)
        for index, arg in enumerate(positional) if arg.arg != context
    ]
    for arg, default in zip(args.kwonlyargs, args.kw_defaults):
        if arg.arg != context:
            inputs.append(InputDef(arg.arg, _annotation_type(arg.annotation), default is None))
    return tuple(inputs), args.vararg is not None, args.kwarg is not None, context


def _is_context(annotation: ast.expr | None) -> bool:
    """Annotated ``TaskContext``, ``plugins.TaskContext``, either ``| None``, or the same as a string."""
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        parts = {part.strip().rpartition(".")[2] for part in annotation.value.split("|")} - {"None"}
        return parts == {CONTEXT_TYPE_NAME}
    if isinstance(annotation, ast.BinOp) and isinstance(annotation.op, ast.BitOr):
        sides = [annotation.left, annotation.right]
        others = [side for side in sides if not (isinstance(side, ast.Constant) and side.value is None)]
        return len(others) == 1 and _is_context(others[0])
    return annotation is not None and _decorator_name(annotation) == CONTEXT_TYPE_NAME


def _annotation_type(annotation: ast.expr | None) -> str:
    if isinstance(annotation, ast.Name):
        return ANNOTATION_TYPES.get(annotation.id, "any")
    return "any"


def _is_python_module(module: str) -> bool:
    """Whether the top-level package is part of Python or installed (located, not imported)."""
    top = module.partition(".")[0]
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return True
    try:
        return importlib.machinery.PathFinder.find_spec(top) is not None
    except (ImportError, ValueError):
        return False


def describe(tasks: Iterable[CatalogTask]) -> str:
    return ", ".join(sorted(task.spec.coordinate for task in tasks))


__all__ = [
    "CatalogTask", "CoordinateProblem", "CoordinateVerdict", "InputDef", "ModuleProblem", "OutputSpec", "PluginCatalog",
    "builtin_plugins_root", "describe", "plugin_dirs_from_env",
]
