"""Checks of the declaration sections: types, parameters, tasks and artifact inputs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.document.issues import error, warning
from shared.document.structure import SCALAR_TYPES, Names, describe_key, kind_of
from shared.document.types import (
    BUILTIN_TYPES,
    TypeRegistry,
    compatible,
    infer_type,
    referenced_type_names,
)
from shared.plugin_api import OutputSpec
from shared.plugin_catalog import CatalogTask, CoordinateVerdict, InputDef, PluginCatalog

STRUCTURE_KEYS = ("list", "tuple", "mapping", "union")


@dataclass
class TaskInfo:
    """What the graph checks need to know about a task short name."""

    name: str
    plugin: str
    inputs: tuple[InputDef, ...]
    outputs: OutputSpec
    open_positional: bool = False
    open_keywords: bool = False
    catalog: CatalogTask | None = None
    gradual: bool = False
    """Input types come from Python annotations: an argument of unknown (any) type passes."""

    def __post_init__(self) -> None:
        self.input_index = {declared.name: index for index, declared in enumerate(self.inputs)}
        self.required = [(index, d.name) for index, d in enumerate(self.inputs) if d.required]


# types ---------------------------------------------------------------------------------
def check_types(data: Mapping[str, Any], names: Names) -> TypeRegistry | None:
    """Check ``types:``; returns a registry when every definition is usable."""
    type_defs = data.get("types", {})
    if type_defs is None:
        type_defs = {}
    if not names.mapping(type_defs, ("types",), "'types'"):
        return None
    before = len(names.issues)
    known = set(BUILTIN_TYPES) | {k for k in type_defs if isinstance(k, str)}
    for type_name, type_def in type_defs.items():
        path = ("types", type_name)
        if not names.name("type", type_name, path, dots=False):
            continue
        if type_name in BUILTIN_TYPES:
            names.add(error("types.builtin", path, f"{type_name!r} is a built-in type and cannot be redefined", key=True))
            continue
        if _type_def_shape(type_def, path, names, top=True):
            for ref in referenced_type_names(type_def):
                if ref not in known:
                    names.add(error("types.undefined", path, f"type {type_name!r} refers to undefined type {ref!r}"))
    if len(names.issues) > before:
        return None
    cycle = _type_cycle(type_defs)
    if cycle:
        names.add(error("types.cycle", ("types", cycle[0]), "type definitions refer to each other in a cycle: " + " -> ".join(cycle)))
        return None
    registry = TypeRegistry(type_defs)
    _union_duplicates(type_defs, registry, names)
    return registry


def _type_def_shape(type_def: Any, path: tuple[Any, ...], names: Names, *, top: bool) -> bool:
    if isinstance(type_def, str):
        if top:
            names.add(error("types.shape", path, "a type definition is null, {is_a: T} or a structure (list, tuple, mapping, union)"))
            return False
        return True
    if type_def is None and top:
        return True
    if not isinstance(type_def, Mapping) or len(type_def) != 1:
        names.add(error("types.shape", path, f"a type definition needs exactly one of is_a, {', '.join(STRUCTURE_KEYS)}; got {kind_of(type_def) if not isinstance(type_def, Mapping) else list(type_def)}"))
        return False
    (key, inner), = type_def.items()
    sub = (*path, key)
    if key == "is_a" and top:
        if not isinstance(inner, str):
            names.add(error("types.shape", sub, "'is_a' names one type"))
            return False
        return True
    if key == "list":
        return _type_def_shape(inner, sub, names, top=False)
    if key in ("tuple", "union"):
        if not isinstance(inner, list):
            names.add(error("types.shape", sub, f"'{key}' takes a list of types"))
            return False
        return all(_type_def_shape(m, (*sub, i), names, top=False) for i, m in enumerate(inner))
    if key == "mapping":
        if isinstance(inner, list):
            if len(inner) != 2:
                names.add(error("types.shape", sub, "'mapping: [K, V]' takes exactly a key type and a value type"))
                return False
            return all(_type_def_shape(m, (*sub, i), names, top=False) for i, m in enumerate(inner))
        if isinstance(inner, Mapping):
            odd = [k for k in inner if not isinstance(k, str)]
            if odd:
                names.add(error("types.shape", (*sub, odd[0]), f"field names of a mapping type must be strings, got {describe_key(odd[0])}", key=True))
                return False
            return all(_type_def_shape(m, (*sub, k), names, top=False) for k, m in inner.items())
        names.add(error("types.shape", sub, "'mapping' takes [key type, value type] or {field: type}"))
        return False
    names.add(error("types.shape", sub, f"unknown type constructor {key!r}; use is_a, {', '.join(STRUCTURE_KEYS)}", key=True))
    return False


def _type_cycle(type_defs: Mapping[str, Any]) -> list[str] | None:
    edges = {name: [r for r in referenced_type_names(d) if r in type_defs] for name, d in type_defs.items()}
    return find_cycle(edges)


def find_cycle(edges: Mapping[str, list[str]]) -> list[str] | None:
    """One cycle as a closed path (``a -> b -> a``), found by iterative depth-first search."""
    state: dict[str, int] = {}
    for start in edges:
        if state.get(start):
            continue
        stack: list[tuple[str, int]] = [(start, 0)]
        on_path: list[str] = [start]
        state[start] = 1
        while stack:
            node, index = stack[-1]
            targets = edges.get(node, [])
            if index < len(targets):
                stack[-1] = (node, index + 1)
                nxt = targets[index]
                mark = state.get(nxt, 0)
                if mark == 1:
                    return [*on_path[on_path.index(nxt):], nxt]
                if mark == 0:
                    state[nxt] = 1
                    stack.append((nxt, 0))
                    on_path.append(nxt)
            else:
                state[node] = 2
                stack.pop()
                on_path.pop()
    return None


def _union_duplicates(type_defs: Mapping[str, Any], registry: TypeRegistry, names: Names) -> None:
    for type_name, type_def in type_defs.items():
        if isinstance(type_def, Mapping) and isinstance(type_def.get("union"), list):
            seen: list[Any] = []
            dupes: list[str] = []
            for member_def in type_def["union"]:
                member = registry.build(member_def)
                if member in seen:
                    dupes.append(str(member))
                else:
                    seen.append(member)
            if dupes:
                names.add(warning("types.union-duplicate", ("types", type_name, "union"), f"union {type_name!r} lists a member type more than once: {', '.join(dupes)}"))


# parameters ----------------------------------------------------------------------------
def check_parameters(data: Mapping[str, Any], names: Names, registry: TypeRegistry | None) -> dict[str, Any]:
    """Check ``parameters:``; returns the usable ones as name -> (type name, has default, default)."""
    params = data.get("parameters", {})
    if params is None:
        params = {}
    if isinstance(params, list):
        # Dioptra's older form: a list of names, all required.
        params = {name: {"type": "any"} for name in params if isinstance(name, str)}
    if not names.mapping(params, ("parameters",), "'parameters'"):
        return {}
    good: dict[str, Any] = {}
    for name, definition in params.items():
        path = ("parameters", name)
        if not names.name("parameter", name, path):
            continue
        if isinstance(definition, Mapping):
            extra = [k for k in definition if k not in ("type", "default")]
            if extra or not definition:
                names.add(error("parameters.shape", path, "a parameter mapping takes 'type' and/or 'default' (nothing else, not empty)"))
                continue
            type_name = definition.get("type")
            if type_name is not None and (not isinstance(type_name, str) or registry is not None and type_name not in registry.types):
                names.add(error("parameters.type", (*path, "type"), f"undefined type {type_name!r} for parameter {name!r}"))
                continue
            entry = (type_name, "default" in definition, definition.get("default"))
        elif isinstance(definition, (*SCALAR_TYPES, list)):
            entry = (None, True, definition)
        else:
            names.add(error("parameters.shape", path, f"parameter {name!r} must be a default value or {{type, default}}"))
            continue
        type_name, has_default, default = entry
        declared = registry.get(type_name) if registry is not None and type_name is not None else None
        if declared is not None and has_default and not compatible(infer_type(default), declared):
            names.add(error("parameters.default-type", (*path, "default"), f"default {default!r} of parameter {name!r} is not of its declared type {type_name}"))
            continue
        good[name] = entry
    return good


# tasks ---------------------------------------------------------------------------------
def check_tasks(data: Mapping[str, Any], names: Names, type_names: set[str] | None, catalog: PluginCatalog | None) -> dict[str, TaskInfo] | None:
    """Check ``tasks:``; None when the section is absent (short names then resolve by catalog)."""
    if "tasks" not in data:
        return None
    tasks = data["tasks"]
    if not names.mapping(tasks, ("tasks",), "'tasks'"):
        return {}
    if not tasks:
        names.add(error("tasks.empty", ("tasks",), "'tasks' must declare at least one task (or be left out to use registered plugin tasks by name)"))
    infos: dict[str, TaskInfo] = {}
    for short_name, definition in tasks.items():
        path = ("tasks", short_name)
        if not names.name("task", short_name, path):
            continue
        info = _task_definition(short_name, definition, path, names, type_names, catalog)
        if info is not None:
            infos[short_name] = info
        else:
            names.unusable_tasks.add(short_name)
    return infos


def _task_definition(short_name: str, definition: Any, path: tuple[Any, ...], names: Names, type_names: set[str] | None, catalog: PluginCatalog | None) -> TaskInfo | None:
    if not names.mapping(definition, path, f"task {short_name!r}"):
        return None
    ok = True
    for key in definition:
        if key not in ("plugin", "inputs", "outputs"):
            names.add(error("tasks.unknown-key", (*path, key), f"unknown key {key!r} in task {short_name!r}; allowed: plugin, inputs, outputs", key=True))
            ok = False
    plugin = definition.get("plugin")
    if plugin is None:
        names.add(error("tasks.plugin-missing", path, f"task {short_name!r} has no 'plugin' (a dotted path such as 'my_plugins.tasks.add')"))
        return None
    if not isinstance(plugin, str) or "." not in plugin or any(not part for part in plugin.split(".")):
        names.add(error("tasks.plugin-coordinate", (*path, "plugin"), f"plugin {plugin!r} of task {short_name!r} must be a dotted path of at least two non-empty parts (module.function)"))
        return None
    inputs = _inputs(definition.get("inputs", []), (*path, "inputs"), names, type_names)
    outputs = output_spec(definition.get("outputs"), (*path, "outputs"), names, type_names, "task")
    if inputs is None or outputs is None or not ok:
        return None
    found: CatalogTask | None = None
    if catalog is not None:
        looked_up = catalog.lookup_coordinate(plugin)
        if isinstance(looked_up, CatalogTask):
            found = looked_up
        elif looked_up.verdict is CoordinateVerdict.MODULE_NOT_FOUND:
            # Dioptra judges the document alone: workers elsewhere may hold this module.
            names.add(warning("tasks.plugin-not-found", (*path, "plugin"), looked_up.message))
        else:
            names.add(error("tasks.plugin-unknown", (*path, "plugin"), looked_up.message))
            return None
    return TaskInfo(short_name, plugin, inputs, outputs, catalog=found)


def _inputs(value: Any, path: tuple[Any, ...], names: Names, type_names: set[str] | None) -> tuple[InputDef, ...] | None:
    if not isinstance(value, list):
        names.add(error("tasks.inputs", path, "'inputs' must be a list of {name: type} or {name, type, required}"))
        return None
    result: list[InputDef] = []
    seen: set[str] = set()
    ok = True
    for index, item in enumerate(value):
        item_path = (*path, index)
        parsed = _input(item, item_path, names)
        if parsed is None:
            ok = False
            continue
        if parsed.name in seen:
            names.add(error("tasks.input-repeated", item_path, f"input name {parsed.name!r} is repeated"))
            ok = False
        seen.add(parsed.name)
        if type_names is not None and parsed.type not in type_names:
            names.add(error("tasks.input-type", item_path, f"input {parsed.name!r} has undefined type {parsed.type!r}"))
            ok = False
        result.append(parsed)
    return tuple(result) if ok else None


def _input(item: Any, path: tuple[Any, ...], names: Names) -> InputDef | None:
    if isinstance(item, Mapping) and "name" in item:
        extra = [k for k in item if k not in ("name", "type", "required")]
        name, type_name, required = item.get("name"), item.get("type"), item.get("required", True)
        if extra or not isinstance(name, str) or not isinstance(type_name, str) or not isinstance(required, bool):
            names.add(error("tasks.input-shape", path, "a long-form input is {name: str, type: str, required: bool}"))
            return None
        return InputDef(name, type_name, required)
    if isinstance(item, Mapping) and len(item) == 1:
        (name, type_name), = item.items()
        if isinstance(name, str) and isinstance(type_name, str):
            return InputDef(name, type_name, True)
    names.add(error("tasks.input-shape", path, "an input is {name: type} or {name: ..., type: ..., required: ...}"))
    return None


def output_spec(value: Any, path: tuple[Any, ...], names: Names, type_names: set[str] | None, owner: str) -> OutputSpec | None:
    """Parse one output mapping or a list of them (tasks and artifact inputs share this)."""
    if value is None:
        return OutputSpec()
    items = value if isinstance(value, list) else [value]
    result_names: list[str] = []
    result_types: list[str] = []
    ok = True
    for index, item in enumerate(items):
        item_path = (*path, index) if isinstance(value, list) else path
        if not isinstance(item, Mapping) or len(item) != 1:
            names.add(error("outputs.shape", item_path, f"an output of a {owner} is a one-entry mapping {{name: type}}"))
            ok = False
            continue
        (name, type_name), = item.items()
        if not isinstance(name, str) or not isinstance(type_name, str):
            names.add(error("outputs.shape", item_path, "output names and types are strings"))
            ok = False
            continue
        if name in result_names:
            names.add(error("outputs.repeated", item_path, f"output name {name!r} is repeated"))
            ok = False
        if type_names is not None and type_name not in type_names:
            names.add(error("outputs.type", item_path, f"output {name!r} has undefined type {type_name!r}"))
            ok = False
        result_names.append(name)
        result_types.append(type_name)
    if not ok:
        return None
    return OutputSpec(names=tuple(result_names), types=tuple(result_types), unpack=isinstance(value, list))


def task_from_catalog(task: CatalogTask) -> TaskInfo:
    return TaskInfo(
        name=task.spec.name, plugin=task.spec.coordinate, inputs=task.inputs,
        outputs=task.spec.outputs, open_positional=task.varargs, open_keywords=task.varkw,
        catalog=task, gradual=True,
    )


def check_artifact_inputs(data: Mapping[str, Any], names: Names, type_names: set[str] | None) -> dict[str, OutputSpec]:
    section = data.get("artifact_inputs", {})
    if section is None:
        return {}
    if not names.mapping(section, ("artifact_inputs",), "'artifact_inputs'"):
        return {}
    result: dict[str, OutputSpec] = {}
    for name, definition in section.items():
        path = ("artifact_inputs", name)
        if not names.name("artifact input", name, path):
            continue
        spec = output_spec(definition, path, names, type_names, "artifact input")
        if spec is not None:
            if not spec.names:
                names.add(error("artifact_inputs.shape", path, f"artifact input {name!r} must declare at least one output"))
                continue
            result[name] = spec
    return result
