"""``theodolite validate`` on inputs that once crashed the validator: exit 1 and FILE:LINE: problems, never a traceback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from services.cli import main
from tests.unit.conftest import FIXTURE_PLUGINS
from tests.unit.document.test_validator_robustness import bomb, nested

CRASHERS = {
    "float-key": ("graph: {1.5: {echo: [1]}}\n", "must be strings"),
    "null-key": ("graph: {null: {echo: [1]}}\n", "must be strings"),
    "date-key": ("graph: {2001-01-01: {echo: [1]}}\n", "must be strings"),
    "nested-1000": (nested(1_000, "flow-seq"), "more than 100 levels deep"),
    "nested-200000": (nested(200_000, "flow-map"), "more than 100 levels deep"),
    "inside its own anchor": ("graph:\n  s: &s {echo: {value: *s}}\n", "inside its own anchor"),
    "timestamp": ("graph: !!timestamp 2001-01-01{\n", "cannot read"),
    "empty-float": ("{!!float }", "cannot read"),
    "alias-bomb": (bomb(), "aliases stand for more than"),
}
PROBLEM_LINE = re.compile(r"^(?P<file>.+):(?P<line>\d+): \S.*$")


@pytest.mark.parametrize("name", CRASHERS)
def test_validate_reports_a_crasher_as_problems(name: str, tmp_path: Path) -> None:
    text, words = CRASHERS[name]
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    result = CliRunner().invoke(main, ["validate", str(path), "--plugins", str(FIXTURE_PLUGINS)])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.splitlines()
    assert lines and all(PROBLEM_LINE.match(line) and line.startswith(f"{path}:") for line in lines), lines
    assert "Traceback" not in result.output + result.stderr
    assert words in result.stderr


def test_validate_in_a_real_process_neither_crashes_nor_stalls(tmp_path: Path) -> None:
    """A separate interpreter: a C stack overflow would kill it (returncode < 0), a stall time out."""
    script = Path(sys.executable).with_name("theodolite")
    env = dict(os.environ, THEODOLITE_PLUGINS=str(FIXTURE_PLUGINS))
    for name, (text, words) in CRASHERS.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        proc = subprocess.run([str(script), "validate", str(path)], capture_output=True, text=True, env=env, timeout=60, check=False)
        assert proc.returncode == 1, (name, proc.returncode, proc.stderr[-2000:])
        assert "Traceback" not in proc.stdout + proc.stderr
        assert words in proc.stderr, (name, proc.stdout, proc.stderr)
