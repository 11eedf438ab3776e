"""Plugin coordinates: Dioptra's verdict in ``validate``, refusals where the job must run.

A module that is not on this machine's plugin path is a warning in ``validate`` (workers
elsewhere may hold it), an error with ``--strict``, a refusal (exit 2) in ``run`` and a
failed step on a runner that cannot load it. A module that is found, or is part of Python,
whose function is not a ``@task`` is an error everywhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from services.cli import main
from shared.errors import PluginLoadError
from shared.plugin_registry import PluginRegistry
from tests.unit.conftest import FIXTURE_PLUGINS, check, codes, run_document

ELSEWHERE = """tasks:
  add: {plugin: lab_plugins.arith.add, inputs: [{a: number}, {b: number}], outputs: {sum: number}}
graph:
  one: {add: [1, 2]}
  two: {add: [$one, 3]}
"""
NOT_TASKS = {
    "os.system": "tasks:\n  shell: {plugin: os.system, inputs: [{cmd: string}]}\ngraph:\n  pwn: {shell: [ls]}\n",
    "builtins.eval": "tasks:\n  ev: {plugin: builtins.eval, inputs: [{x: string}]}\ngraph:\n  pwn: {ev: ['1']}\n",
    "numpy.add": "tasks:\n  np: {plugin: numpy.add}\ngraph:\n  pwn: {np: []}\n",
    "undecorated": "tasks:\n  nt: {plugin: tp_tasks.not_a_task}\ngraph:\n  pwn: {nt: [1]}\n",
}


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [*args, "--plugins", str(FIXTURE_PLUGINS)])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    doc = tmp_path / "elsewhere.yaml"
    doc.write_text(ELSEWHERE)
    return doc


def test_module_not_on_this_plugin_path_is_a_located_warning(elsewhere: Path) -> None:
    code, _, err = cli("validate", str(elsewhere))
    assert code == 0
    assert err.splitlines() == [err.splitlines()[0]]
    assert err.startswith(f"{elsewhere}:2: tasks.add.plugin: warning: no plugin module 'lab_plugins.arith'")
    assert str(FIXTURE_PLUGINS) in err  # the path that was searched


def test_strict_makes_every_warning_an_error(elsewhere: Path) -> None:
    code, _, err = cli("validate", "--strict", str(elsewhere))
    assert code == 1 and f"{elsewhere}:2: tasks.add.plugin: no plugin module" in err
    assert "warning:" not in err


def test_strict_also_raises_other_warnings(elsewhere: Path) -> None:
    good = elsewhere.with_name("good.yaml")
    good.write_text("graph:\n  s: {echo: [1]}\n")
    assert cli("validate", str(good), "-p", "zzz=1")[0] == 0
    assert cli("validate", "--strict", str(good), "-p", "zzz=1")[0] == 1


def test_run_refuses_before_anything_runs(elsewhere: Path) -> None:
    code, out, err = cli("run", str(elsewhere), "--json")
    assert code == 2
    assert f"{elsewhere}:2: tasks.add.plugin: no plugin module 'lab_plugins.arith'" in err and "--plugins" in err
    payload = json.loads(out)
    assert payload["status"] == "invalid"
    assert [(p["code"], p["severity"], p["line"]) for p in payload["problems"]] == [("tasks.plugin-not-found", "error", 2)]


@pytest.mark.parametrize("label", sorted(NOT_TASKS))
def test_a_function_that_is_not_a_registered_task_is_an_error_everywhere(label: str, tmp_path: Path) -> None:
    doc = tmp_path / "bad.yaml"
    doc.write_text(NOT_TASKS[label])
    for command in (["validate"], ["validate", "--strict"]):
        code, _, err = cli(*command, str(doc))
        assert code == 1 and "is not a registered plugin task" in err, (command, err)
    code, _, err = cli("run", str(doc))
    assert code == 2 and "is not a registered plugin task" in err


@pytest.mark.parametrize("label", sorted(NOT_TASKS))
def test_no_follow_on_error_for_steps_calling_an_unresolved_task(label: str) -> None:
    result = check(NOT_TASKS[label])
    assert codes(result) == ["tasks.plugin-unknown"], [i.format("doc.yaml") for i in result.issues]


def test_no_follow_on_error_for_a_task_whose_definition_is_broken() -> None:
    result = check("tasks:\n  a:\n    plugin: tp_tasks.tp_add\n    inputs: [{a: numbr}]\ngraph:\n  s: {a: [1]}\n")
    assert codes(result) == ["tasks.input-type"]


def test_steps_of_a_task_from_elsewhere_are_still_checked_against_its_declaration() -> None:
    result = check(ELSEWHERE + "  three: {add: [1, 2, 3]}\n")
    assert sorted(codes(result)) == ["step.too-many-args", "tasks.plugin-not-found"]


def test_a_runner_that_cannot_find_the_module_fails_the_step_naming_the_path() -> None:
    with PluginRegistry([FIXTURE_PLUGINS]) as registry, pytest.raises(PluginLoadError) as caught:
        registry.load("lab_plugins.arith.add")
    assert "no plugin module 'lab_plugins.arith'" in str(caught.value) and str(FIXTURE_PLUGINS) in str(caught.value)


def test_the_registry_refuses_an_undecorated_function_without_importing_its_module(tmp_path: Path) -> None:
    marker = tmp_path / "imported"
    (tmp_path / "side_effects.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('yes')\n\ndef run():\n    return 1\n")
    with PluginRegistry([tmp_path]) as registry, pytest.raises(PluginLoadError, match="not a registered plugin task"):
        registry.load("side_effects.run")
    assert not marker.exists()


def test_builtin_plugins_resolve_by_coordinate_from_any_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    text = "tasks:\n  add: {plugin: plugins.basic.tasks.add, inputs: [a, b], outputs: sum}\ngraph:\n  s: {add: [1, 2]}\n"
    doc = tmp_path / "builtin.yaml"
    doc.write_text(text.replace("inputs: [a, b], outputs: sum", "inputs: [{a: number}, {b: number}], outputs: {sum: number}"))
    code, out, err = cli("run", str(doc), "--json")
    assert code == 0, err
    assert json.loads(out)["steps"]["s"]["outputs"] == {"sum": 3}


def test_embedded_run_of_a_module_found_nowhere_fails_the_step() -> None:
    """Below the CLI (which refuses first), the runner itself fails the step with the path."""
    from shared.document import check_text
    from shared.document.parameters import bind_parameters
    from shared.document.types import TypeRegistry
    from shared.execution.local import LocalExecutor
    from shared.plugin_catalog import PluginCatalog

    result = check_text(ELSEWHERE, "doc.yaml", PluginCatalog(search_dirs=[FIXTURE_PLUGINS]))
    assert result.document is not None
    values, _ = bind_parameters(result.document, {}, TypeRegistry(result.document.types))
    with PluginRegistry([FIXTURE_PLUGINS]) as registry:
        outcome = LocalExecutor(result.document, values, registry).run()
    assert outcome.status == "failed" and outcome.error is not None
    assert outcome.error.type == "PluginLoadError" and "plugin path" in outcome.error.message
    assert run_document("graph:\n  s: {tp_add: [1, 2]}\n").status == "succeeded"
