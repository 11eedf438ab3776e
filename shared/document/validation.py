"""The validator: every problem in a document, each with its path and line.

It never imports plugin code: tasks are checked against the static
:class:`~shared.plugin_catalog.PluginCatalog`. Checks whose prerequisites failed are
skipped (no cycle search over broken references), as in Dioptra's validator. Everything
is linear in the size of the document.

Longer than our usual module on purpose: the checks of one document section after another
share one ``Names`` table and the order of prerequisites, and read best in sequence, as
Dioptra's ``task_engine/validation.py`` does; the sections that stand alone are already in
``sections.py``, ``types.py`` and ``structure.py``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.document.issues import Issue, Severity, error, has_errors
from shared.document.model import (
    ArtifactInput,
    ArtifactOutput,
    JobDocument,
    Parameter,
    Step,
    TaskBinding,
)
from shared.document.references import iter_references, split_reference
from shared.document.sections import (
    TaskInfo,
    check_artifact_inputs,
    check_parameters,
    check_tasks,
    check_types,
    find_cycle,
    task_from_catalog,
)
from shared.document.source import DocPath, SourceDocument
from shared.document.structure import Names, StepShape, check_top_level, describe_key, step_shape
from shared.document.types import (
    ANY,
    Type,
    TypeRegistry,
    compatible,
    infer_type,
    is_reference,
)
from shared.plugin_catalog import PluginCatalog, describe
from shared.retry_policy import RetryPolicy


@dataclass
class ValidationResult:
    issues: list[Issue]
    document: JobDocument | None = None
    source: SourceDocument | None = None

    def locate(self, issues: list[Issue]) -> list[Issue]:
        """Give later issues (e.g. about run-time parameters) lines from this document."""
        if self.source is None:
            return issues
        return [_with_line(issue, self.source) if issue.line is None else issue for issue in issues]

    @property
    def ok(self) -> bool:
        return self.document is not None

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity is Severity.ERROR]


@dataclass
class _Graph:
    shapes: dict[str, StepShape] = field(default_factory=dict)
    bound: dict[str, TaskInfo] = field(default_factory=dict)
    deps: dict[str, list[str]] = field(default_factory=dict)


def validate_source(source: SourceDocument, catalog: PluginCatalog | None) -> ValidationResult:
    """Validate a parsed document and attach line numbers to every issue."""
    result = validate_data(source.data, catalog)
    located = [_with_line(issue, source) for issue in result.issues]
    located.extend(_duplicate_keys(source))
    located.sort(key=lambda i: (i.line or 0))
    if has_errors(located):
        return ValidationResult(located, None, source)
    return ValidationResult(located, result.document, source)


def _with_line(issue: Issue, source: SourceDocument) -> Issue:
    line = source.source_map.key_line(issue.path) if issue.key_line else source.line_of(issue.path)
    return issue.model_copy(update={"line": line})


def _duplicate_keys(source: SourceDocument) -> list[Issue]:
    data = source.data
    if not isinstance(data, Mapping):
        return []
    paths: list[DocPath] = [()]
    for section in ("types", "parameters", "tasks", "graph", "artifact_inputs", "artifact_outputs"):
        if isinstance(data.get(section), Mapping):
            paths.append((section,))
    if isinstance(data.get("graph"), Mapping):
        paths.extend(("graph", name) for name, step in data["graph"].items() if isinstance(step, Mapping) and isinstance(name, str))
    issues = []
    for path in paths:
        for key, line in source.source_map.duplicate_keys(path):
            issues.append(error("name.duplicate", (*path, key), f"{key!r} is defined more than once here; a later entry would silently replace the earlier one").model_copy(update={"line": line}))
    return issues


def validate_data(data: Any, catalog: PluginCatalog | None) -> ValidationResult:
    names = Names()
    if not check_top_level(data, names):
        return ValidationResult(names.issues)
    registry = check_types(data, names)
    type_names = set(registry.types) if registry is not None else None
    params = check_parameters(data, names, registry)
    tasks = check_tasks(data, names, type_names, catalog)
    artifacts = check_artifact_inputs(data, names, type_names)
    graph = _check_graph(data, names, tasks, catalog, params, artifacts)
    _check_collisions(data, names)
    if graph is not None and not has_errors(names.issues):
        _check_argument_types(graph, names, registry, params, artifacts)
    outputs = _check_artifact_outputs(data, names, graph, params, artifacts, tasks, catalog)
    if has_errors(names.issues) or graph is None:
        return ValidationResult(names.issues)
    return ValidationResult(names.issues, _build_document(graph, params, artifacts, outputs, data.get("types") or {}))


# graph -----------------------------------------------------------------------------------
def _check_graph(data: Mapping[str, Any], names: Names, tasks: dict[str, TaskInfo] | None, catalog: PluginCatalog | None, params: dict[str, Any], artifacts: Mapping[str, Any]) -> _Graph | None:
    if "graph" not in data:
        return None
    section = data["graph"]
    if not names.mapping(section, ("graph",), "'graph'"):
        return None
    if not section:
        names.add(error("graph.empty", ("graph",), "'graph' must have at least one step"))
        return None
    graph = _Graph()
    for step_name, step in section.items():
        if not names.name("step", step_name, ("graph", step_name)):
            continue
        shape = step_shape(step_name, step, names)
        if shape is None:
            continue
        graph.shapes[step_name] = shape
        info = _bind_task(step_name, shape, names, tasks, catalog)
        if info is not None:
            graph.bound[step_name] = info
            _check_invocation(step_name, shape, info, names)
    before = len(names.issues)
    for step_name, shape in graph.shapes.items():
        graph.deps[step_name] = _step_dependencies(step_name, shape, graph, names, params, artifacts)
    if len(names.issues) == before and len(graph.shapes) == len(section) and len(graph.bound) == len(graph.shapes):
        cycle = find_cycle(graph.deps)
        if cycle:
            names.add(error("graph.cycle", ("graph", cycle[0]), "the steps depend on each other in a cycle: " + " -> ".join(cycle)))
    return graph


def _bind_task(step_name: str, shape: StepShape, names: Names, tasks: dict[str, TaskInfo] | None, catalog: PluginCatalog | None) -> TaskInfo | None:
    path = ("graph", step_name, "task") if shape.args_path[-1] == "args" else shape.args_path
    if tasks is not None:
        info = tasks.get(shape.task)
        if info is None and shape.task not in names.unusable_tasks:
            hint = _suggest(shape.task, tasks)
            names.add(error("step.unknown-task", path, f"step {step_name!r} calls task {shape.task!r}, which 'tasks' does not declare{hint}", key=shape.args_path[-1] != "args"))
        return info
    if catalog is None:
        names.add(error("step.unknown-task", path, f"task {shape.task!r} cannot be resolved: the document has no 'tasks' and no plugin catalog was given"))
        return None
    found = catalog.lookup_short_name(shape.task)
    if not found:
        hint = _suggest(shape.task, {t.spec.name for t in catalog.all_tasks()})
        problems = catalog.scan_problems()
        also = f" (plugin modules that could not be read: {'; '.join(p.message for p in problems)})" if problems else ""
        names.add(error("step.unknown-task", path, f"step {step_name!r} calls task {shape.task!r}, which is not a registered plugin task{hint}{also}", key=shape.args_path[-1] != "args"))
        return None
    if len(found) > 1:
        names.add(error("step.ambiguous-task", path, f"task name {shape.task!r} is ambiguous: registered by {describe(found)}; declare the one you mean under 'tasks'", key=shape.args_path[-1] != "args"))
        return None
    return task_from_catalog(found[0])


def _suggest(name: str, candidates: Any) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=3)
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def _check_invocation(step_name: str, shape: StepShape, info: TaskInfo, names: Names) -> None:
    inputs = info.inputs
    positional = len(shape.args)
    if positional > len(inputs) and not info.open_positional:
        names.add(error("step.too-many-args", shape.args_path, f"step {step_name!r} passes {positional} positional arguments but task {info.name!r} takes {len(inputs)}"))
    for keyword in shape.kwargs:
        index = info.input_index.get(keyword)
        if index is None:
            if not info.open_keywords:
                expected = ", ".join(info.input_index) or "no arguments"
                names.add(error("step.unknown-keyword", (*shape.kwargs_path, keyword), f"task {info.name!r} has no input {keyword!r} (inputs: {expected})", key=True))
        elif index < positional:
            names.add(error("step.argument-twice", (*shape.kwargs_path, keyword), f"input {keyword!r} is given both as positional argument #{index + 1} and by keyword", key=True))
    for index, name in info.required:
        if index >= positional and name not in shape.kwargs:
            names.add(error("step.missing-argument", ("graph", step_name), f"step {step_name!r} does not give required input {name!r} of task {info.name!r}"))


def _step_dependencies(step_name: str, shape: StepShape, graph: _Graph, names: Names, params: Mapping[str, Any], artifacts: Mapping[str, Any]) -> list[str]:
    deps: dict[str, None] = {}
    for reference, path in _references(shape):
        target, output = split_reference(reference)
        if target in graph.shapes:
            info = graph.bound.get(target)
            if info is not None:
                _check_output(reference, target, output, info.outputs.names, path, names, "step")
            deps[target] = None
        elif target in params:
            if output is not None:
                names.add(error("reference.parameter-output", path, f"${reference}: parameter {target!r} has no outputs; write ${target}"))
        elif target in artifacts:
            _check_output(reference, target, output, artifacts[target].names, path, names, "artifact input")
        else:
            known = [*graph.shapes, *params, *artifacts]
            names.add(error("reference.unresolvable", path, f"${reference} does not name a parameter, step or artifact input{_suggest(target, known)}"))
    for index, dependency in enumerate(shape.dependencies):
        if dependency not in graph.shapes:
            names.add(error("step.unknown-dependency", ("graph", step_name, "dependencies", index) if shape.dependencies_listed else ("graph", step_name, "dependencies"), f"step {step_name!r} depends on unknown step {dependency!r}{_suggest(dependency, graph.shapes)}"))
        else:
            deps[dependency] = None
    return list(deps)


def _references(shape: StepShape) -> list[tuple[str, DocPath]]:
    found: list[tuple[str, DocPath]] = []
    if shape.positional_as_list:
        for index, value in enumerate(shape.args):
            if isinstance(value, str):
                if value[:1] == "$" and is_reference(value):
                    found.append((value[1:], (*shape.args_path, index)))
            elif isinstance(value, (list, dict)):
                found.extend(iter_references(value, (*shape.args_path, index)))
    elif shape.args:
        found.extend(iter_references(shape.args[0], shape.args_path))
    for key, value in shape.kwargs.items():
        if isinstance(value, str):
            if value[:1] == "$" and is_reference(value):
                found.append((value[1:], (*shape.kwargs_path, key)))
        elif isinstance(value, (list, dict)):
            found.extend(iter_references(value, (*shape.kwargs_path, key)))
    return found


def _check_output(reference: str, target: str, output: str | None, outputs: tuple[str, ...], path: DocPath, names: Names, kind: str) -> None:
    if output is None:
        if not outputs:
            names.add(error("reference.no-output", path, f"${reference}: {kind} {target!r} produces no output (its task declares no 'outputs')"))
        elif len(outputs) > 1:
            names.add(error("reference.ambiguous-output", path, f"${reference}: {kind} {target!r} has several outputs ({', '.join(outputs)}); name one as ${target}.OUTPUT"))
    elif output not in outputs:
        have = ", ".join(outputs) or "none"
        names.add(error("reference.unknown-output", path, f"${reference}: {kind} {target!r} has no output {output!r} (outputs: {have})"))


def _check_collisions(data: Mapping[str, Any], names: Names) -> None:
    sections = {
        "parameters": data.get("parameters"),
        "graph": data.get("graph"),
        "artifact_inputs": data.get("artifact_inputs"),
    }
    owners: dict[str, str] = {}
    for section, value in sections.items():
        if not isinstance(value, Mapping):
            continue
        for name in value:
            if not isinstance(name, str):
                continue
            if name in owners:
                names.add(error("name.collision", (section, name), f"{name!r} is both in '{owners[name]}' and in '{section}': references to it would be ambiguous", key=True))
            else:
                owners[name] = section


# types of arguments ------------------------------------------------------------------------
def _check_argument_types(graph: _Graph, names: Names, registry: TypeRegistry | None, params: Mapping[str, Any], artifacts: Mapping[str, Any]) -> None:
    if registry is None:
        return
    param_types: dict[str, Type] = {
        name: registry.get(type_name) if type_name else infer_type(default)
        for name, (type_name, _has_default, default) in params.items()
    }

    def output_type(type_names: tuple[str, ...], out_names: tuple[str, ...], output: str | None) -> Type:
        if output is None:
            return registry.get(type_names[0]) if type_names else ANY
        for name, type_name in zip(out_names, type_names):
            if name == output:
                return registry.get(type_name) if type_name in registry.types else ANY
        return ANY

    def reference_type(reference: str) -> Type:
        target, output = split_reference(reference)
        if output is None and target in param_types:
            return param_types[target]
        info = graph.bound.get(target)
        if info is not None:
            return output_type(info.outputs.types, info.outputs.names, output)
        if target in artifacts:
            return output_type(artifacts[target].types, artifacts[target].names, output)
        return ANY

    declared_by_task: dict[str, tuple[list[Type], dict[str, Type]] | None] = {}
    for step_name, shape in graph.shapes.items():
        info = graph.bound.get(step_name)
        if info is None:
            continue
        if info.name not in declared_by_task:
            declared_by_task[info.name] = _declared_types(info, registry)
        declared_types = declared_by_task[info.name]
        if declared_types is None:
            continue
        declared, by_name = declared_types
        for index, (value, param_type) in enumerate(zip(shape.args, declared)):
            if param_type is not ANY:
                inferred = infer_type(value, reference_type)
                if not (info.gradual and inferred is ANY) and not compatible(inferred, param_type):
                    path = (*shape.args_path, index) if shape.positional_as_list else shape.args_path
                    names.add(error("type.argument", path, f"positional argument #{index + 1} of step {step_name!r} is {inferred} but task {info.name!r} expects {param_type}"))
        for key, value in shape.kwargs.items():
            param_type = by_name.get(key, ANY)
            if param_type is not ANY:
                inferred = infer_type(value, reference_type)
                if not (info.gradual and inferred is ANY) and not compatible(inferred, param_type):
                    names.add(error("type.argument", (*shape.kwargs_path, key), f"keyword argument {key!r} of step {step_name!r} is {inferred} but task {info.name!r} expects {param_type}"))


def _declared_types(info: TaskInfo, registry: TypeRegistry) -> tuple[list[Type], dict[str, Type]] | None:
    """A task's input types, or None when every input is ``any`` (nothing to check)."""
    declared = [registry.types.get(i.type, ANY) for i in info.inputs]
    if all(t is ANY for t in declared):
        return None
    return declared, {i.name: t for i, t in zip(info.inputs, declared)}


