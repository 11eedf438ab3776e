"""Differential tests: theodolite and Dioptra's own task engine (dioptra-platform, installed
without its service dependencies as a test oracle) agree on generated documents."""

from __future__ import annotations

import copy
import sys
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.conftest import FIXTURE_PLUGINS, check, run_document

dioptra_engine = pytest.importorskip("dioptra.task_engine.task_engine")
dioptra_validation = pytest.importorskip("dioptra.task_engine.validation")

TASKS = {
    "add": {"plugin": "dp_tasks.dp_add", "inputs": [{"a": "number"}, {"b": "number"}], "outputs": {"sum": "number"}},
    "pair": {"plugin": "dp_tasks.dp_pair", "inputs": [{"a": "any"}, {"name": "b", "type": "any", "required": False}],
             "outputs": [{"first": "any"}, {"second": "any"}]},
    "wrap": {"plugin": "dp_tasks.dp_wrap", "inputs": [{"value": "any"}], "outputs": {"value": "any"}},
    "nothing": {"plugin": "dp_tasks.dp_nothing"},
}
LITERALS = st.one_of(
    st.integers(-5, 5), st.booleans(), st.none(), st.text("ab ", max_size=4),
    st.sampled_from(["$$x", "$", "$$", "a$b", "$$$y"]),
)


def run_dioptra(document: dict[str, Any], parameters: dict[str, Any]) -> dict[str, dict[str, Any]]:
    sys.path.insert(0, str(FIXTURE_PLUGINS))
    try:
        context = dioptra_engine.EngineContext(copy.deepcopy(document), dict(parameters), {}, {})
        dioptra_engine._run_steps(context)
        return {name: dict(values) for name, values in context.step_outputs.items()}
    finally:
        sys.path.remove(str(FIXTURE_PLUGINS))


@st.composite
def documents(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    params = {f"p{i}": draw(st.integers(0, 9)) for i in range(draw(st.integers(0, 3)))}
    declared: dict[str, Any] = {}
    for name, value in params.items():
        declared[name] = draw(st.sampled_from([value, {"default": value}, {"type": "integer", "default": value}]))
    given_params = {k: v + 100 for k, v in params.items() if draw(st.booleans())}
    graph: dict[str, Any] = {}
    numeric_refs: list[str] = [f"${p}" for p in params]
    any_refs: list[str] = list(numeric_refs)
    for index in range(draw(st.integers(1, 12))):
        name = f"s{index}"
        kind = draw(st.sampled_from(["add", "pair", "wrap", "nothing"]))

        def value(numeric: bool) -> Any:
            pool = numeric_refs if numeric else any_refs
            if pool and draw(st.booleans()):
                return draw(st.sampled_from(pool))
            if numeric:
                return draw(st.integers(-3, 3))
            return draw(st.recursive(LITERALS | (st.sampled_from(any_refs) if any_refs else LITERALS),
                                     lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from("xyz"), c, max_size=2),
                                     max_leaves=5))

        form = draw(st.sampled_from(["positional", "keyword", "mixed"]))
        if kind == "nothing":
            args = []
        elif kind == "add":
            args = [value(True), value(True)]
        elif kind == "pair":
            args = [value(False)] + ([value(False)] if draw(st.booleans()) else [])
        else:
            args = [value(False)]
        names = [d["name"] if "name" in d else next(iter(d)) for d in TASKS[kind].get("inputs", [])]
        if form == "keyword":
            step: dict[str, Any] = {kind: dict(zip(names, args))}
        elif form == "mixed" and args:
            split = draw(st.integers(0, len(args)))
            step = {"task": kind, "args": args[:split], "kwargs": dict(zip(names[split:], args[split:]))}
        else:
            step = {kind: args}
        earlier = list(graph)
        if earlier and draw(st.booleans()):
            step["dependencies"] = draw(st.lists(st.sampled_from(earlier), min_size=1, max_size=2, unique=True))
        graph[name] = step
        if kind == "add":
            numeric_refs.append(f"${name}")
            any_refs.append(f"${name}")
        elif kind == "pair":
            any_refs.extend([f"${name}.first", f"${name}.second"])
        elif kind == "wrap":
            any_refs.append(f"${name}.value")
    order = draw(st.permutations(list(graph)))
    document = {"parameters": declared, "tasks": TASKS, "graph": {k: graph[k] for k in order}}
    if not declared:
        del document["parameters"]
    return document, given_params


