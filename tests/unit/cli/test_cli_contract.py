"""The CLI contract: exit codes, FILE:LINE: problem lines, the --json object."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from services.cli import main
from tests.unit.conftest import FIXTURE_PLUGINS

TASKS = """tasks:
  add: {plugin: tp_tasks.tp_add, inputs: [{a: number}, {b: number}], outputs: {sum: number}}
  boom: {plugin: tp_tasks.tp_boom, inputs: [{message: string}]}
"""
GOOD = TASKS + "parameters:\n  n: 1\ngraph:\n  one:\n    add: [$n, 2]\n  two:\n    add: {a: $one, b: 10}\n"
BAD = TASKS + "graph:\n  one:\n    add: [1, $missing]\n  two:\n    add: [$one, 1]\n    dependencies: [ghost]\n"
FAILING = TASKS + "graph:\n  zero:\n    boom: [kaput]\n  after:\n    add: [1, 2]\n    dependencies: [zero]\n"


@pytest.fixture
def docs(tmp_path: Path) -> dict[str, Path]:
    files = {}
    for name, text in {"good": GOOD, "bad": BAD, "failing": FAILING}.items():
        files[name] = tmp_path / f"{name}.yaml"
        files[name].write_text(text)
    return files


def cli(*args: str) -> tuple[int, str, str]:
    runner = CliRunner()
    result = runner.invoke(main, [*args, "--plugins", str(FIXTURE_PLUGINS)] if args[0] != "--version" else list(args))
    return result.exit_code, result.stdout, result.stderr


def test_validate_valid_document_exits_0(docs) -> None:
    code, _, err = cli("validate", str(docs["good"]))
    assert (code, err) == (0, "")


def test_validate_reports_every_problem_as_file_line(docs) -> None:
    code, _, err = cli("validate", str(docs["bad"]))
    lines = err.splitlines()
    assert code == 1
    assert len(lines) == 2
    assert lines[0].startswith(f"{docs['bad']}:6: graph.one.add[1]: ")
    assert lines[1].startswith(f"{docs['bad']}:9: graph.two.dependencies[0]: ")


def test_validate_with_unknown_parameter_warns_but_passes(docs) -> None:
    code, _, err = cli("validate", str(docs["good"]), "-p", "zzz=1")
    assert code == 0 and "warning" in err


def test_run_json_succeeds_with_parameters_read_as_yaml(docs) -> None:
    code, out, _ = cli("run", str(docs["good"]), "--json", "-p", "n=3", "--seed", "7")
    payload = json.loads(out)
    assert code == 0
    assert payload == {
        "status": "succeeded",
        "steps": {"one": {"status": "succeeded", "outputs": {"sum": 5}}, "two": {"status": "succeeded", "outputs": {"sum": 15}}},
        "error": None,
        "metrics": {},
        "seed": 7,
    }


def test_parameter_values_are_yaml_scalars(docs) -> None:
    _, out, _ = cli("run", str(docs["good"]), "--local", "--json", "-p", "n=2.5")
    assert json.loads(out)["steps"]["one"]["outputs"]["sum"] == 4.5


def test_run_time_failure_exits_1_with_the_error(docs) -> None:
    code, out, _ = cli("run", str(docs["failing"]), "--json")
    payload = json.loads(out)
    assert code == 1
    assert payload["status"] == "failed"
    assert payload["error"] == {"step": "zero", "type": "RuntimeError", "message": "kaput"}
    assert payload["steps"]["after"] == {"status": "skipped", "outputs": {}}


def test_invalid_document_exits_2_with_problems_on_stderr_and_one_json_object(docs) -> None:
    code, out, err = cli("run", str(docs["bad"]), "--json")
    assert code == 2
    assert err.splitlines()[0].startswith(f"{docs['bad']}:6:")
    payload = json.loads(out)
    assert payload["status"] == "invalid"
    assert payload["problems"][0] == {
        "file": str(docs["bad"]), "line": 6, "path": "graph.one.add[1]", "code": "reference.unresolvable",
        "severity": "error", "message": payload["problems"][0]["message"],
    }
    assert "$missing" in payload["problems"][0]["message"]
    assert [p["line"] for p in payload["problems"]] == [6, 9]


def test_missing_parameter_exits_2_naming_it(tmp_path) -> None:
    doc = tmp_path / "p.yaml"
    doc.write_text(TASKS + "parameters:\n  x: {type: number}\n  y: {type: number}\ngraph:\n  s: {add: [$x, $y]}\n")
    code, _, err = cli("run", str(doc), "--json")
    assert code == 2
    assert f"{doc}:5: parameters.x:" in err and f"{doc}:6: parameters.y:" in err


def test_parameter_of_the_wrong_type_exits_2(tmp_path) -> None:
    doc = tmp_path / "p.yaml"
    doc.write_text(TASKS + "parameters:\n  x: {type: number}\ngraph:\n  s: {add: [$x, 1]}\n")
    code, _, err = cli("run", str(doc), "-p", "x=hello")
    assert code == 2 and "declared type number" in err


def test_missing_file_is_a_located_problem(tmp_path) -> None:
    code, _, err = cli("validate", str(tmp_path / "nope.yaml"))
    assert code == 1 and err.startswith(f"{tmp_path / 'nope.yaml'}:1: ")


def test_yaml_syntax_error_has_its_line(tmp_path) -> None:
    doc = tmp_path / "s.yaml"
    doc.write_text("graph:\n  a: {add: [1, 2]\n  b: 3\n")
    code, _, err = cli("validate", str(doc))
    assert code == 1 and err.startswith(f"{doc}:3: (document): not valid YAML")


@pytest.mark.parametrize("fmt, needle", [("mermaid", "one --> two"), ("dot", '"one" -> "two";')])
def test_graph_formats(docs, fmt: str, needle: str) -> None:
    code, out, _ = cli("graph", str(docs["good"]), "--format", fmt)
    assert code == 0 and needle in out


def test_table_output_without_json(docs) -> None:
    code, out, _ = cli("run", str(docs["good"]))
    assert code == 0 and "succeeded" in out and "sum=3" in out


def test_installed_console_script_runs_outside_the_source_tree(docs, tmp_path) -> None:
    script = Path(sys.executable).with_name("theodolite")
    env = dict(os.environ, THEODOLITE_PLUGINS=str(FIXTURE_PLUGINS))
    proc = subprocess.run([str(script), "run", str(docs["good"]), "--json"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["steps"]["two"]["outputs"]["sum"] == 13


def test_artifact_inputs_and_outputs_through_files(tmp_path) -> None:
    import numpy as np

    from tests.support.artifact_job import write_job

    doc, inputs = write_job(tmp_path)
    code, out, err = cli("run", str(doc), "--json", *inputs, "--artifacts-dir", str(tmp_path / "out"))
    assert code == 0, err
    payload = json.loads(out)
    assert payload["steps"]["total"]["outputs"] == {"total": 30}
    assert payload["steps"]["echoed"]["outputs"] == {"value": [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]}
    saved = np.load(payload["artifacts"]["saved"], allow_pickle=False)
    assert saved.dtype == np.float32 and saved.shape == (2, 3)
    assert json.loads(Path(payload["artifacts"]["summary"]).read_text()) == 30


def test_missing_artifact_input_exits_2(tmp_path) -> None:
    doc = tmp_path / "a.yaml"
    doc.write_text("artifact_inputs:\n  data: {rows: any}\ngraph:\n  e: {echo: [$data]}\n")
    code, _, err = cli("run", str(doc))
    assert code == 2 and "--artifact data=PATH" in err


def test_a_bad_isolation_setting_is_one_line_not_a_traceback(docs, monkeypatch) -> None:
    monkeypatch.setenv("THEODOLITE_ISOLATION", "bogus")
    code, _, err = cli("run", str(docs["good"]))
    assert code == 2, err
    assert "bad configuration: THEODOLITE_ISOLATION must be 'process' or 'thread', got 'bogus'" in err
    assert "Traceback" not in err
