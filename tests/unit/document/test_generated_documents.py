"""Property tests: generated DAG documents run in an order that respects every edge, and
arbitrary input only ever produces validation problems, never an exception."""

from __future__ import annotations

import json

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.document import check_text
from tests.unit.conftest import fixture_catalog, run_document

CATALOG = fixture_catalog()


@st.composite
def dag_documents(draw: st.DrawFn) -> tuple[str, dict[str, set[str]]]:
    size = draw(st.integers(min_value=1, max_value=25))
    names = [f"n{i}" for i in range(size)]
    graph: dict[str, dict] = {}
    edges: dict[str, set[str]] = {}
    for index, name in enumerate(names):
        upstream = sorted(set(draw(st.lists(st.sampled_from(names[:index]), max_size=3)))) if index else []
        by_reference = [u for u in upstream if draw(st.booleans())]
        explicit = [u for u in upstream if u not in by_reference]
        refs = [f"${u}" for u in by_reference]
        form = draw(st.sampled_from(["positional", "keyword", "mixed", "nested"]))
        if form == "positional":
            step: dict = {"tp_stamp": refs}
        elif form == "keyword":
            step = {"tp_stamp": {f"k{i}": ref for i, ref in enumerate(refs)}}
        elif form == "mixed":
            step = {"task": "tp_stamp", "args": refs[:1], "kwargs": {f"k{i}": r for i, r in enumerate(refs[1:])}}
        else:
            step = {"tp_stamp": [{"nested": [refs, {"deep": refs}]}]}
        if explicit:
            step["dependencies"] = explicit if len(explicit) > 1 or draw(st.booleans()) else explicit[0]
        graph[name] = step
        edges[name] = set(upstream)
    order = draw(st.permutations(names))
    document = {"graph": {name: graph[name] for name in order}}  # short names: no tasks section
    as_json = draw(st.booleans())
    text = json.dumps(document) if as_json else yaml.safe_dump(document, sort_keys=False)
    return text, edges


@given(dag_documents(), st.integers(min_value=1, max_value=4))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_execution_order_respects_every_edge(case: tuple[str, dict[str, set[str]]], concurrency: int) -> None:
    text, edges = case
    result = run_document(text, concurrency=concurrency)
    assert result.status == "succeeded", (result.error, {n: r.traceback for n, r in result.steps.items() if r.traceback})
    ticks = {name: report.outputs["tick"] for name, report in result.steps.items()}
    for child, parents in edges.items():
        for parent in parents:
            assert ticks[parent] < ticks[child], f"{child} started before {parent} finished"


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
    | st.sampled_from(["$a", "$a.b", "$$x", "$", "graph", "tasks", "task", "args", "kwargs", "dependencies", "plugin", "tp_tasks.tp_add"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["graph", "tasks", "parameters", "types", "artifact_inputs", "artifact_outputs", "a", "b", "task",
                         "args", "kwargs", "dependencies", "plugin", "inputs", "outputs", "type", "default", "name",
                         "list", "tuple", "union", "mapping", "is_a", "contents", "required", "stamp", "tp_add"]) | st.text(max_size=5),
        children, max_size=5),
    max_leaves=30,
)


def _assert_only_issues(text: str) -> None:
    result = check_text(text, "fuzz.yaml", CATALOG)
    for issue in result.issues:
        line = issue.format("fuzz.yaml")
        assert line.startswith("fuzz.yaml:") and issue.line is not None and issue.line >= 1
    assert (result.document is None) == any(i.severity.value == "error" for i in result.issues)


@given(yaml_values)
@settings(max_examples=400, deadline=None)
def test_garbage_structures_only_produce_problems(value: object) -> None:
    _assert_only_issues(yaml.safe_dump(value))


@given(st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_garbage_text_only_produces_problems(text: str) -> None:
    _assert_only_issues(text)


@given(st.dictionaries(st.sampled_from(["graph", "tasks", "parameters", "types"]), yaml_values, min_size=1))
@settings(max_examples=400, deadline=None)
def test_garbage_sections_only_produce_problems(value: dict) -> None:
    _assert_only_issues(yaml.safe_dump(value))
