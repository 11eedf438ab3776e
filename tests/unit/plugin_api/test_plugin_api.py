"""@task, the static catalog, the run-time registry and pyplugs-style call_task."""

from __future__ import annotations

import sys

import pytest

from plugins import call_task, task
from shared.errors import PluginLoadError
from shared.plugin_api import TaskSpec, spec_of
from shared.plugin_catalog import PluginCatalog
from shared.plugin_registry import PluginRegistry, load_task
from tests.unit.conftest import BROKEN_PLUGINS, FIXTURE_PLUGINS, check, codes, run_document


def test_bare_decorator_registers_with_defaults() -> None:
    @task
    def hello(x):
        return x

    spec = spec_of(hello)
    assert isinstance(spec, TaskSpec)
    assert (spec.name, spec.device, spec.retries, spec.timeout_s) == ("hello", "cpu", 0, None)
    assert spec.outputs.names == ()
    assert hello(3) == 3


def test_decorator_options() -> None:
    @task(name="train_it", outputs=["model", "loss"], device="gpu", retries=2, timeout=30)
    def train():
        return 1, 2

    spec = spec_of(train)
    assert spec.name == "train_it" and spec.device == "gpu" and spec.retries == 2 and spec.timeout_s == 30
    assert spec.outputs.names == ("model", "loss") and spec.outputs.unpack


@pytest.mark.parametrize("outputs, names, unpack", [
    ("sum", ("sum",), False),
    ({"sum": "number"}, ("sum",), False),
    (["a", "b"], ("a", "b"), True),
    ([{"a": "integer"}, {"b": "any"}], ("a", "b"), True),
])
def test_every_outputs_spelling(outputs, names, unpack) -> None:
    @task(outputs=outputs)
    def f():
        return None

    assert spec_of(f).outputs.names == names and spec_of(f).outputs.unpack is unpack


def test_undecorated_functions_are_not_tasks() -> None:
    assert spec_of(print) is None


def test_catalog_reads_tasks_without_importing(tmp_path) -> None:
    (tmp_path / "sideeffect.py").write_text(
        "from plugins import task\nraise SystemExit('imported!')\n"
        "@task(outputs='v', device='gpu')\ndef se_task(a: int, b=2, *, c: str):\n    return a\n"
    )
    catalog = PluginCatalog(search_dirs=[tmp_path], include_builtin=False)
    (found,) = catalog.lookup_short_name("se_task")
    assert found.spec.device == "gpu" and found.spec.coordinate == "sideeffect.se_task"
    assert [(i.name, i.type, i.required) for i in found.inputs] == [("a", "integer", True), ("b", "any", False), ("c", "string", True)]
    assert "sideeffect" not in sys.modules


def test_documents_may_omit_tasks_and_use_short_names() -> None:
    result = run_document("graph:\n  s: {tp_add: [1, 2]}\n  d: {tp_double: [$s]}\n")
    assert result.steps["d"].outputs == {"value": 6}


def test_short_name_unknown_is_reported_with_a_suggestion() -> None:
    result = check("graph:\n  s: {tp_addd: [1, 2]}\n")
    assert codes(result) == ["step.unknown-task"]
    assert "tp_add" in result.issues[0].message


def test_ambiguous_short_names_are_refused(tmp_path) -> None:
    for name in ("one", "two"):
        (tmp_path / f"{name}.py").write_text("from plugins import task\n@task\ndef same_name():\n    pass\n")
    result = check("graph:\n  s: {same_name: []}\n", tmp_path)
    assert codes(result) == ["step.ambiguous-task"]
    assert "one.same_name" in result.issues[0].message and "two.same_name" in result.issues[0].message


def test_user_plugins_shadow_builtin_short_names(tmp_path) -> None:
    (tmp_path / "mine.py").write_text("from plugins import task\n@task(outputs='sum')\ndef add(a, b):\n    return a * 100 + b\n")
    result = run_document("graph:\n  s: {add: [1, 2]}\n", dirs=(tmp_path,))
    assert result.steps["s"].outputs == {"sum": 102}


def test_builtin_tasks_resolve_by_short_name() -> None:
    result = run_document("graph:\n  s: {square: [4]}\n  t: {multiply: [$s, 2]}\n")
    assert result.steps["t"].outputs == {"product": 32}


def test_dioptra_style_package_coordinates() -> None:
    result = run_document("""
tasks:
  double: {plugin: pkg.mod.tp_double, inputs: [{x: number}], outputs: {value: number}}
graph:
  s: {double: [21]}
""")
    assert result.steps["s"].outputs == {"value": 42}


@pytest.mark.parametrize("coordinate", ["os.system", "builtins.eval", "subprocess.run", "tp_tasks.not_a_task"])
def test_unregistered_functions_are_refused_by_the_registry(coordinate: str) -> None:
    with PluginRegistry([FIXTURE_PLUGINS]), pytest.raises(PluginLoadError, match="not a registered plugin task"):
        load_task(coordinate)


def test_failing_plugin_import_names_the_module_and_the_original_error() -> None:
    with PluginRegistry([BROKEN_PLUGINS]), pytest.raises(PluginLoadError) as caught:
        load_task("bp_broken.bp_task")
    assert caught.value.target == "bp_broken"
    assert "ModuleNotFoundError" in str(caught.value) and "module_that_does_not_exist" in str(caught.value)


def test_import_failure_fails_only_the_steps_that_need_it() -> None:
    result = run_document(
        "graph:\n  bad: {bp_task: [1]}\n", dirs=(BROKEN_PLUGINS,),
    )
    assert result.status == "failed"
    assert result.error.step == "bad" and result.error.type == "PluginLoadError"
    assert "bp_broken" in result.error.message


def test_unparseable_plugin_module_is_reported_by_name(tmp_path) -> None:
    result = check("graph:\n  s: {bp_bad: [1]}\n", BROKEN_PLUGINS)
    assert codes(result) == ["step.unknown-task"]
    assert "bp_syntax" in result.issues[0].message and "does not parse" in result.issues[0].message


def test_call_task_is_pyplugs_compatible() -> None:
    with PluginRegistry([FIXTURE_PLUGINS]):
        assert call_task("pkg", "mod", "tp_double", x=4) == 8
        assert call_task("", "tp_tasks", "tp_add", 1, b=2) == 3
        with pytest.raises(PluginLoadError):
            call_task("", "os", "system", "true")


def test_plugin_dirs_from_environment(monkeypatch, tmp_path) -> None:
    from shared.document import catalog_for

    (tmp_path / "envplug.py").write_text("from plugins import task\n@task(outputs='v')\ndef from_env():\n    return 1\n")
    monkeypatch.setenv("THEODOLITE_PLUGINS", str(tmp_path))
    catalog = catalog_for(None)
    assert [t.spec.coordinate for t in catalog.lookup_short_name("from_env")] == ["envplug.from_env"]