# artifact outputs ------------------------------------------------------------------------
def _check_artifact_outputs(data: Mapping[str, Any], names: Names, graph: _Graph | None, params: Mapping[str, Any], artifacts: Mapping[str, Any], tasks: dict[str, TaskInfo] | None, catalog: PluginCatalog | None) -> dict[str, ArtifactOutput]:
    section = data.get("artifact_outputs", {})
    if section is None:
        return {}
    if not names.mapping(section, ("artifact_outputs",), "'artifact_outputs'"):
        return {}
    result: dict[str, ArtifactOutput] = {}
    for name, definition in section.items():
        path = ("artifact_outputs", name)
        if not names.name("artifact output", name, path, dots=False) or not names.mapping(definition, path, f"artifact output {name!r}"):
            continue
        extra = [k for k in definition if k not in ("contents", "task")]
        contents, task = definition.get("contents"), definition.get("task")
        if extra or not isinstance(contents, str) or not isinstance(task, Mapping):
            names.add(error("artifact_outputs.shape", path, "an artifact output is {contents: \"$reference\", task: {name: serializer, args: {...}}}"))
            continue
        target, output = split_reference(contents[1:])
        if not is_reference(contents):
            pass  # a literal string is saved as it is (Dioptra allows it)
        elif graph is not None and target in graph.shapes:
            info = graph.bound.get(target)
            if info is not None:
                _check_output(contents[1:], target, output, info.outputs.names, (*path, "contents"), names, "step")
        elif target in artifacts:
            _check_output(contents[1:], target, output, artifacts[target].names, (*path, "contents"), names, "artifact input")
        elif not (target in params and output is None):
            names.add(error("artifact_outputs.contents", (*path, "contents"), f"{contents} does not name a parameter, step or artifact input"))
            continue
        task_name, args = task.get("name"), task.get("args", {})
        if not isinstance(task_name, str) or not isinstance(args, Mapping) or [k for k in task if k not in ("name", "args")]:
            names.add(error("artifact_outputs.task", (*path, "task"), "'task' is {name: serializer task, args: {...}}"))
            continue
        odd = [key for key in args if not isinstance(key, str)]
        if odd:
            names.add(error("artifact_outputs.task", (*path, "task", "args", odd[0]), f"argument names of a serializer task must be strings, got {describe_key(odd[0])}", key=True))
            continue
        plugin = _artifact_task_plugin(task_name, (*path, "task", "name"), names, tasks, catalog)
        if plugin is not None:
            result[name] = ArtifactOutput(name=name, contents=contents, task=plugin, args=dict(args))
    return result


