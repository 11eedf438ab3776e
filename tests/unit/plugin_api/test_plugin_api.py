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


def test_retry_options_of_the_decorator() -> None:
    @task(retries=3, retry_on=(KeyError, "TimeoutError"), backoff_s=0.5, max_backoff_s=4)
    def fetch():
        return 1

    @task(retries=1, retry_on=ConnectionError)
    def once():
        return 1

    spec = spec_of(fetch)
    assert spec is not None and spec.retry_on == ("KeyError", "TimeoutError")
    assert spec.retry_policy.model_dump() == {"retries": 3, "backoff_s": 0.5, "max_backoff_s": 4.0, "retry_on": ("KeyError", "TimeoutError")}
    assert spec_of(once).retry_on == ("ConnectionError",)  # type: ignore[union-attr]
    assert spec_of(task(lambda: 1)).retry_policy.backoff_s == 1.0  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="below backoff_s"):
        task(backoff_s=5, max_backoff_s=1)(lambda: 1)


def test_catalog_reads_retry_options_by_name_without_importing(tmp_path) -> None:
    (tmp_path / "retrying.py").write_text(
        "from plugins import task\nimport errors\nraise SystemExit('imported!')\n"
        "@task(retries=2, retry_on=(KeyError, errors.Busy, 'TimeoutError'), backoff_s=0.25, max_backoff_s=2)\n"
        "def r_task():\n    return 1\n"
        "@task(retry_on=ValueError)\ndef r_single():\n    return 1\n"
        "@task(retry_on=(len(),))\ndef r_bad():\n    return 1\n"
    )
    catalog = PluginCatalog(search_dirs=[tmp_path], include_builtin=False)
    (found,) = catalog.lookup_short_name("r_task")
    assert found.spec.retry_policy.model_dump() == {"retries": 2, "backoff_s": 0.25, "max_backoff_s": 2.0,
                                                   "retry_on": ("KeyError", "Busy", "TimeoutError")}
    (single,) = catalog.lookup_short_name("r_single")
    assert single.spec.retry_on == ("ValueError",)
    assert any("r_bad" in problem.message and "literal" in problem.message for problem in catalog.scan_problems())
    assert "retrying" not in sys.modules
    document = check("graph:\n  s: {r_task: []}\n", tmp_path).document
    assert document is not None and document.retry_policy("s").retry_on == ("KeyError", "Busy", "TimeoutError")


def test_the_task_context_parameter_is_found_in_every_spelling(tmp_path) -> None:
    from plugins import TaskContext

    def plain(x, ctx: TaskContext):
        return x

    def optional(ctx: TaskContext | None = None, x: int = 0):
        return x

    assert spec_of(task(plain)).context_arg == "ctx"  # type: ignore[union-attr]
    assert spec_of(task(optional)).context_arg == "ctx"  # type: ignore[union-attr]
    assert spec_of(task(lambda x: x)).context_arg is None  # type: ignore[union-attr]
    (tmp_path / "ctx_tasks.py").write_text(
        "from __future__ import annotations\nimport plugins\nfrom plugins import TaskContext, task\n"
        "@task\ndef a(x: int, ctx: TaskContext):\n    return x\n"
        "@task\ndef b(run: plugins.TaskContext | None = None, *, y: int = 1):\n    return y\n"
        "@task\ndef c(x, context: 'TaskContext'):\n    return x\n"
    )
    catalog = PluginCatalog(search_dirs=[tmp_path], include_builtin=False)
    found = {name: catalog.lookup_short_name(name)[0] for name in "abc"}
    assert {name: t.spec.context_arg for name, t in found.items()} == {"a": "ctx", "b": "run", "c": "context"}
    assert [i.name for i in found["a"].inputs] == ["x"] and [i.name for i in found["b"].inputs] == ["y"]
    sys.path.insert(0, str(tmp_path))
    try:
        import ctx_tasks  # type: ignore[import-not-found]

        for name in "abc":
            assert spec_of(getattr(ctx_tasks, name)).context_arg == found[name].spec.context_arg  # type: ignore[union-attr]
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("ctx_tasks", None)
