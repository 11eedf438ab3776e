"""Every kind of problem is reported with a stable code, its path and its line."""

from __future__ import annotations

import textwrap

import pytest

from tests.unit.conftest import check, codes

TASKS = """\
tasks:
  add: {plugin: tp_tasks.tp_add, inputs: [{a: number}, {name: b, type: number, required: false}], outputs: {sum: number}}
  echo: {plugin: tp_tasks.tp_echo, inputs: [{value: any}], outputs: {value: any}}
"""


def issue_for(text: str, code: str):
    result = check(text)
    assert result.document is None or code.startswith("warning"), result.issues
    matching = [i for i in result.issues if i.code == code]
    assert matching, f"no {code} in {[i.format('doc.yaml') for i in result.issues]}"
    return matching[0]


CASES = [
    # (code, document, expected path, expected line)
    ("document.not-mapping", "- a\n- b\n", (), 1),
    ("document.unknown-key", TASKS + "graph:\n  s: {add: [1]}\nextras: 1\n", ("extras",), 6),
    ("graph.missing", TASKS, (), 1),
    ("graph.empty", TASKS + "graph: {}\n", ("graph",), 4),
    ("structure.not-mapping", TASKS + "graph: [1, 2]\n", ("graph",), 4),
    ("name.dotted", TASKS + "graph:\n  a.b: {add: [1]}\n", ("graph", "a.b"), 5),
    ("name.dotted", TASKS + "parameters:\n  x.y: 1\ngraph:\n  s: {add: [1]}\n", ("parameters", "x.y"), 5),
    ("name.collision", TASKS + "parameters:\n  s: 1\ngraph:\n  s: {add: [1]}\n", ("graph", "s"), 7),
    ("name.duplicate", TASKS + "graph:\n  s: {add: [1]}\n  s: {add: [2]}\n", ("graph", "s"), 6),
    ("step.not-mapping", TASKS + "graph:\n  s: 3\n", ("graph", "s"), 5),
    ("step.task-name", TASKS + "graph:\n  s: {add: [1], echo: [2]}\n", ("graph", "s"), 5),
    ("step.task-name", TASKS + "graph:\n  s: {dependencies: [t]}\n  t: {add: [1]}\n", ("graph", "s"), 5),
    ("step.unknown-key", TASKS + "graph:\n  s: {task: add, args: [1], extra: 2}\n", ("graph", "s", "extra"), 5),
    ("step.kwargs", TASKS + "graph:\n  s: {task: add, kwargs: [1]}\n", ("graph", "s", "kwargs"), 5),
    ("step.dependencies", TASKS + "graph:\n  s: {add: [1], dependencies: {a: 1}}\n", ("graph", "s", "dependencies"), 5),
    ("step.unknown-task", TASKS + "graph:\n  s: {ad: [1]}\n", ("graph", "s", "ad"), 5),
    ("step.too-many-args", TASKS + "graph:\n  s: {add: [1, 2, 3]}\n", ("graph", "s", "add"), 5),
    ("step.unknown-keyword", TASKS + "graph:\n  s:\n    add:\n      a: 1\n      c: 2\n", ("graph", "s", "add", "c"), 8),
    ("step.argument-twice", TASKS + "graph:\n  s: {task: add, args: [1], kwargs: {a: 2}}\n", ("graph", "s", "kwargs", "a"), 5),
    ("step.missing-argument", TASKS + "graph:\n  s: {add: {b: 1}}\n", ("graph", "s"), 5),
    ("step.unknown-dependency", TASKS + "graph:\n  s:\n    add: [1]\n    dependencies: [nope]\n", ("graph", "s", "dependencies", 0), 7),
    ("reference.unresolvable", TASKS + "graph:\n  s:\n    add: [$nope]\n", ("graph", "s", "add", 0), 6),
    ("tasks.plugin-coordinate", "tasks:\n  add: {plugin: nodots}\ngraph:\n  s: {add: []}\n", ("tasks", "add", "plugin"), 2),
    ("tasks.plugin-coordinate", "tasks:\n  add: {plugin: a..b}\ngraph:\n  s: {add: []}\n", ("tasks", "add", "plugin"), 2),
    ("tasks.plugin-missing", "tasks:\n  add: {inputs: []}\ngraph:\n  s: {add: []}\n", ("tasks", "add"), 2),
    ("tasks.plugin-unknown", "tasks:\n  sys: {plugin: os.system}\ngraph:\n  s: {sys: [ls]}\n", ("tasks", "sys", "plugin"), 2),
    ("tasks.plugin-unknown", "tasks:\n  ev: {plugin: builtins.eval}\ngraph:\n  s: {ev: ['1']}\n", ("tasks", "ev", "plugin"), 2),
    ("tasks.plugin-unknown", "tasks:\n  nt: {plugin: tp_tasks.not_a_task}\ngraph:\n  s: {nt: [1]}\n", ("tasks", "nt", "plugin"), 2),
    ("tasks.unknown-key", "tasks:\n  a: {plugin: tp_tasks.tp_add, device: gpu}\ngraph:\n  s: {a: []}\n", ("tasks", "a", "device"), 2),
    ("tasks.input-repeated", "tasks:\n  a:\n    plugin: tp_tasks.tp_add\n    inputs: [{a: number}, {a: number}]\ngraph:\n  s: {a: [1, 2]}\n", ("tasks", "a", "inputs", 1), 4),
    ("tasks.input-type", "tasks:\n  a:\n    plugin: tp_tasks.tp_add\n    inputs: [{a: numbr}]\ngraph:\n  s: {a: [1]}\n", ("tasks", "a", "inputs", 0), 4),
    ("outputs.repeated", "tasks:\n  a:\n    plugin: tp_tasks.tp_pair\n    outputs: [{x: any}, {x: any}]\ngraph:\n  s: {a: []}\n", ("tasks", "a", "outputs", 1), 4),
    ("outputs.type", "tasks:\n  a:\n    plugin: tp_tasks.tp_pair\n    outputs: {x: nosuch}\ngraph:\n  s: {a: []}\n", ("tasks", "a", "outputs"), 4),
    ("tasks.empty", "tasks: {}\ngraph:\n  s: {add: []}\n", ("tasks",), 1),
    ("parameters.type", TASKS + "parameters:\n  p: {type: nosuch}\ngraph:\n  s: {add: [1]}\n", ("parameters", "p", "type"), 5),
    ("parameters.shape", TASKS + "parameters:\n  p: {typ: integer}\ngraph:\n  s: {add: [1]}\n", ("parameters", "p"), 5),
    ("parameters.default-type", TASKS + "parameters:\n  p: {type: integer, default: hello}\ngraph:\n  s: {add: [1]}\n", ("parameters", "p", "default"), 5),
    ("types.builtin", TASKS + "types:\n  integer: null\ngraph:\n  s: {add: [1]}\n", ("types", "integer"), 5),
    ("types.undefined", TASKS + "types:\n  vec: {list: flot}\ngraph:\n  s: {add: [1]}\n", ("types", "vec"), 5),
    ("types.cycle", TASKS + "types:\n  a: {list: b}\n  b: {list: a}\ngraph:\n  s: {add: [1]}\n", ("types", "a"), 5),
    ("types.shape", TASKS + "types:\n  a: {lst: number}\ngraph:\n  s: {add: [1]}\n", ("types", "a", "lst"), 5),
    ("type.argument", TASKS + "graph:\n  s:\n    add: [hello]\n", ("graph", "s", "add", 0), 6),
    ("type.argument", TASKS + "parameters:\n  flag: true\ngraph:\n  s:\n    add:\n      a: $flag\n", ("graph", "s", "add", "a"), 9),
    ("graph.cycle", TASKS + "graph:\n  a: {add: [$c]}\n  b: {add: [$a]}\n  c: {add: [$b]}\n", ("graph", "a"), 5),
    ("document.syntax", "graph:\n  s: {add: [1\n", (), 3),
    ("artifact_outputs.contents", TASKS + "graph:\n  s: {add: [1]}\nartifact_outputs:\n  out: {contents: $nope, task: {name: echo}}\n", ("artifact_outputs", "out", "contents"), 7),
    ("artifact_outputs.task", TASKS + "graph:\n  s: {add: [1]}\nartifact_outputs:\n  out: {contents: $s, task: {name: nosuch}}\n", ("artifact_outputs", "out", "task", "name"), 7),
]