def _artifact_task_plugin(task_name: str, path: DocPath, names: Names, tasks: dict[str, TaskInfo] | None, catalog: PluginCatalog | None) -> str | None:
    if tasks is not None and task_name in tasks:
        return tasks[task_name].plugin
    found = catalog.lookup_short_name(task_name) if catalog is not None else []
    if len(found) == 1:
        return found[0].spec.coordinate
    reason = "is ambiguous: " + describe(found) if found else "is not a declared or registered task"
    names.add(error("artifact_outputs.task", path, f"serializer task {task_name!r} {reason}"))
    return None


# document --------------------------------------------------------------------------------
def _build_document(graph: _Graph, params: Mapping[str, Any], artifacts: Mapping[str, Any], outputs: dict[str, ArtifactOutput], types: Mapping[str, Any]) -> JobDocument:
    bindings: dict[str, TaskBinding] = {}
    steps: dict[str, Step] = {}
    for step_name, shape in graph.shapes.items():
        info = graph.bound[step_name]
        if info.name not in bindings:
            spec = info.catalog.spec if info.catalog is not None else None
            bindings[info.name] = TaskBinding(
                name=info.name, plugin=info.plugin, outputs=info.outputs,
                device=spec.device if spec else "cpu",
                retries=spec.retries if spec else 0,
                timeout_s=spec.timeout_s if spec else None,
                retry=spec.retry_policy if spec else RetryPolicy(),
            )
        steps[step_name] = Step(step_name, info.name, shape.args, shape.kwargs, graph.deps[step_name], shape.retry)
    return JobDocument(
        types=dict(types),
        parameters={
            name: Parameter(name=name, type=type_name, has_default=has_default, default=default)
            for name, (type_name, has_default, default) in params.items()
        },
        tasks=bindings,
        steps=steps,
        artifact_inputs={name: ArtifactInput(name=name, outputs=spec) for name, spec in artifacts.items()},
        artifact_outputs=outputs,
    )