@given(documents())
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_same_outputs_as_dioptra(case: tuple[dict[str, Any], dict[str, Any]]) -> None:
    document, parameters = case
    issues = [i for i in dioptra_validation.validate(copy.deepcopy(document)) if i.severity.name == "ERROR"]
    assert issues == [], issues
    expected = run_dioptra(document, parameters)
    ours = run_document(yaml.safe_dump(document, sort_keys=False), parameters)
    assert ours.status == "succeeded"
    assert {name: report.outputs for name, report in ours.steps.items() if report.outputs} == expected


BROKEN = [
    ("unknown reference", {"s1": {"wrap": ["$nope"]}}),
    ("unknown output", {"s1": {"wrap": ["$s0.third"]}}),
    ("several outputs, no name", {"s1": {"wrap": ["$s0"]}}),
    ("no output", {"z": {"nothing": []}, "s1": {"wrap": ["$z"]}}),
    ("parameter with output", {"s1": {"wrap": ["$p.x"]}}),
    ("unknown dependency", {"s1": {"wrap": [1], "dependencies": ["ghost"]}}),
    ("cycle", {"s1": {"wrap": ["$s2"]}, "s2": {"wrap": ["$s1.value"]}}),
    ("too many arguments", {"s1": {"wrap": [1, 2]}}),
    ("unknown keyword", {"s1": {"wrap": {"valu": 1}}}),
    ("missing required", {"s1": {"pair": {"b": 1}}}),
    ("both positional and keyword", {"s1": {"task": "wrap", "args": [1], "kwargs": {"value": 2}}}),
    ("unknown task", {"s1": {"wrapp": [1]}}),
    ("two task names", {"s1": {"wrap": [1], "pair": [1]}}),
    ("dotted step name", {"s.1": {"wrap": [1]}}),
    ("argument type", {"s1": {"add": ["text", 1]}}),
    ("parameter collides with step", {"p": {"wrap": [1]}}),
]


@pytest.mark.parametrize("label, steps", BROKEN, ids=[b[0] for b in BROKEN])
def test_both_engines_reject_the_same_broken_documents(label: str, steps: dict[str, Any]) -> None:
    document = {"parameters": {"p": 1}, "tasks": TASKS, "graph": {"s0": {"pair": [1, 2]}, **steps}}
    theirs = [i for i in dioptra_validation.validate(copy.deepcopy(document)) if i.severity.name == "ERROR"]
    ours = check(yaml.safe_dump(document, sort_keys=False))
    assert theirs, f"Dioptra accepted {label}"
    assert ours.document is None, f"theodolite accepted {label}"


@given(documents(), st.sampled_from(["lab.plugins", "dioptra_builtins.tracking", "src.squeeze_plugin"]))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_same_verdict_when_plugin_modules_live_on_other_machines(case: tuple[dict[str, Any], dict[str, Any]], module: str) -> None:
    """Dioptra judges a document alone: plugins this machine lacks do not make it invalid."""
    document, _ = case
    document["tasks"] = {name: {**task, "plugin": f"{module}.{task['plugin'].rpartition('.')[2]}"}
                         for name, task in document["tasks"].items()}
    theirs = [i for i in dioptra_validation.validate(copy.deepcopy(document)) if i.severity.name == "ERROR"]
    ours = check(yaml.safe_dump(document, sort_keys=False))
    assert theirs == []
    assert ours.document is not None, [i.format("doc.yaml") for i in ours.issues]
    assert {i.code for i in ours.issues} <= {"tasks.plugin-not-found", "parameters.no-default"}