@pytest.mark.parametrize("code, text, path, line", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_problem_has_code_path_and_line(code: str, text: str, path: tuple, line: int) -> None:
    issue = issue_for(text, code)
    assert issue.path == path
    assert issue.line == line
    assert issue.format("doc.yaml").startswith(f"doc.yaml:{line}: ")


def test_cycle_is_reported_as_its_full_path() -> None:
    issue = issue_for(TASKS + "graph:\n  a: {add: [$c]}\n  b: {add: [$a]}\n  c: {add: [$b]}\n", "graph.cycle")
    assert "a -> c -> b -> a" in issue.message


def test_self_dependency_is_a_cycle() -> None:
    issue = issue_for(TASKS + "graph:\n  a: {add: [1], dependencies: [a]}\n", "graph.cycle")
    assert "a -> a" in issue.message


def test_every_problem_is_reported_not_only_the_first() -> None:
    result = check(TASKS + textwrap.dedent("""\
        parameters:
          bad.name: 1
        graph:
          one: {add: [$missing]}
          two: {echo: [1], dependencies: [ghost]}
          three: {nosuchtask: []}
        """))
    assert {"name.dotted", "reference.unresolvable", "step.unknown-dependency", "step.unknown-task"} <= set(codes(result))


def test_cycle_check_is_skipped_when_references_are_broken() -> None:
    result = check(TASKS + "graph:\n  a: {add: [$b]}\n  b: {add: [$a, $nope]}\n")
    assert "reference.unresolvable" in codes(result)
    assert "graph.cycle" not in codes(result)


def test_union_duplicates_are_a_warning_as_in_dioptra() -> None:
    result = check(TASKS + "types:\n  u: {union: [integer, integer, string]}\ngraph:\n  s: {add: [1]}\n")
    assert result.document is not None
    assert codes(result) == ["types.union-duplicate"]


def test_suggestions_name_close_matches() -> None:
    issue = issue_for(TASKS + "graph:\n  first: {add: [1]}\n  s: {add: [$frist]}\n", "reference.unresolvable")
    assert "'first'" in issue.message


def test_a_valid_document_has_no_issues() -> None:
    result = check(TASKS + "parameters:\n  n: 2\ngraph:\n  s: {add: [$n, 1]}\n  t: {echo: {value: $s}}\n")
    assert result.issues == []
    assert list(result.document.steps) == ["s", "t"]
    assert result.document.steps["t"].dependencies == ["s"]
