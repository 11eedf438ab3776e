"""Step forms, references and outputs behave as in Dioptra's task engine."""

from __future__ import annotations

import pytest

from tests.unit.conftest import check, codes, outputs, run_document

TASKS = """
tasks:
  add: {plugin: tp_tasks.tp_add, inputs: [{a: number}, {name: b, type: number, required: false}], outputs: {sum: number}}
  pair: {plugin: tp_tasks.tp_pair, inputs: [{a: any}, {b: any}], outputs: [{first: number}, {second: any}]}
  echo: {plugin: tp_tasks.tp_echo, inputs: [{value: any}], outputs: {value: any}}
  nothing: {plugin: tp_tasks.tp_nothing}
"""


def test_positional_keyword_and_mixed_forms_give_the_same_sum() -> None:
    result = run_document(TASKS + """
graph:
  positional: {add: [1, 2]}
  keyword: {add: {a: 1, b: 2}}
  mixed: {task: add, args: [1], kwargs: {b: 2}}
  single: {add: 3}
  mixed_single: {task: add, args: 3}
""")
    assert result.status == "succeeded"
    for step in ("positional", "keyword", "mixed"):
        assert outputs(result, step) == {"sum": 3}
    assert outputs(result, "single") == {"sum": 3}
    assert outputs(result, "mixed_single") == {"sum": 3}


def test_empty_list_and_empty_mapping_mean_no_arguments() -> None:
    result = run_document("""
tasks:
  echo: {plugin: tp_tasks.tp_echo, inputs: [{name: value, type: any, required: false}], outputs: {value: any}}
graph:
  a: {echo: []}
  b: {echo: {}}
""")
    assert outputs(result, "a") == {"value": None}
    assert outputs(result, "b") == {"value": None}


def test_references_to_parameters_single_outputs_and_named_outputs() -> None:
    result = run_document(TASKS + """
parameters:
  n: 5
  label: {type: string, default: hello}
graph:
  p: {pair: [$n, $label]}
  total: {add: [$p.first, 10]}
  again: {add: {a: $total}}
""")
    assert outputs(result, "p") == {"first": 5, "second": "hello"}
    assert outputs(result, "total") == {"sum": 15}
    assert outputs(result, "again") == {"sum": 15}


def test_references_nested_in_lists_and_mappings_are_resolved() -> None:
    result = run_document(TASKS + """
parameters: {n: 2}
graph:
  base: {add: [1, 1]}
  nested: {echo: [{list: [$n, [$base, {deep: $base}]], key: $base}]}
""")
    assert outputs(result, "nested") == {"value": {"list": [2, [2, {"deep": 2}]], "key": 2}}


def test_dollar_escapes_and_lone_dollar_are_literal() -> None:
    result = run_document(TASKS + """
graph:
  a: {echo: ["$$name"]}
  b: {echo: ["$"]}
  c: {echo: ["$$$x"]}
  d: {echo: ["$$"]}
  e: {echo: ["a$b"]}
""")
    assert outputs(result, "a") == {"value": "$name"}
    assert outputs(result, "b") == {"value": "$"}
    assert outputs(result, "c") == {"value": "$$x"}
    assert outputs(result, "d") == {"value": "$"}
    assert outputs(result, "e") == {"value": "a$b"}


def test_explicit_dependencies_order_steps_without_data_flow() -> None:
    result = run_document("""
tasks:
  stamp: {plugin: tp_tasks.tp_stamp, outputs: {tick: integer}}
graph:
  late: {stamp: [], dependencies: [middle]}
  middle: {stamp: [], dependencies: first}
  first: {stamp: []}
""", concurrency=4)
    ticks = {name: outputs(result, name)["tick"] for name in ("first", "middle", "late")}
    assert ticks["first"] < ticks["middle"] < ticks["late"]


def test_output_unpacking_truncates_to_declared_names_and_single_output_keeps_whole_value() -> None:
    result = run_document("""
tasks:
  short: {plugin: tp_tasks.tp_short, inputs: [{values: any}], outputs: [{x: any}, {y: any}, {z: any}]}
  whole: {plugin: tp_tasks.tp_short, inputs: [{values: any}], outputs: {all: any}}
graph:
  fewer: {short: [[1, 2]]}
  more: {short: [[1, 2, 3, 4]]}
  whole: {whole: [[1, 2, 3]]}
""")
    assert outputs(result, "fewer") == {"x": 1, "y": 2}
    assert outputs(result, "more") == {"x": 1, "y": 2, "z": 3}
    assert outputs(result, "whole") == {"all": [1, 2, 3]}


def test_non_iterable_return_for_several_outputs_fails_the_step() -> None:
    result = run_document("""
tasks:
  scalar: {plugin: tp_tasks.tp_scalar, outputs: [{x: any}, {y: any}]}
graph:
  s: {scalar: []}
""")
    assert result.status == "failed"
    assert result.error is not None and result.error.step == "s"
    assert result.error.type == "StepOutputError"


def test_task_without_outputs_stores_nothing() -> None:
    result = run_document(TASKS + "graph:\n  n: {nothing: []}\n")
    assert result.status == "succeeded"
    assert outputs(result, "n") == {}


def test_parameter_defaults_and_given_values() -> None:
    doc = TASKS + """
parameters:
  a: 1
  b: {default: 2}
  c: {type: integer}
graph:
  s: {add: [$a, $b]}
  t: {add: [$s, $c]}
"""
    result = run_document(doc, {"c": 10, "a": 5})
    assert outputs(result, "t") == {"sum": 17}


def test_parameter_with_null_default_is_given_as_none() -> None:
    result = run_document(TASKS + "parameters:\n  v: null\ngraph:\n  e: {echo: [$v]}\n")
    assert outputs(result, "e") == {"value": None}


def test_artifact_inputs_are_referenced_like_steps() -> None:
    from shared.document.parameters import bind_parameters
    from shared.execution.local import LocalExecutor
    from shared.plugin_registry import PluginRegistry
    from tests.unit.conftest import FIXTURE_PLUGINS

    doc = TASKS + """
artifact_inputs:
  model: [{weights: any}, {bias: any}]
  data: {rows: any}
graph:
  w: {echo: [$model.weights]}
  d: {echo: [$data]}
"""
    result = check(doc)
    assert result.document is not None, result.issues
    values, _ = bind_parameters(result.document, {})
    with PluginRegistry([FIXTURE_PLUGINS]) as registry:
        outcome = LocalExecutor(result.document, values, registry, artifact_values={"model": {"weights": [1, 2], "bias": 0}, "data": {"rows": 3}}).run()
    assert outputs(outcome, "w") == {"value": [1, 2]}
    assert outputs(outcome, "d") == {"value": 3}


@pytest.mark.parametrize("reference, code", [
    ("$nope", "reference.unresolvable"),
    ("$p", "reference.ambiguous-output"),
    ("$p.third", "reference.unknown-output"),
    ("$n.x", "reference.parameter-output"),
    ("$z", "reference.no-output"),
])
def test_each_reference_error_kind(reference: str, code: str) -> None:
    result = check(TASKS + f"""
parameters: {{n: 1}}
graph:
  p: {{pair: [1, 2]}}
  z: {{nothing: []}}
  user: {{echo: ["{reference}"]}}
""")
    assert code in codes(result)
    issue = next(i for i in result.issues if i.code == code)
    assert issue.path == ("graph", "user", "echo", 0)
